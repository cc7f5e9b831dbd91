// SPDX-License-Identifier: GPL-2.0

//! Budgeted, race-free draining of completion queues.
//!
//! Virtqueues, RDMA completion queues and software completion rings are all
//! drained the same way: take completions until the queue is empty, re-arm the
//! notification, and look once more for completions that arrived in between.
//! [`Batcher`] implements that loop once, for any [`CompletionSource`], with
//! the techniques the kernel's own drivers use:
//!
//! - A pass handles at most `budget` completions. When the budget runs out the
//!   pass returns [`Pass::Reschedule`] and the caller runs it again from its own
//!   context (a workqueue, a kthread loop), so that other work gets a turn
//!   (`__ib_process_cq()` with `IB_POLL_BUDGET_IRQ`, and the stgt iSER CQ
//!   handler that polls eight completions and reschedules itself).
//! - When a pass finds the source empty it re-arms the notification and then
//!   polls once more. A completion that arrived between the empty poll and the
//!   re-arm raised no notification; the post-arm poll handles it at once
//!   instead of leaving it until some later interrupt
//!   (`IB_CQ_REPORT_MISSED_EVENTS`, `virtqueue_enable_cb()` returning false,
//!   stgt's "consume" pass).
//! - Busy-polled sources that stay idle for [`Config::idle`] leave the polling
//!   set and go back to notification mode, are polled one final time after
//!   leaving, and rejoin when their notification fires (QEMU's aio-posix idle
//!   poll-handler removal).
//! - Every source's [`Batcher`] keeps [`Stats`] counters.
//!
//! # Concurrency
//!
//! All methods take `&self`, never sleep and never allocate, so they can be
//! called from hard or soft interrupt context, kthreads and workqueues. At most
//! one pass runs at a time for a [`Batcher`]: a caller that finds a pass
//! already running gets [`Pass::Deferred`], and the running pass then returns
//! [`Pass::Reschedule`] instead of [`Pass::Armed`], so a notification that
//! raced with the end of a pass is never lost. Sources therefore see their
//! [`CompletionSource`] methods called from one context at a time for a given
//! [`Batcher`].
//!
//! C header: none; modelled on [`drivers/infiniband/core/cq.c`] and the
//! completion loop of [`drivers/scsi/virtio_scsi.c`].
//!
//! [`drivers/infiniband/core/cq.c`]: srctree/drivers/infiniband/core/cq.c
//! [`drivers/scsi/virtio_scsi.c`]: srctree/drivers/scsi/virtio_scsi.c

use crate::{
    sync::atomic::{
        Atomic,
        Full,
        Relaxed, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
};

/// A queue of completions with a notification that can be re-armed.
///
/// Implementations are small adapters over the real queue: a virtqueue
/// (`virtqueue_get_buf()`, `virtqueue_enable_cb()`), an RDMA CQ
/// (`ib_poll_cq()`, `ib_req_notify_cq()`) or a driver's own ring.
///
/// Correctness rests on one property of [`CompletionSource::arm`]: a
/// completion that becomes visible to [`CompletionSource::poll`] after `arm`
/// returns either raises a notification or is reported by `arm` itself. The
/// C primitives provide this with the barrier inside them (for example
/// `virtqueue_enable_cb()` re-reads the used index after a full barrier).
pub trait CompletionSource {
    /// One completion, as taken from the queue.
    type Completion;

    /// Takes up to `max` completions (`max >= 1`) and passes each to `sink`,
    /// oldest first. Must not pass more than `max`.
    fn poll(&self, max: usize, sink: impl FnMut(Self::Completion));

    /// Handles one completion taken by [`CompletionSource::poll`].
    fn complete(&self, completion: Self::Completion);

    /// Re-arms the notification. Returns `true` when completions may have
    /// arrived while the notification was disarmed that will not raise one
    /// (`IB_CQ_REPORT_MISSED_EVENTS`, `!virtqueue_enable_cb()`).
    fn arm(&self) -> bool;

    /// Stops notifications while a pass runs, where the queue supports it
    /// (`virtqueue_disable_cb()`). One-shot notifications need nothing.
    fn disarm(&self) {}

    /// Whether completions may remain queued. A source that can look cheaply
    /// (`virtqueue_more_used()`) lets a pass that used its whole budget on the
    /// last completion finish without a needless reschedule; the default
    /// answer, `true`, is always safe.
    fn pending(&self) -> bool {
        true
    }
}

/// What the caller does after a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The source is empty and its notification armed: wait for it.
    Armed,
    /// Completions may remain: run another pass soon, from the caller's own
    /// context (requeue the work item, loop in the kthread).
    Reschedule,
    /// Another context was running a pass; it will run again for this call.
    Deferred,
    /// The source is in the busy-polling set: poll it again.
    Polling,
}

