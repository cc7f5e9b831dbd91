// SPDX-License-Identifier: GPL-2.0

//! iSCSI target transports (`struct iscsit_transport`).
//!
//! The LIO iSCSI target carries iSCSI over TCP itself and over other networks through
//! transports that register with it. A network portal (`struct iscsi_np`) with a transport's
//! network type enabled (for iSER: writing 1 to `.../np/<address>/iser` in configfs) calls the
//! transport's [`Transport::setup_np`], then has a login thread call
//! [`Transport::accept_np`] for each connection, and [`Transport::free_np`] when it is removed.
//!
//! A connection the transport hands to the target in [`Transport::accept_np`] goes through the
//! login phase ([`Transport::get_login_rx`], [`Transport::put_login_tx`]) and then the
//! full-feature phase, in which the transport gives the target the PDUs it receives ([`Conn`]'s
//! `handle_*` methods) and sends what the target queues ([`Transport::response_queue`],
//! [`Transport::immediate_queue`]). SCSI data moves with RDMA read/write contexts
//! ([`Cmd::rdma_setup`]): an RDMA transport is the only kind this module serves.
//!
//! # Examples
//!
//! The receive path of an iSER transport: a message is an iSER header ([`IserCtrl`]), an iSCSI
//! basic header segment ([`Bhs`]) and its data segment; a SCSI command goes to the target
//! through the connection's [`ConnSlot`].
//!
//! ```
//! use kernel::target::iscsit::{Bhs, ConnSlot, IserCtrl, HDR_LEN};
//! use kernel::transmute::{AsBytes, FromBytes};
//!
//! /// Splits a received message into its headers and its data segment.
//! fn split(msg: &[u8]) -> Option<(IserCtrl, Bhs, &[u8])> {
//!     let (iser, rest) = IserCtrl::from_bytes_copy_prefix(msg)?;
//!     let (bhs, data) = Bhs::from_bytes_copy_prefix(rest)?;
//!     Some((iser, bhs, data.get(..bhs.dlength())?))
//! }
//!
//! /// Hands a received SCSI command to the target; `EAGAIN` while all command tags are in use.
//! fn scsi_cmd(slot: &ConnSlot, msg: &[u8]) -> Result {
//!     let (iser, bhs, imm) = split(msg).ok_or(EINVAL)?;
//!     slot.with(|conn| {
//!         let cmd = conn.alloc_cmd().ok_or(EAGAIN)?;
//!         conn.handle_scsi_cmd(cmd, &bhs, imm, iser.remote())
//!     })
//!     .unwrap_or(Err(ENOTCONN))
//! }
//!
//! // A SCSI READ (opcode 1, Final and Read flags) into the initiator's buffer 0x1000, key 0x77.
//! let mut iser = IserCtrl::with_flags(IserCtrl::ISCSI_CTRL | IserCtrl::RSV);
//! iser.set_read(0x77, 0x1000);
//! let mut bhs = [0u8; HDR_LEN];
//! bhs[..2].copy_from_slice(&[0x01, 0xc0]);
//! let mut msg = KVec::new();
//! msg.extend_from_slice(iser.as_bytes(), GFP_KERNEL)?;
//! msg.extend_from_slice(&bhs, GFP_KERNEL)?;
//!
//! let (iser, bhs, data) = split(&msg).ok_or(EINVAL)?;
//! assert_eq!(bhs.opcode(), 0x01);
//! assert!(data.is_empty());
//! assert_eq!(iser.read(), Some((0x77, 0x1000)));
//! assert_eq!(iser.remote().write_stag, 0);
//! // Cut short, or with a data segment that did not arrive.
//! assert!(split(&msg[..IserCtrl::LEN + 40]).is_none());
//! msg[IserCtrl::LEN + 7] = 4;
//! assert!(split(&msg).is_none());
//! # Ok::<(), Error>(())
//! ```
//!
//! C header: [`iscsi_transport.h`](srctree/include/target/iscsi/iscsi_transport.h)

use crate::bindings;

mod bh;
mod clist;
mod cmd;
mod conn;
mod lend;
mod login;
mod np;
mod registration;
mod transport;
mod wire;

pub use cmd::{
    Cmd,
    QueueResult,
    Refused,
    Remote,
    State, //
};
pub use conn::{
    Closing,
    Conn,
    ConnSlot,
    RejectReason, //
};
pub use lend::{
    Lender,
    RxBuf, //
};
pub use login::Login;
pub use np::Np;
pub use registration::Registration;
pub use transport::{
    Accepted,
    Transport, //
};
pub use wire::{
    Bhs,
    IserCtrl, //
};

/// Length of an iSCSI basic header segment (`ISCSI_HDR_LEN`).
pub const HDR_LEN: usize = bindings::ISCSI_HDR_LEN as usize;

/// The network a transport carries iSCSI over (`enum iscsit_transport_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum NetworkType {
    /// iSER over an RDMA network (`ISCSI_INFINIBAND`, the `iser` portal attribute).
    Infiniband = bindings::iscsit_transport_type_ISCSI_INFINIBAND as i32,
}
