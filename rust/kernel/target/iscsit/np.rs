// SPDX-License-Identifier: GPL-2.0

//! Network portals.

use crate::{
    bindings,
    net::sockaddr::SockAddr,
    types::Opaque, //
};

use super::bh::BhGuard;

/// A network portal of the iSCSI target (`struct iscsi_np`), as its transport sees it.
///
/// # Examples
///
/// [`Transport::accept_np`] waits on the portal's login thread for the transport's next
/// connection, and gives up when the target stops the thread:
///
/// ```
/// use kernel::{
///     sync::{CondVar, Mutex},
///     target::iscsit::Np,
/// };
///
/// /// Takes the oldest connection of `pending`, where the transport queues those it accepts
/// /// from the network (then notifying `wait`).
/// fn next_conn<C>(np: &Np, pending: &Mutex<KVec<C>>, wait: &CondVar) -> Result<C> {
///     let mut pending = pending.lock();
///     loop {
///         if np.thread_stopping() {
///             return Err(ENODEV);
///         }
///         if let Ok(conn) = pending.remove(0) {
///             return Ok(conn);
///         }
///         // The target signals the login thread when it resets or removes the portal.
///         if wait.wait_interruptible(&mut pending) {
///             pr_info!("{}: login thread signalled\n", np.addr());
///             return Err(ENODEV);
///         }
///     }
/// }
/// ```
///
/// # Invariants
///
/// The target keeps the portal alive while a transport callback that was given it runs.
///
/// [`Transport::accept_np`]: super::Transport::accept_np
#[repr(transparent)]
pub struct Np(Opaque<bindings::iscsi_np>);

impl Np {
    /// # Safety
    ///
    /// `np` is a valid portal for `'a`.
    pub(super) unsafe fn from_raw<'a>(np: *mut bindings::iscsi_np) -> &'a Self {
        // SAFETY: `Np` is a transparent wrapper of `iscsi_np`, valid for `'a` by the safety
        // requirements.
        unsafe { &*np.cast::<Self>() }
    }

    /// The portal's address (`np_sockaddr`).
    pub fn addr(&self) -> SockAddr {
        // SAFETY: By the type invariant the portal is valid; the address is set when the portal
        // is created and not changed while it exists.
        SockAddr::from_raw(unsafe { &(*self.0.get()).np_sockaddr })
    }

    /// Whether the portal's login thread is being reset or stopped (its state is
    /// `ISCSI_NP_THREAD_RESET` or later), in which case [`Transport::accept_np`] should return.
    ///
    /// [`Transport::accept_np`]: super::Transport::accept_np
    pub fn thread_stopping(&self) -> bool {
        let np = self.0.get();
        // SAFETY: By the type invariant the portal, and its lock, are valid.
        let _guard = unsafe { BhGuard::lock(&raw mut (*np).np_thread_lock) };
        // SAFETY: As above; the state is read under its lock, as the C transports do.
        let state = unsafe { (*np).np_thread_state };
        state >= bindings::np_thread_state_table_ISCSI_NP_THREAD_RESET
    }
}