/// Tuning of a [`Batcher`].
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Most completions one pass handles. Must be at least 1.
    pub budget: usize,
    /// How long a busy-polled source may find nothing before it leaves the
    /// polling set (seed technique: QEMU drops handlers idle for 7 s).
    pub idle: Delta,
}

/// Counters of a [`Batcher`]; each is updated with relaxed atomics and read
/// with [`Batcher::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Passes run (notification-driven and polling).
    pub passes: u64,
    /// Completions handled.
    pub completions: u64,
    /// Passes that used their whole budget with completions possibly left.
    pub budget_exhausted: u64,
    /// Notification re-arms.
    pub rearms: u64,
    /// Completions found by the poll that follows a re-arm.
    pub post_arm: u64,
    /// Busy-polled sources that went idle and left the polling set.
    pub idle_drops: u64,
}

struct Counters {
    passes: Atomic<u64>,
    completions: Atomic<u64>,
    budget_exhausted: Atomic<u64>,
    rearms: Atomic<u64>,
    post_arm: Atomic<u64>,
    idle_drops: Atomic<u64>,
}

/// A pass is running.
const RUNNING: u32 = 1 << 0;
/// A pass was requested while one was running.
const RERUN: u32 = 1 << 1;
/// The source is in the busy-polling set.
const POLLING: u32 = 1 << 2;

/// Drains one [`CompletionSource`] in budgeted passes.
///
/// # Invariants
///
/// `budget >= 1`. The `RUNNING` bit of `state` is set by exactly one context,
/// the one running a pass, from [`Batcher::enter`] until [`Batcher::leave`].
pub struct Batcher {
    budget: usize,
    idle: Delta,
    state: Atomic<u32>,
    /// Time of the last polling pass that found a completion, in
    /// nanoseconds of the monotonic clock.
    last_active: Atomic<i64>,
    counters: Counters,
}

impl Batcher {
    /// Creates a batcher in notification mode; the caller arms the source.
    pub fn new(config: Config) -> Self {
        let zero = || Atomic::new(0u64);
        // INVARIANT: the budget is clamped to at least 1; no pass is running.
        Self {
            budget: config.budget.max(1),
            idle: config.idle,
            state: Atomic::new(0),
            last_active: Atomic::new(0),
            counters: Counters {
                passes: zero(),
                completions: zero(),
                budget_exhausted: zero(),
                rearms: zero(),
                post_arm: zero(),
                idle_drops: zero(),
            },
        }
    }

