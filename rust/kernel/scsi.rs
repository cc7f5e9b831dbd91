// SPDX-License-Identifier: GPL-2.0

//! SCSI midlayer: host adapters (low-level drivers).
//!
//! A low-level driver implements [`HostOps`], the `struct scsi_host_template` callbacks, and
//! allocates a [`Host`] per adapter with [`Host::alloc`]. The midlayer hands each command to
//! [`HostOps::queuecommand`] as an [`OwnedCommand`]: the driver owns it until it calls
//! [`OwnedCommand::done`] (`scsi_done()`). Error handling callbacks get a borrowed [`Command`].
//!
//! # Rules enforced by the types
//!
//! - **The driver's per-command data is reached only through an owned command**
//!   ([`OwnedCommand::priv_mut`]). While a command sits in the device, no [`OwnedCommand`] exists
//!   (it became the device's token), so nothing reads the response the device is writing; a
//!   borrowed [`Command`] (error handling) has no accessor for that data.
//! - **Error handling cannot give back a command the driver still holds.** The abstraction
//!   records when `queuecommand` hands a command over and when the driver gives it back
//!   (completion or "host busy"); an abort or reset handler that answers
//!   [`EhResult::Success`] for a command the driver still holds is answered `FAILED` to the
//!   midlayer, which then escalates, instead of reusing a command whose late completion would
//!   complete it twice.
//!
//! # Examples
//!
//! A host adapter whose logical units have no medium: every command completes at once, with
//! the sense data that says so.
//!
//! ```
//! use kernel::{
//!     scsi::{Command, EhResult, HostByte, HostOps, OwnedCommand},
//!     sync::ArcBorrow,
//! };
//!
//! /// Fixed-format sense data: NOT READY, MEDIUM NOT PRESENT.
//! const NO_MEDIUM: [u8; 18] = [
//!     0x70, 0, 0x02, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x3a, 0, 0, 0, 0, 0,
//! ];
//! /// The CHECK CONDITION status.
//! const CHECK_CONDITION: u8 = 0x02;
//!
//! struct NoMedium;
//!
//! #[vtable]
//! impl HostOps for NoMedium {
//!     type HostData = ();
//!     type CmdPriv = ();
//!     const NAME: &'static CStr = c"no medium";
//!     const PROC_NAME: &'static CStr = c"no_medium";
//!
//!     fn queuecommand(
//!         _: ArcBorrow<'_, ()>,
//!         mut cmd: OwnedCommand<()>,
//!     ) -> Result<(), OwnedCommand<()>> {
//!         cmd.set_result(CHECK_CONDITION, HostByte::Ok);
//!         cmd.set_sense(&NO_MEDIUM);
//!         cmd.set_resid(cmd.bufflen());
//!         // Gives the command back to the midlayer.
//!         cmd.done();
//!         Ok(())
//!     }
//!
//!     fn eh_abort_handler(_: ArcBorrow<'_, ()>, _cmd: &Command<()>) -> EhResult {
//!         // The driver never keeps a command.
//!         EhResult::Success
//!     }
//! }
//! ```
//!
//! C headers: [`include/scsi/scsi_host.h`](srctree/include/scsi/scsi_host.h),
//! [`include/scsi/scsi_cmnd.h`](srctree/include/scsi/scsi_cmnd.h) and
//! [`include/scsi/scsi_device.h`](srctree/include/scsi/scsi_device.h).

mod cmnd;
mod device;
mod host;

pub use cmnd::{
    Command,
    CommandBuffers,
    HostByte,
    OwnedCommand,
    SENSE_BUFFERSIZE, //
};
pub use device::{
    Completed,
    Device, //
};
pub use host::{
    EhResult,
    Host,
    HostOps,
    HostRef,
    Limits,
    QueueKind,
    QueueMap,
    QueueMaps,
    Target,
    TimeoutAction,
    EH_GIVE_BACK_MS, //
};
