// SPDX-License-Identifier: GPL-2.0

//! SCSI midlayer: host adapters (low-level drivers).
//!
//! A low-level driver implements [`HostOps`], the `struct scsi_host_template` callbacks, and
//! allocates a [`Host`] per adapter with [`Host::alloc`]. The midlayer hands each command to
//! [`HostOps::queuecommand`] as an [`OwnedCommand`]: the driver owns it until it calls
//! [`OwnedCommand::done`] (`scsi_done()`). Error handling callbacks get a borrowed [`Command`].
//!
//! C headers: [`include/scsi/scsi_host.h`](srctree/include/scsi/scsi_host.h),
//! [`include/scsi/scsi_cmnd.h`](srctree/include/scsi/scsi_cmnd.h) and
//! [`include/scsi/scsi_device.h`](srctree/include/scsi/scsi_device.h).

mod cmnd;
mod host;

pub use cmnd::{
    Command,
    CommandBuffers,
    DataDirection,
    HostByte,
    OwnedCommand,
    SENSE_BUFFERSIZE, //
};
pub use host::{
    EhResult,
    Host,
    HostOps,
    HostRef,
    Limits,
    QueueMap,
    Target,
    TimeoutAction, //
};
