// SPDX-License-Identifier: GPL-2.0

//! The record a queue pair keeps of its send queue: free slots, and every posted request that
//! has not completed yet, in posting order.
//!
//! A reliable-connected queue pair completes its send requests in the order they were posted,
//! and a request may be posted unsignaled: it then raises no completion when it succeeds. Its
//! context must still be freed, and only once the device is done with it; that is known when a
//! later request completes. So the posted contexts are owned by this record, not by the work
//! requests: each post gets a sequence number, which is all its `wr_id` carries, and a
//! completion with number `s` hands back every request numbered `s` or lower
//! ([`SendQueue::pop_through`]).
//!
//! The record also keeps the send queue from filling with unsignaled requests only, which
//! would leave nothing to complete them: a post that leaves fewer than a quarter of the slots
//! free is signaled whatever its caller asked ([`SendQueue::take`]).
//!
//! # Examples
//!
//! The record at work through [`Qp`] and [`Cq`]: unsignaled sends, then the signaled request
//! whose completion hands all their contexts back, oldest first.
//!
//! ```
//! use kernel::rdma::verbs::{Completion, Cq, CqHandler, Qp, SendCtx, SendDone, SendWr};
//!
//! /// Posts each message of `msgs` (its context and length) unsignaled, then a request that
//! /// is signaled.
//! fn send_all<S: SendCtx>(qp: &Qp<S>, msgs: KVec<(KBox<S>, usize)>) -> Result {
//!     for (ctx, len) in msgs {
//!         let wr = SendWr {
//!             len,
//!             invalidate: None,
//!             signaled: false,
//!         };
//!         // `ENOMEM` once the send queue is full.
//!         qp.post_send(ctx, wr)?;
//!     }
//!     qp.signal_posted()?;
//!     Ok(())
//! }
//!
//! /// Takes back the contexts of the sends that completed.
//! fn reap<H: CqHandler>(cq: &Cq<H>, mut sent: impl FnMut(KBox<H::SendCtx>)) -> usize {
//!     cq.poll(16, |c| {
//!         if let Completion::Send(batch) = c {
//!             for done in batch {
//!                 if let SendDone::Sent { ctx, .. } = done {
//!                     sent(ctx);
//!                 }
//!             }
//!         }
//!     })
//! }
//! ```
//!
//! [`Qp`]: super::verbs::Qp
//! [`Cq`]: super::verbs::Cq

use crate::prelude::*;
use core::ffi::c_void;

/// What a posted request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Posted {
    /// A send context, leaked from its `KBox` by the post.
    Ctx(*mut c_void),
    /// As `Ctx`, but the device took only part of the chain: the context comes back with an
    /// error once the part it took is known to be done.
    Partial(*mut c_void),
    /// The drain marker.
    Drain,
    /// A request posted only to be signaled, carrying nothing.
    Signal,
}

/// A posted request that has not completed yet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) slots: u32,
    pub(crate) what: Posted,
}

/// A send queue's free slots and its posted requests.
///
/// # Invariants
///
/// - `free` plus the slots of the entries in `ring`, plus one while the drain marker is not
///   posted, is the send queue's size (`ring.len()`); every entry has at least one slot. So
///   the ring never holds more entries than it has room for.
/// - The entries are `ring[head..]` then `ring[..]`, `len` of them in all, in posting order,
///   numbered `next_seq - len` to `next_seq - 1`.
/// - `tail_unsignaled` is whether the last request posted was unsignaled.
pub(crate) struct SendQueue {
    ring: KVec<Entry>,
    head: usize,
    len: usize,
    free: u32,
    next_seq: u64,
    drain_posted: bool,
    tail_unsignaled: bool,
}

/// Sequence numbers start here, so that a `wr_id` built from one is never 0 (which the
/// requests inside an RDMA read/write chain carry).
const FIRST_SEQ: u64 = 1;

impl SendQueue {
    /// The record of an empty send queue of `size` requests (at least 2: one is kept for the
    /// drain marker).
    pub(crate) fn new(size: u32) -> Result<Self> {
        if size < 2 {
            return Err(EINVAL);
        }
        let empty = Entry {
            seq: 0,
            slots: 0,
            what: Posted::Signal,
        };
        let mut ring = KVec::with_capacity(size as usize, GFP_KERNEL)?;
        for _ in 0..size {
            ring.push(empty, GFP_KERNEL)?;
        }
        // INVARIANT: No entries; every slot but the drain marker's is free.
        Ok(Self {
            ring,
            head: 0,
            len: 0,
            free: size - 1,
            next_seq: FIRST_SEQ,
            drain_posted: false,
            tail_unsignaled: false,
        })
    }

    /// Takes `n` slots for a post that asks to be signaled if `signal`; returns `None` (nothing
    /// taken) if fewer are free, else whether the post must be signaled.
    pub(crate) fn take(&mut self, n: u32, signal: bool) -> Option<bool> {
        if n == 0 || self.free < n {
            return None;
        }
        self.free -= n;
        Some(signal || (self.free as usize) < self.ring.len() / 4)
    }

    /// Gives back `n` slots taken for a post that did not happen.
    pub(crate) fn untake(&mut self, n: u32) {
        // INVARIANT: Taken by `take`, and no entry holds them.
        self.free += n;
    }

