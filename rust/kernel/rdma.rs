// SPDX-License-Identifier: GPL-2.0

//! RDMA: the InfiniBand/RoCE/iWARP core and its connection manager.
//!
//! Built only when the RDMA core and `rdma_cm` are part of the kernel image
//! (`CONFIG_INFINIBAND=y`, `CONFIG_INFINIBAND_ADDR_TRANS=y`), since the kernel crate links
//! directly against them.
//!
//! # Examples
//!
//! A driver starts by listening on an address with the connection manager
//! ([`cm::ListenId`]); this listener rejects every connection request:
//!
//! ```
//! use kernel::{
//!     net::sockaddr::SockAddr,
//!     rdma::cm::{ConnEvents, ConnectRequest, Handled, ListenId, Listener, Lost},
//! };
//!
//! /// The events of accepted connections (none here).
//! struct Events;
//!
//! impl ConnEvents for Events {
//!     fn established(&self) {}
//!     fn disconnected(&self) {}
//!     fn connect_error(&self) {}
//!     fn device_removal(&self) {}
//! }
//!
//! struct Closed;
//!
//! impl Listener for Closed {
//!     type Conn = Events;
//!
//!     fn connect_request(&self, req: ConnectRequest<'_, Events>) -> Handled {
//!         pr_info!("{}: connection refused\n", req.peer());
//!         req.reject()
//!     }
//!
//!     fn lost(&self, why: Lost) {
//!         pr_warn!("no longer listening: {:?}\n", why);
//!     }
//! }
//!
//! /// Listens on `addr` until the result is dropped.
//! fn listen(module: &'static ThisModule, addr: &SockAddr) -> Result<ListenId<Closed>> {
//!     ListenId::listen(module, c"closed", addr, Closed)
//! }
//! ```
//!
//! C headers: [`include/rdma/ib_verbs.h`](srctree/include/rdma/ib_verbs.h),
//! [`include/rdma/rdma_cm.h`](srctree/include/rdma/rdma_cm.h)

pub mod cm;
pub mod rw;
mod sq;
pub mod verbs;
