// SPDX-License-Identifier: GPL-2.0

//! The iSCSI target's spinlocks, which it takes with bottom halves disabled.
//!
//! # Examples
//!
//! The abstraction's methods take these locks themselves: [`Cmd::rdma_read_done`] the
//! command's state lock, [`Cmd::release`] the connection's command list lock. Taken with bottom
//! halves disabled but interrupts on, they are not for hard interrupt context (and
//! [`Cmd::release`] may sleep): a transport whose completion queue notifies it in an interrupt
//! ([`CqHandler::notify`]) hands its completed commands on from a work item.
//!
//! ```
//! use kernel::target::iscsit::Cmd;
//!
//! /// Called by the connection's completion work, in process context, when the RDMA READ of
//! /// a WRITE's data completed.
//! fn rdma_read_completed(cmd: Cmd, ok: bool) {
//!     if ok {
//!         // The target executes the command.
//!         cmd.rdma_read_done();
//!     } else {
//!         // No receive buffer is lent to a command whose data comes by RDMA.
//!         drop(cmd.release(true));
//!     }
//! }
//! ```
//!
//! [`Cmd::rdma_read_done`]: super::Cmd::rdma_read_done
//! [`Cmd::release`]: super::Cmd::release
//! [`CqHandler::notify`]: crate::rdma::verbs::CqHandler::notify

use crate::bindings;

/// One of the iSCSI target's spinlocks, held (`spin_lock_bh()`); released on drop.
///
/// # Invariants
///
/// `0` is a valid spinlock, held by this guard.
pub(super) struct BhGuard(*mut bindings::spinlock_t);

impl BhGuard {
    /// Takes `lock`.
    ///
    /// # Safety
    ///
    /// `lock` is a valid, initialized spinlock that stays valid while the guard lives, and is
    /// not held by the caller's context.
    pub(super) unsafe fn lock(lock: *mut bindings::spinlock_t) -> Self {
        // SAFETY: By the safety requirements.
        unsafe { bindings::spin_lock_bh(lock) };
        // INVARIANT: Taken above.
        Self(lock)
    }
}

impl Drop for BhGuard {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the lock is valid and held by this guard.
        unsafe { bindings::spin_unlock_bh(self.0) };
    }
}