    /// Returns the budget of one pass.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Returns a snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            passes: c.passes.load(Relaxed),
            completions: c.completions.load(Relaxed),
            budget_exhausted: c.budget_exhausted.load(Relaxed),
            rearms: c.rearms.load(Relaxed),
            post_arm: c.post_arm.load(Relaxed),
            idle_drops: c.idle_drops.load(Relaxed),
        }
    }

    /// Whether the source is in the busy-polling set.
    pub fn is_polling(&self) -> bool {
        self.state.load(Relaxed) & POLLING != 0
    }

    /// Runs one notification-driven pass: call it when the source's
    /// notification fires, and again whenever it returns [`Pass::Reschedule`].
    ///
    /// Handles at most the budget. Returns [`Pass::Armed`] only when the
    /// source was found empty after its notification was re-armed.
    pub fn run<S: CompletionSource>(&self, source: &S) -> Pass {
        if !self.enter() {
            return Pass::Deferred;
        }
        let pass = self.drain_pass(source);
        self.leave(pass)
    }

    /// Adds the source to the busy-polling set when its notification fires.
    ///
    /// Returns `true` when it joined (the caller then starts polling it with
    /// [`Batcher::poll`]) and `false` when it was already polling.
    pub fn join_polling(&self, now: Instant<Monotonic>) -> bool {
        self.last_active.store(now.as_nanos(), Relaxed);
        self.update(|s| s | POLLING) & POLLING == 0
    }

    /// Runs one busy-polling pass at time `now`.
    ///
    /// Returns [`Pass::Polling`] while the source stays in the polling set and
    /// [`Pass::Armed`] once it has left: after [`Config::idle`] without a
    /// completion, the notification is re-armed and the source polled one
    /// final time; a completion found then keeps it in the set.
    pub fn poll<S: CompletionSource>(&self, source: &S, now: Instant<Monotonic>) -> Pass {
        if !self.is_polling() {
            return Pass::Armed;
        }
        if !self.enter() {
            return Pass::Deferred;
        }
        self.counters.passes.add(1, Relaxed);
        source.disarm();
        let handled = self.drain(source, self.budget);
        let now_ns = now.as_nanos();
        if handled > 0 {
            self.last_active.store(now_ns, Relaxed);
            if handled == self.budget {
                self.counters.budget_exhausted.add(1, Relaxed);
            }
            return self.leave(Pass::Polling);
        }
        if now_ns - self.last_active.load(Relaxed) < self.idle.as_nanos() {
            return self.leave(Pass::Polling);
        }

        // Idle: leave the polling set, re-arm, and poll one final time.
        self.counters.idle_drops.add(1, Relaxed);
        self.clear(POLLING);
        let (missed, caught) = self.rearm_then_poll(source, self.budget);
        if caught > 0 || missed {
            // Something raced with leaving: stay in the set.
            source.disarm();
            self.last_active.store(now_ns, Relaxed);
            self.set(POLLING);
            return self.leave(Pass::Polling);
        }
        self.leave(Pass::Armed)
    }

    /// One budgeted pass in notification mode (the caller holds `RUNNING`).
    fn drain_pass<S: CompletionSource>(&self, source: &S) -> Pass {
        self.counters.passes.add(1, Relaxed);
        let mut left = self.budget;
        source.disarm();
        loop {
            left -= self.drain(source, left);
            if left == 0 && source.pending() {
                self.counters.budget_exhausted.add(1, Relaxed);
                return Pass::Reschedule;
            }

            // Empty: re-arm, then poll once more for completions that arrived
            // between the empty poll and the re-arm.
            let (missed, caught) = self.rearm_then_poll(source, left);
            left -= caught;
            if caught == 0 {
                if left == 0 && source.pending() {
                    // No budget left for the post-arm poll, and something
                    // may have slipped in: run again rather than strand it.
                    self.counters.budget_exhausted.add(1, Relaxed);
                    return Pass::Reschedule;
                }
                // `missed` with nothing caught: the source owes completions
                // that are not visible yet; look again soon.
                return if missed {
                    Pass::Reschedule
                } else {
                    Pass::Armed
                };
            }
            if left == 0 {
                self.counters.budget_exhausted.add(1, Relaxed);
                return Pass::Reschedule;
            }
            // More slipped in: keep draining with the notification off.
            source.disarm();
        }
    }

    /// Re-arms the notification, then polls for at most `max` completions
    /// that arrived before the re-arm took effect. Returns what `arm`
    /// reported and how many completions the post-arm poll handled.
    fn rearm_then_poll<S: CompletionSource>(&self, source: &S, max: usize) -> (bool, usize) {
        self.counters.rearms.add(1, Relaxed);
        let missed = source.arm();
        let caught = self.drain(source, max);
        self.counters.post_arm.add(caught as u64, Relaxed);
        (missed, caught)
    }

    /// Polls until the source is empty or `max` completions were handled;
    /// returns how many were.
    fn drain<S: CompletionSource>(&self, source: &S, max: usize) -> usize {
        let mut handled = 0;
        while handled < max {
            let mut got = 0;
            source.poll(max - handled, |c| {
                got += 1;
                source.complete(c);
            });
            if got == 0 {
                break;
            }
            handled += got;
        }
        self.counters.completions.add(handled as u64, Relaxed);
        handled
    }

    /// Takes the `RUNNING` bit; when another pass holds it, asks that pass to
    /// run again and returns `false`.
    fn enter(&self) -> bool {
        let old = self.update(|s| {
            if s & RUNNING != 0 {
                s | RERUN
            } else {
                s | RUNNING
            }
        });
        old & RUNNING == 0
    }

    /// Drops the `RUNNING` bit. When a pass was requested meanwhile, a pass
    /// that would have returned [`Pass::Armed`] asks to be run again instead.
    fn leave(&self, pass: Pass) -> Pass {
        let old = self.update(|s| s & !(RUNNING | RERUN));
        match pass {
            Pass::Armed if old & RERUN != 0 && old & POLLING != 0 => Pass::Polling,
            Pass::Armed if old & RERUN != 0 => Pass::Reschedule,
            _ => pass,
        }
    }

    fn set(&self, bits: u32) {
        self.update(|s| s | bits);
    }

    fn clear(&self, bits: u32) {
        self.update(|s| s & !bits);
    }

    /// Atomically replaces the state `s` with `f(s)`; returns the old state.
    ///
    /// Every change of `state` goes through here with `Full` ordering, so the
    /// state changes are totally ordered: a pass that clears `RUNNING` in
    /// `leave()` either sees the `RERUN` set by a concurrent `enter()`, or that
    /// `enter()` sees `RUNNING` clear and runs the pass itself. Either way the
    /// completion behind the notification that called `enter()` is handled.
    fn update(&self, f: impl Fn(u32) -> u32) -> u32 {
        let mut old = self.state.load(Relaxed);
        loop {
            match self.state.cmpxchg(old, f(old), Full) {
                Ok(prev) => return prev,
                Err(cur) => old = cur,
            }
        }
    }
}