    /// The sequence number the next post gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records a post that took `slots` slots (by [`SendQueue::take`]) and was numbered
    /// [`SendQueue::next_seq`].
    pub(crate) fn push(&mut self, slots: u32, what: Posted, signaled: bool) {
        let cap = self.ring.len();
        // Cannot fail by the type invariant: the post's slots were free.
        if self.len == cap {
            return;
        }
        let seq = self.next_seq;
        self.ring[(self.head + self.len) % cap] = Entry { seq, slots, what };
        self.len += 1;
        self.next_seq += 1;
        // INVARIANT: The entry holds the slots the post took, numbered in order.
        self.tail_unsignaled = !signaled;
    }

    /// Takes the slot kept for the drain marker; `false` if it was taken already.
    pub(crate) fn take_drain(&mut self) -> bool {
        if self.drain_posted {
            return false;
        }
        // INVARIANT: The marker's entry holds the kept slot from here on.
        self.drain_posted = true;
        true
    }

    /// Gives back the slot kept for the drain marker, whose post failed.
    pub(crate) fn untake_drain(&mut self) {
        // INVARIANT: No marker entry holds the kept slot.
        self.drain_posted = false;
    }

    /// The number of the oldest request not completed yet, or of the next one if none is
    /// outstanding: every request numbered below it has completed.
    pub(crate) fn oldest_seq(&self) -> u64 {
        // By the type invariant the entries are numbered `next_seq - len` on.
        self.next_seq - self.len as u64
    }

    /// Whether the last request posted was unsignaled.
    pub(crate) fn tail_unsignaled(&self) -> bool {
        self.tail_unsignaled
    }

    /// Takes the oldest entry if its number is `seq` or lower: a request numbered `seq`
    /// completed, so every request posted before it has completed too. Its slots are free
    /// again.
    pub(crate) fn pop_through(&mut self, seq: u64) -> Option<Entry> {
        if self.len == 0 {
            return None;
        }
        let e = self.ring[self.head];
        if e.seq > seq {
            return None;
        }
        self.head = (self.head + 1) % self.ring.len();
        self.len -= 1;
        // INVARIANT: The entry left the ring with its slots.
        self.free += e.slots;
        Some(e)
    }

    /// The number of requests posted and not completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.len
    }
}

#[macros::kunit_tests(rust_rdma_send_queue)]
mod tests {
    use super::*;

    fn ctx(n: usize) -> Posted {
        Posted::Ctx(n as *mut c_void)
    }

    #[test]
    fn unsignaled_requests_complete_with_the_next_signaled_one() {
        let mut sq = SendQueue::new(16).unwrap();
        for i in 1..=3 {
            let seq = sq.next_seq();
            assert_eq!(sq.take(1, i == 3), Some(i == 3));
            sq.push(1, ctx(i), i == 3);
            assert_eq!(seq, FIRST_SEQ + i as u64 - 1);
        }
        assert!(!sq.tail_unsignaled());
        // The oldest outstanding request is the first one.
        assert_eq!(sq.oldest_seq(), FIRST_SEQ);
        // Nothing completes before the first request's number.
        assert!(sq.pop_through(FIRST_SEQ - 1).is_none());
        // The signaled third one hands back all three, oldest first.
        let last = FIRST_SEQ + 2;
        let got: KVec<Posted> = {
            let mut v = KVec::new();
            while let Some(e) = sq.pop_through(last) {
                v.push(e.what, GFP_KERNEL).unwrap();
            }
            v
        };
        assert_eq!(&got[..], &[ctx(1), ctx(2), ctx(3)]);
        assert_eq!(sq.in_flight(), 0);
        // All three done: a probe posted as the third would be done too.
        assert_eq!(sq.oldest_seq(), FIRST_SEQ + 3);
        assert_eq!(sq.free, 15);
    }

    #[test]
    fn a_nearly_full_queue_signals_every_post() {
        let mut sq = SendQueue::new(16).unwrap();
        // 15 free: unsignaled posts are allowed while at least 4 stay free.
        for i in 0..11 {
            assert_eq!(sq.take(1, false), Some(false));
            sq.push(1, ctx(8 + 8 * i), false);
        }
        assert!(sq.tail_unsignaled());
        // Three left after this one: forced signaled.
        assert_eq!(sq.take(1, false), Some(true));
        sq.push(1, ctx(1000), true);
        assert!(!sq.tail_unsignaled());
        assert_eq!(sq.take(4, false), None);
        assert_eq!(sq.take(3, false), Some(true));
        sq.untake(3);
        // The drain marker still has its slot.
        assert!(sq.take_drain());
        assert!(!sq.take_drain());
    }

    #[test]
    fn the_ring_wraps() {
        let mut sq = SendQueue::new(4).unwrap();
        for round in 0..10u64 {
            for i in 0..3 {
                assert!(sq.take(1, true).is_some());
                sq.push(1, ctx(8 * (i + 1)), true);
            }
            assert_eq!(sq.take(1, true), None);
            let first = FIRST_SEQ + 3 * round;
            assert_eq!(sq.pop_through(first).map(|e| e.seq), Some(first));
            assert!(sq.pop_through(first).is_none());
            assert_eq!(sq.pop_through(first + 2).map(|e| e.what), Some(ctx(16)));
            assert_eq!(sq.pop_through(first + 2).map(|e| e.what), Some(ctx(24)));
            assert_eq!(sq.in_flight(), 0);
        }
    }
}
