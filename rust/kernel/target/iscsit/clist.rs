// SPDX-License-Identifier: GPL-2.0

//! Walking the target's C lists (`struct list_head`) under the lock that protects them.
//!
//! # Examples
//!
//! [`Closing::wait_for_cmds`] walks the lists of a connection being closed with [`Nodes`], to
//! free the commands the target left queued for its stopped threads while it waits for the
//! running ones. The abstraction calls it after [`Transport::wait_conn`]; a transport may call
//! it itself, once its own sends and transfers are done:
//!
//! ```
//! use kernel::target::iscsit::Closing;
//!
//! /// The end of a transport's `wait_conn`, after it drained its queue pair.
//! fn wait_conn_end(conn: &Closing, logout_sent: bool) {
//!     conn.wait_for_cmds();
//!     if logout_sent {
//!         // The target completes the logout from its own threads.
//!         conn.wait_for_logout();
//!     }
//! }
//! ```
//!
//! [`Closing::wait_for_cmds`]: super::Closing::wait_for_cmds
//! [`Transport::wait_conn`]: super::Transport::wait_conn

use crate::bindings;

/// The nodes of a C list, first to last.
///
/// The successor of a node is read before the node is returned, so the caller may take the
/// node it was just given off the list (as `list_for_each_safe()` allows).
///
/// # Invariants
///
/// `head` is a valid list head and `next` is `head` or a node on its list; the list changes
/// only by the removal of nodes already returned while the iterator is in use.
pub(super) struct Nodes {
    head: *mut bindings::list_head,
    next: *mut bindings::list_head,
}

impl Nodes {
    /// Starts at the first node of the list `head`.
    ///
    /// # Safety
    ///
    /// `head` is a valid list head, and until the iterator is dropped the list changes only by
    /// the removal of nodes the iterator has returned (its lock is held meanwhile).
    pub(super) unsafe fn new(head: *mut bindings::list_head) -> Self {
        // INVARIANT: By the safety requirements `head` is a valid list head; its `next` is its
        // first node, or itself when the list is empty.
        Self {
            head,
            // SAFETY: By the safety requirements `head` is valid.
            next: unsafe { (*head).next },
        }
    }
}

impl Iterator for Nodes {
    type Item = *mut bindings::list_head;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == self.head {
            return None;
        }
        let node = self.next;
        // INVARIANT: `node` is on the list (no node not yet returned has left it), so its
        // successor is the head or a node on the list.
        // SAFETY: By the type invariant `node` is a valid node of the list.
        self.next = unsafe { (*node).next };
        Some(node)
    }
}