#[macros::kunit_tests(rust_completion_batch)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// A scripted completion queue. Completions are sequence numbers;
    /// `[taken, produced)` are queued, `handled` is the next one expected.
    struct Fake {
        b: Batcher,
        produced: Cell<u32>,
        taken: Cell<u32>,
        handled: Cell<u32>,
        /// A completion was handled twice or out of order.
        disorder: Cell<bool>,
        /// `poll` was asked for more than the pass had left, or gave more than asked.
        over_budget: Cell<bool>,
        /// The notification is armed.
        armed: Cell<bool>,
        /// Notifications raised (a completion produced while armed).
        notifications: Cell<u32>,
        /// Completions that arrive after the empty poll, just before the re-arm
        /// takes effect: they raise no notification.
        arm_inject: Cell<u32>,
        /// `arm` reports missed events (IB_CQ_REPORT_MISSED_EVENTS style).
        reports_missed: bool,
        /// `pending` can look at the queue (virtqueue_more_used style).
        peeks: bool,
        /// `complete` calls `run` again, as an interrupt on another CPU would.
        reenter: Cell<bool>,
        reentered: Cell<Option<Pass>>,
    }

    impl Fake {
        fn new(budget: usize, reports_missed: bool, peeks: bool) -> Self {
            Self {
                b: Batcher::new(Config {
                    budget,
                    idle: Delta::from_millis(1),
                }),
                produced: Cell::new(0),
                taken: Cell::new(0),
                handled: Cell::new(0),
                disorder: Cell::new(false),
                over_budget: Cell::new(false),
                armed: Cell::new(false),
                notifications: Cell::new(0),
                arm_inject: Cell::new(0),
                reports_missed,
                peeks,
                reenter: Cell::new(false),
                reentered: Cell::new(None),
            }
        }

        fn produce(&self, n: u32) {
            self.produced.set(self.produced.get() + n);
            if n > 0 && self.armed.replace(false) {
                self.notifications.set(self.notifications.get() + 1);
            }
        }

        fn queued(&self) -> u32 {
            self.produced.get() - self.taken.get()
        }

        /// Runs a pass and returns it with the completions it handled.
        fn pass(&self) -> (Pass, u32) {
            let before = self.handled.get();
            let p = self.b.run(self);
            (p, self.handled.get() - before)
        }

        /// Runs passes until one returns `Armed`; returns how many ran and
        /// the most completions one of them handled.
        fn until_armed(&self) -> (u32, u32) {
            let (mut passes, mut most) = (0, 0);
            loop {
                let (p, n) = self.pass();
                passes += 1;
                most = most.max(n);
                if p == Pass::Armed || passes > 10_000 {
                    return (passes, most);
                }
            }
        }
    }

    impl CompletionSource for Fake {
        type Completion = u32;

        fn poll(&self, max: usize, mut sink: impl FnMut(u32)) {
            if max == 0 {
                self.over_budget.set(true);
            }
            let n = self.queued().min(max as u32);
            for i in 0..n {
                sink(self.taken.get() + i);
            }
            self.taken.set(self.taken.get() + n);
        }

        fn complete(&self, c: u32) {
            if c != self.handled.get() {
                self.disorder.set(true);
            }
            self.handled.set(c + 1);
            if self.reenter.replace(false) {
                self.reentered.set(Some(self.b.run(self)));
            }
        }

        fn arm(&self) -> bool {
            let k = self.arm_inject.replace(0);
            self.produced.set(self.produced.get() + k);
            self.armed.set(true);
            self.reports_missed && self.queued() > 0
        }

        fn disarm(&self) {
            self.armed.set(false);
        }

        fn pending(&self) -> bool {
            !self.peeks || self.queued() > 0
        }
    }

    #[test]
    fn budget_is_respected() {
        let f = Fake::new(8, false, true);
        f.produce(100);
        let (passes, most) = f.until_armed();
        assert_eq!(passes, 13);
        assert_eq!(most, 8);
        assert_eq!(f.handled.get(), 100);
        assert!(!f.disorder.get());
        assert!(!f.over_budget.get());
        assert_eq!(
            f.b.stats(),
            Stats {
                passes: 13,
                completions: 100,
                budget_exhausted: 12,
                rearms: 1,
                post_arm: 0,
                idle_drops: 0,
            }
        );
    }

    #[test]
    fn reschedule_exactly_when_completions_remain() {
        for (queued, want) in [
            (0, Pass::Armed),
            (7, Pass::Armed),
            (8, Pass::Armed),
            (9, Pass::Reschedule),
        ] {
            let f = Fake::new(8, false, true);
            f.produce(queued);
            let (p, n) = f.pass();
            assert_eq!(p, want);
            assert_eq!(n, queued.min(8));
            assert_eq!(
                f.b.stats().budget_exhausted,
                (want == Pass::Reschedule) as u64
            );
        }
        // A source that cannot look must assume more when the budget ran out.
        let f = Fake::new(8, false, false);
        f.produce(8);
        assert_eq!(f.pass(), (Pass::Reschedule, 8));
        assert_eq!(f.pass(), (Pass::Armed, 0));
    }

    #[test]
    fn race_before_rearm_is_caught() {
        for budget in [1usize, 2, 4, 8, 32] {
            for queued in [0u32, 1, 7, 8, 9, 31] {
                for injected in [1u32, 2, 8, 40] {
                    for (missed, peeks) in [(false, true), (true, false), (false, false)] {
                        let f = Fake::new(budget, missed, peeks);
                        f.produce(queued);
                        // The completions arrive at the first re-arm of the pass sequence.
                        f.arm_inject.set(injected);
                        let (_, most) = f.until_armed();
                        // Every completion handled once, none left queued, without
                        // waiting for a notification that never comes.
                        assert_eq!(f.handled.get(), queued + injected);
                        assert_eq!(f.queued(), 0);
                        assert_eq!(f.notifications.get(), 0);
                        assert!(!f.disorder.get());
                        assert!(!f.over_budget.get());
                        assert!(most as usize <= budget);
                        let s = f.b.stats();
                        assert_eq!(s.completions, (queued + injected) as u64);
                        // Caught by the post-arm poll unless the budget was spent.
                        assert!(s.post_arm > 0 || s.budget_exhausted > 0);
                    }
                }
            }
        }
    }

    #[test]
    fn post_arm_poll_counts() {
        let f = Fake::new(8, false, true);
        f.produce(3);
        f.arm_inject.set(2);
        assert_eq!(f.pass(), (Pass::Armed, 5));
        assert_eq!(
            f.b.stats(),
            Stats {
                passes: 1,
                completions: 5,
                budget_exhausted: 0,
                rearms: 2,
                post_arm: 2,
                idle_drops: 0,
            }
        );
        // Armed and empty: the next completion raises a notification.
        f.produce(1);
        assert_eq!(f.notifications.get(), 1);
    }

    #[test]
    fn concurrent_run_is_deferred_not_lost() {
        let f = Fake::new(8, false, true);
        f.produce(2);
        f.reenter.set(true);
        // The nested call finds a pass running: it is deferred, and the
        // running pass, which would have ended armed, asks to run again.
        assert_eq!(f.pass(), (Pass::Reschedule, 2));
        assert_eq!(f.reentered.get(), Some(Pass::Deferred));
        assert_eq!(f.pass(), (Pass::Armed, 0));
        assert_eq!(f.b.stats().passes, 2);
    }

    #[test]
    fn idle_source_leaves_and_rejoins_polling() {
        let f = Fake::new(8, false, true);
        let t0 = Instant::<Monotonic>::now();
        let at = |us: i64| t0 + Delta::from_micros(us);

        // Not polling: a polling pass does nothing.
        assert_eq!(f.b.poll(&f, t0), Pass::Armed);
        assert_eq!(f.b.stats().passes, 0);

        assert!(f.b.join_polling(t0));
        assert!(!f.b.join_polling(t0));
        f.produce(3);
        assert_eq!(f.b.poll(&f, at(0)), Pass::Polling);
        assert_eq!(f.handled.get(), 3);
        // Idle for less than the interval (1 ms): stays.
        assert_eq!(f.b.poll(&f, at(999)), Pass::Polling);
        assert!(f.b.is_polling());
        // Idle for the interval: leaves, re-arms, one final poll finds nothing.
        assert_eq!(f.b.poll(&f, at(1000)), Pass::Armed);
        assert!(!f.b.is_polling());
        assert!(f.armed.get());
        assert_eq!(f.b.poll(&f, at(1001)), Pass::Armed);

        // The notification fires: rejoin, then poll.
        f.produce(1);
        assert_eq!(f.notifications.get(), 1);
        assert!(f.b.join_polling(at(2000)));
        assert_eq!(f.b.poll(&f, at(2000)), Pass::Polling);
        assert_eq!(f.handled.get(), 4);

        // A completion that races with leaving is found by the final poll and
        // keeps the source in the set.
        f.arm_inject.set(2);
        assert_eq!(f.b.poll(&f, at(3000)), Pass::Polling);
        assert!(f.b.is_polling());
        assert_eq!(f.handled.get(), 6);
        assert_eq!(f.queued(), 0);
        assert!(!f.disorder.get());
        assert_eq!(
            f.b.stats(),
            Stats {
                passes: 5,
                completions: 6,
                budget_exhausted: 0,
                rearms: 2,
                post_arm: 2,
                idle_drops: 2,
            }
        );
    }
}
