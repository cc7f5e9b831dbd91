// SPDX-License-Identifier: GPL-2.0

//! The iSCSI target's spinlocks, which it takes with bottom halves disabled.

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
