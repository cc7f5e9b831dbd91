// SPDX-License-Identifier: GPL-2.0

//! Per-target queue steering (the technique of virtio-scsi's original multiqueue support).
//!
//! A target's requests go to one request queue while any of them is in flight, so the device
//! sees them in submission order; an idle target may move to any queue, and takes the queue of
//! the submitting CPU (the one blk-mq chose), so its interrupts come back to that CPU.
//!
//! The whole state of a target is one 64-bit word: the number of requests in flight (low 32
//! bits) and the queue they use (high 32 bits). Every change is a single atomic operation, so
//! the queue is only ever chosen together with the 0 -> 1 transition of the count, and never
//! changes under requests in flight:
//!
//! - [`TargetQueue::acquire`] reads the word and installs `(queue, count + 1)` with a
//!   compare-and-exchange; on failure (a concurrent acquire or release) it retries with the
//!   new value. The queue is the current one unless the count is 0.
//! - [`TargetQueue::release`] subtracts one from the count; it never borrows from the queue
//!   bits: the count of a target with a request in flight is at least 1, and a release that
//!   finds 0 (the count was forgotten after a device reset) does nothing.
//!
//! Offline CPUs: a queue whose CPUs are all offline is never chosen. The 0 -> 1 choice is the
//! queue blk-mq picked for the submitting CPU, which is online. A busy target whose queue lost
//! its last online CPU moves to the submitting CPU's queue (`Decision::Resteer`): order between
//! the requests already in flight and the new ones is then not guaranteed, which SCSI allows
//! for SIMPLE tasks; completions keep arriving because request-queue interrupts are not
//! managed in this mode (they migrate to an online CPU instead of being shut down).

use kernel::{
    prelude::*,
    sync::atomic::{
        Atomic,
        Full,
        Relaxed, //
    },
};

/// How [`TargetQueue::acquire`] chose the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The target was idle: it takes the submitting CPU's queue.
    Idle,
    /// The target is busy: it stays on its queue.
    Stay,
    /// The target was busy on a queue without online CPUs: it moves.
    Resteer,
}

/// The steering state of one target.
pub(crate) struct TargetQueue(Atomic<u64>);

const COUNT_MASK: u64 = 0xffff_ffff;

impl TargetQueue {
    pub(crate) fn new() -> Self {
        Self(Atomic::new(0))
    }

    /// Counts a new request of the target and returns the queue it must use.
    ///
    /// `local` is the queue of the submitting CPU; `usable(q)` tells whether queue `q` still
    /// serves an online CPU.
    pub(crate) fn acquire(&self, local: u32, usable: impl Fn(u32) -> bool) -> (u32, Decision) {
        let mut old = self.0.load(Relaxed);
        loop {
            let count = old & COUNT_MASK;
            let current = (old >> 32) as u32;
            let (queue, decision) = if count == 0 {
                (local, Decision::Idle)
            } else if current == local || usable(current) {
                (current, Decision::Stay)
            } else {
                (local, Decision::Resteer)
            };
            let new = (u64::from(queue) << 32) | (count + 1);
            match self.0.cmpxchg(old, new, Full) {
                Ok(_) => return (queue, decision),
                Err(seen) => old = seen,
            }
        }
    }

    /// Counts the completion of a request acquired with [`TargetQueue::acquire`].
    ///
    /// Does nothing if the count is already 0 ([`TargetQueue::forget`] ran since the acquire),
    /// so that the queue bits are never borrowed from.
    pub(crate) fn release(&self) {
        let mut old = self.0.load(Relaxed);
        while old & COUNT_MASK != 0 {
            match self.0.cmpxchg(old, old - 1, Full) {
                Ok(_) => return,
                Err(seen) => old = seen,
            }
        }
    }

    /// Forgets the requests in flight: after a device reset, which gave none of them back
    /// through the completion path.
    pub(crate) fn forget(&self) {
        let mut old = self.0.load(Relaxed);
        while let Err(seen) = self.0.cmpxchg(old, old & !COUNT_MASK, Full) {
            old = seen;
        }
    }

    /// Returns the number of requests in flight and their queue.
    pub(crate) fn snapshot(&self) -> (u32, u32) {
        let v = self.0.load(Relaxed);
        ((v & COUNT_MASK) as u32, (v >> 32) as u32)
    }
}

#[kunit_tests(rvirtio_scsi_steering)]
mod tests {
    use super::*;

    #[test]
    fn idle_target_takes_local_queue() {
        let t = TargetQueue::new();
        assert_eq!(t.acquire(3, |_| true), (3, Decision::Idle));
        assert_eq!(t.snapshot(), (1, 3));
        t.release();
        assert_eq!(t.snapshot().0, 0);
        assert_eq!(t.acquire(1, |_| true), (1, Decision::Idle));
    }

    #[test]
    fn busy_target_stays_on_its_queue() {
        let t = TargetQueue::new();
        assert_eq!(t.acquire(2, |_| true), (2, Decision::Idle));
        for local in [0, 1, 3, 0] {
            assert_eq!(t.acquire(local, |_| true), (2, Decision::Stay));
        }
        assert_eq!(t.snapshot(), (5, 2));
        for _ in 0..5 {
            t.release();
        }
        assert_eq!(t.snapshot(), (0, 2));
    }

    #[test]
    fn busy_target_leaves_a_queue_without_online_cpus() {
        let t = TargetQueue::new();
        t.acquire(1, |_| true);
        assert_eq!(t.acquire(0, |q| q != 1), (0, Decision::Resteer));
        assert_eq!(t.acquire(1, |q| q != 1), (0, Decision::Stay));
        assert_eq!(t.snapshot(), (3, 0));
    }

    #[test]
    fn forget_keeps_queue_and_late_release_is_harmless() {
        let t = TargetQueue::new();
        t.acquire(2, |_| true);
        t.acquire(2, |_| true);
        t.forget();
        assert_eq!(t.snapshot(), (0, 2));
        // The requests' late releases must not borrow from the queue bits.
        t.release();
        t.release();
        assert_eq!(t.snapshot(), (0, 2));
        assert_eq!(t.acquire(1, |_| true), (1, Decision::Idle));
    }

    #[test]
    fn queue_bits_survive_release() {
        let t = TargetQueue::new();
        t.acquire(u32::MAX, |_| true);
        t.acquire(0, |_| true);
        t.release();
        assert_eq!(t.snapshot(), (1, u32::MAX));
    }
}
