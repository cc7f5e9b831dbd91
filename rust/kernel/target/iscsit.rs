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
