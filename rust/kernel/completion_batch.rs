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
//! - A whole pass, the drain, the decision, the re-arm and the look after it,
//!   runs under one acquisition of the queue's lock ([`CompletionSource::lock`]),
//!   as `virtscsi_vq_done()` does. Completions are handled either under that
//!   lock or, collected [`COLLECT`] at a time, after it is dropped
//!   ([`CompletionSource::COMPLETE_LOCKED`]).
//! - When a pass finds the source empty it re-arms the notification. A
//!   completion that arrived between the empty poll and the re-arm raised no
//!   notification, so the pass looks once more, but only where that look can
//!   find something: when the re-arm reported a possible miss
//!   ([`Armed::MaybeMissed`]: `IB_CQ_REPORT_MISSED_EVENTS`,
//!   `virtqueue_enable_cb()` returning false) or when the source cannot tell
//!   ([`Armed::Unchecked`]).
//! - Busy-polled sources that stay idle for [`Config::idle`] leave the polling
//!   set and go back to notification mode, are polled one final time after
//!   leaving, and rejoin when their notification fires (QEMU's aio-posix idle
//!   poll-handler removal).
//! - Every [`Batcher`] keeps [`Stats`] counters.
//!
//! # Concurrency
//!
//! All methods take `&self`, never sleep and never allocate (a source's own
//! methods must suit the caller's context), so they can be called from hard or
//! soft interrupt context, kthreads and workqueues, on several CPUs at once. At
//! most one pass runs at a time for a [`Batcher`]: a caller that finds a pass
//! already running gets [`Pass::Deferred`], and the running pass then returns
//! [`Pass::Reschedule`] (or [`Pass::Polling`]) instead of [`Pass::Armed`], so a
//! notification that raced with the end of a pass is never lost (the *hand-over*,
//! counted in [`Stats::reruns`]). Sources therefore see their
//! [`CompletionSource`] methods called from one pass at a time, and a source's
//! completions are handled in the order the queue gave them.
//!
//! C header: none; modelled on [`drivers/infiniband/core/cq.c`] and the
//! completion loop of [`drivers/scsi/virtio_scsi.c`].
//!
//! # Examples
//!
//! A ring of numbers behind a spinlock, drained with completions handled after
//! the lock is dropped:
//!
//! ```
//! use kernel::completion_batch::{
//!     Armed,
//!     Batcher,
//!     CompletionQueue,
//!     CompletionSource,
//!     Config,
//!     Pass, //
//! };
//! use kernel::sync::{
//!     atomic::{
//!         Atomic,
//!         Relaxed, //
//!     },
//!     new_spinlock,
//!     SpinLock,
//!     SpinLockGuard, //
//! };
//!
//! struct Ring {
//!     queued: u32,
//!     armed: bool,
//! }
//!
//! #[pin_data]
//! struct Source {
//!     #[pin]
//!     ring: SpinLock<Ring>,
//!     handled: Atomic<u32>,
//! }
//!
//! struct Locked<'a>(SpinLockGuard<'a, Ring>);
//!
//! impl CompletionQueue for Locked<'_> {
//!     type Completion = u32;
//!
//!     fn poll(&mut self, max: usize, mut sink: impl FnMut(u32)) -> usize {
//!         let n = self.0.queued.min(max as u32);
//!         for i in 0..n {
//!             sink(i);
//!         }
//!         self.0.queued -= n;
//!         n as usize
//!     }
//!
//!     fn arm(&mut self) -> Armed {
//!         self.0.armed = true;
//!         // The producer queues under the same lock: nothing can slip in.
//!         Armed::Quiet
//!     }
//! }
//!
//! impl CompletionSource for Source {
//!     type Completion = u32;
//!     type Queue<'a> = Locked<'a>;
//!
//!     fn lock(&self) -> Locked<'_> {
//!         Locked(self.ring.lock())
//!     }
//!
//!     fn complete(&self, _c: u32) {
//!         self.handled.add(1, Relaxed);
//!     }
//! }
//!
//! let src = KBox::pin_init(
//!     pin_init!(Source {
//!         ring <- new_spinlock!(Ring { queued: 20, armed: false }),
//!         handled: Atomic::new(0),
//!     }),
//!     GFP_KERNEL,
//! )?;
//! let b = Batcher::new(Config::with_budget(8));
//! assert_eq!(b.run(&*src), Pass::Reschedule);
//! assert_eq!(b.run(&*src), Pass::Reschedule);
//! assert_eq!(b.run(&*src), Pass::Armed);
//! assert_eq!(src.handled.load(Relaxed), 20);
//! // Three passes, one lock hold each.
//! assert_eq!(b.stats().locks, 3);
//! # Ok::<(), Error>(())
//! ```
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

/// Completions a pass collects under the queue lock before it drops the lock
/// to handle them, for sources that handle completions unlocked.
pub const COLLECT: usize = 32;

/// What re-arming a notification found out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Armed {
    /// Nothing was missed: every completion that becomes visible from now on
    /// raises a notification (`virtqueue_enable_cb()` returning true,
    /// `ib_req_notify_cq()` returning 0). The pass does not look again.
    Quiet,
    /// Completions may have arrived while the notification was off that raise
    /// none. The pass looks once more; if it finds nothing, the completion is
    /// not visible yet and the pass asks to be run again.
    MaybeMissed,
    /// The source cannot tell. The pass looks once more; a completion that
    /// becomes visible after that look raises a notification.
    Unchecked,
}

/// A completion queue, locked for one pass of a [`Batcher`].
///
/// Correctness rests on one property of [`CompletionQueue::arm`]: a completion
/// that becomes visible to [`CompletionQueue::poll`] after `arm` returns either
/// raises a notification or is reported by `arm` ([`Armed::MaybeMissed`], or
/// [`Armed::Unchecked`] for sources that cannot tell). The C primitives provide
/// this with the barrier inside them (for example `virtqueue_enable_cb()`
/// re-reads the used index after a full barrier).
pub trait CompletionQueue {
    /// One completion, as taken from the queue.
    type Completion;

    /// Takes up to `max` completions (`max >= 1`), oldest first, passing each
    /// to `sink`. Returns how many were taken. Must not take more than `max`.
    fn poll(&mut self, max: usize, sink: impl FnMut(Self::Completion)) -> usize;

    /// Re-arms the notification and says whether something may have been
    /// missed while it was off.
    fn arm(&mut self) -> Armed;

    /// Stops notifications while a pass runs, where the queue supports it
    /// (`virtqueue_disable_cb()`). One-shot notifications need nothing.
    fn disarm(&mut self) {}

    /// Whether completions may remain queued. A queue that can look cheaply
    /// (`virtqueue_more_used()`) lets a pass that used its whole budget on the
    /// last completion finish without a needless reschedule; the default
    /// answer, `true`, is always safe.
    fn pending(&mut self) -> bool {
        true
    }
}

/// A queue of completions with a notification that can be re-armed.
///
/// Implementations are small adapters over the real queue: a virtqueue, an
/// RDMA CQ or a driver's own ring. [`CompletionSource::lock`] takes the lock
/// that serialises the queue (a virtqueue's spinlock, a connection's mutex);
/// a [`Batcher`] takes it once per pass, plus once more per [`COLLECT`]
/// completions when they are handled unlocked.
pub trait CompletionSource {
    /// One completion, as taken from the queue.
    type Completion;

    /// The queue while its lock is held.
    type Queue<'a>: CompletionQueue<Completion = Self::Completion>
    where
        Self: 'a;

    /// Whether [`CompletionSource::complete`] runs with the queue's lock held,
    /// as `virtscsi_vq_done()` does (`true`: one lock hold per pass whatever
    /// the budget), or after the lock is dropped, [`COLLECT`] completions at a
    /// time (`false`, the default: the completion code may take the lock, and
    /// producers are not held up by it).
    const COMPLETE_LOCKED: bool = false;

    /// Locks the queue for (part of) a pass.
    fn lock(&self) -> Self::Queue<'_>;

    /// Handles one completion.
    fn complete(&self, completion: Self::Completion);
}

/// What the caller does after a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The source is empty and its notification armed: wait for it.
    Armed,
    /// Completions may remain: run another pass soon, from the caller's own
    /// context (requeue the work item, loop in the kthread).
    Reschedule,
    /// Another context was running a pass; that pass hands the work over
    /// (it returns [`Pass::Reschedule`] or [`Pass::Polling`] to its caller).
    Deferred,
    /// The source is in the busy-polling set: poll it again.
    Polling,
}

/// Tuning of a [`Batcher`].
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Most completions one pass handles; 0 is taken as 1.
    pub budget: usize,
    /// How long a busy-polled source may find nothing before it leaves the
    /// polling set (QEMU drops poll handlers idle for 7 s).
    pub idle: Delta,
}

impl Config {
    /// A configuration with the given budget and a one-second idle interval.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            budget,
            idle: Delta::from_secs(1),
        }
    }

    /// A configuration from a driver's `budget` module parameter, where 0
    /// means "no budget": a pass drains the source until it is empty.
    pub fn from_param(budget: u32) -> Self {
        Self::with_budget(match budget {
            0 => usize::MAX,
            b => b as usize,
        })
    }
}

/// Counters of a [`Batcher`], read with [`Batcher::stats`].
///
/// All but [`Stats::joins`] are written only by the context that runs a pass
/// (it holds the `RUNNING` bit), with plain loads and stores; reads from other
/// contexts are racy snapshots, exact once the source is quiet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Passes run (notification-driven and polling).
    pub passes: u64,
    /// Completions handled.
    pub completions: u64,
    /// Acquisitions of the queue's lock ([`CompletionSource::lock`]).
    pub locks: u64,
    /// Passes that used their whole budget with completions possibly left.
    pub budget_exhausted: u64,
    /// Notification re-arms.
    pub rearms: u64,
    /// Looks after a re-arm (skipped when the re-arm reported
    /// [`Armed::Quiet`]).
    pub post_arm_polls: u64,
    /// Completions found by those looks.
    pub post_arm: u64,
    /// Passes that ended by handing over to a caller that was deferred.
    pub reruns: u64,
    /// Busy-polled sources that went idle and left the polling set.
    pub idle_drops: u64,
    /// Times the source joined the polling set ([`Batcher::join_polling`]).
    pub joins: u64,
}

/// The pass counters as `passes N locks N budget_exhausted N rearms N post_arm_polls N
/// post_arm N reruns N`, the form drivers print in their debugfs statistics.
impl core::fmt::Display for Stats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "passes {} locks {} budget_exhausted {} rearms {} post_arm_polls {} post_arm {} \
             reruns {}",
            self.passes,
            self.locks,
            self.budget_exhausted,
            self.rearms,
            self.post_arm_polls,
            self.post_arm,
            self.reruns
        )
    }
}

/// Single-writer counters: only the owner of `RUNNING` writes them.
struct Counters {
    passes: Atomic<u64>,
    completions: Atomic<u64>,
    locks: Atomic<u64>,
    budget_exhausted: Atomic<u64>,
    rearms: Atomic<u64>,
    post_arm_polls: Atomic<u64>,
    post_arm: Atomic<u64>,
    reruns: Atomic<u64>,
    idle_drops: Atomic<u64>,
    /// The one counter with several writers (joins are rare): locked adds.
    joins: Atomic<u64>,
}

/// Adds to a counter that has one writer: a load and a store, no locked
/// read-modify-write.
fn bump(counter: &Atomic<u64>, n: u64) {
    if n != 0 {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// What one pass did, published to [`Counters`] when it ends.
#[derive(Default)]
struct Tally {
    completions: u64,
    locks: u64,
    budget_exhausted: u64,
    rearms: u64,
    post_arm_polls: u64,
    post_arm: u64,
    idle_drops: u64,
}

/// A pass is running.
const RUNNING: u32 = 1 << 0;
/// A pass was requested while one was running.
const RERUN: u32 = 1 << 1;
/// The source is in the busy-polling set.
const POLLING: u32 = 1 << 2;

/// How one locked stretch of a pass ended.
enum Step {
    /// The collection buffer filled with budget left: handle and come back.
    More,
    /// The pass is over.
    Done(Pass),
}

/// Completions taken under the lock, handled after it is dropped.
struct Collected<C> {
    items: [Option<C>; COLLECT],
    len: usize,
}

impl<C> Collected<C> {
    fn new() -> Self {
        Self {
            items: [const { None }; COLLECT],
            len: 0,
        }
    }

    fn room(&self) -> usize {
        COLLECT - self.len
    }

    fn push(&mut self, c: C) -> Result<(), C> {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(c);
                self.len += 1;
                Ok(())
            }
            None => Err(c),
        }
    }
}

/// Drains one [`CompletionSource`] in budgeted passes.
///
/// # Invariants
///
/// `budget >= 1`. The `RUNNING` bit of `state` is set by exactly one context,
/// the one running a pass, from `Batcher::enter` until `Batcher::leave`;
/// only that context calls the source's methods and writes the counters other
/// than `joins`.
pub struct Batcher {
    budget: usize,
    idle: Delta,
    state: Atomic<u32>,
    /// Time of the last polling pass that found a completion (or of the last
    /// join), in nanoseconds of the monotonic clock.
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
                locks: zero(),
                budget_exhausted: zero(),
                rearms: zero(),
                post_arm_polls: zero(),
                post_arm: zero(),
                reruns: zero(),
                idle_drops: zero(),
                joins: zero(),
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
            locks: c.locks.load(Relaxed),
            budget_exhausted: c.budget_exhausted.load(Relaxed),
            rearms: c.rearms.load(Relaxed),
            post_arm_polls: c.post_arm_polls.load(Relaxed),
            post_arm: c.post_arm.load(Relaxed),
            reruns: c.reruns.load(Relaxed),
            idle_drops: c.idle_drops.load(Relaxed),
            joins: c.joins.load(Relaxed),
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
    /// source was found empty with its notification re-armed and no other
    /// caller was deferred meanwhile.
    pub fn run<S: CompletionSource>(&self, source: &S) -> Pass {
        if !self.enter() {
            return Pass::Deferred;
        }
        let mut t = Tally::default();
        let pass = self.pass(source, &mut t, None);
        self.leave(pass, &t)
    }

    /// Adds the source to the busy-polling set when its notification fires.
    ///
    /// Returns `true` when it joined (the caller then starts polling it with
    /// [`Batcher::poll`]) and `false` when it was already polling.
    pub fn join_polling(&self, now: Instant<Monotonic>) -> bool {
        self.last_active.store(now.as_nanos(), Relaxed);
        let joined = self.update(|s| s | POLLING) & POLLING == 0;
        if joined {
            self.counters.joins.add(1, Relaxed);
        }
        joined
    }

    /// Runs one busy-polling pass at time `now`.
    ///
    /// Returns [`Pass::Polling`] while the source stays in the polling set and
    /// [`Pass::Armed`] once it has left: after [`Config::idle`] without a
    /// completion, the notification is re-armed and the source polled one
    /// final time (unless the re-arm reported [`Armed::Quiet`]); a completion
    /// found then keeps it in the set. Returns [`Pass::Deferred`] when another
    /// context is running a pass.
    pub fn poll<S: CompletionSource>(&self, source: &S, now: Instant<Monotonic>) -> Pass {
        if !self.is_polling() {
            return Pass::Armed;
        }
        if !self.enter() {
            return Pass::Deferred;
        }
        let mut t = Tally::default();
        let pass = self.pass(source, &mut t, Some(now.as_nanos()));
        self.leave(pass, &t)
    }

    /// One pass, the caller holding `RUNNING`: locked stretches, each
    /// followed by the handling of what it collected. There is one stretch
    /// when completions are handled under the lock, and one more per
    /// [`COLLECT`] completions otherwise. `polling` is the time of a
    /// busy-polling pass.
    fn pass<S: CompletionSource>(&self, source: &S, t: &mut Tally, polling: Option<i64>) -> Pass {
        let mut run = PassState {
            left: self.budget,
            handled: 0,
        };
        let mut first = true;
        loop {
            // No buffer at all when completions are handled under the lock:
            // the pass then touches no stack array on its hot path.
            let mut got = (!S::COMPLETE_LOCKED).then(Collected::new);
            let step = {
                let mut q = source.lock();
                t.locks += 1;
                if first {
                    q.disarm();
                    first = false;
                }
                let mut stretch = Stretch {
                    source,
                    q: &mut q,
                    got: got.as_mut(),
                };
                match polling {
                    None => self.drain_step(&mut stretch, &mut run, t),
                    Some(now) => self.poll_step(&mut stretch, &mut run, t, now),
                }
            };
            // The lock is dropped: handle what was collected, oldest first.
            if let Some(got) = got.as_mut() {
                for c in got.items.iter_mut().take(got.len) {
                    if let Some(c) = c.take() {
                        source.complete(c);
                    }
                }
            }
            if let Step::Done(pass) = step {
                t.completions = run.handled as u64;
                return pass;
            }
        }
    }

    /// One locked stretch of a notification-driven pass.
    fn drain_step<S: CompletionSource>(
        &self,
        s: &mut Stretch<'_, '_, S>,
        run: &mut PassState,
        t: &mut Tally,
    ) -> Step {
        loop {
            let want = s.chunk(run.left);
            let n = s.take(want);
            run.took(n);
            if n == want {
                if run.left > 0 {
                    // The collection buffer is full: handle these, come back.
                    return Step::More;
                }
                if s.q.pending() {
                    t.budget_exhausted += 1;
                    return Step::Done(Pass::Reschedule);
                }
            }

            // Empty: re-arm, and look once more where completions may have
            // slipped in between the empty poll and the re-arm.
            t.rearms += 1;
            let armed = s.q.arm();
            if armed == Armed::Quiet {
                return Step::Done(Pass::Armed);
            }
            if run.left == 0 {
                // No budget left for the look: run again rather than strand one.
                t.budget_exhausted += 1;
                return Step::Done(Pass::Reschedule);
            }
            t.post_arm_polls += 1;
            let want = s.chunk(run.left);
            let caught = s.take(want);
            t.post_arm += caught as u64;
            run.took(caught);
            if caught == 0 {
                // `MaybeMissed` with nothing visible yet: look again soon.
                return Step::Done(match armed {
                    Armed::MaybeMissed => Pass::Reschedule,
                    _ => Pass::Armed,
                });
            }
            if run.left == 0 {
                t.budget_exhausted += 1;
                return Step::Done(Pass::Reschedule);
            }
            // More slipped in: keep draining with the notification off.
            s.q.disarm();
            if caught == want {
                return Step::More;
            }
        }
    }

    /// One locked stretch of a busy-polling pass at time `now`.
    fn poll_step<S: CompletionSource>(
        &self,
        s: &mut Stretch<'_, '_, S>,
        run: &mut PassState,
        t: &mut Tally,
        now: i64,
    ) -> Step {
        let want = s.chunk(run.left);
        let n = s.take(want);
        run.took(n);
        if n == want && run.left > 0 {
            return Step::More;
        }
        if run.handled > 0 {
            self.last_active.store(now, Relaxed);
            if run.left == 0 && s.q.pending() {
                t.budget_exhausted += 1;
            }
            return Step::Done(Pass::Polling);
        }
        if now - self.last_active.load(Relaxed) < self.idle.as_nanos() {
            return Step::Done(Pass::Polling);
        }

        // Idle: leave the polling set, re-arm, and poll one final time.
        t.idle_drops += 1;
        self.clear(POLLING);
        t.rearms += 1;
        let armed = s.q.arm();
        if armed == Armed::Quiet {
            return Step::Done(Pass::Armed);
        }
        t.post_arm_polls += 1;
        let caught = s.take(s.chunk(run.left));
        t.post_arm += caught as u64;
        run.took(caught);
        if caught == 0 && armed == Armed::Unchecked {
            return Step::Done(Pass::Armed);
        }
        // Something raced with leaving: stay in the set.
        s.q.disarm();
        self.last_active.store(now, Relaxed);
        self.set(POLLING);
        Step::Done(Pass::Polling)
    }

    /// Takes the `RUNNING` bit; when another pass holds it, asks that pass to
    /// hand over and returns `false`.
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

    /// Publishes the pass's counters and drops the `RUNNING` bit. When a pass
    /// was requested meanwhile, a pass that would have returned
    /// [`Pass::Armed`] hands over: it returns [`Pass::Reschedule`] (or
    /// [`Pass::Polling`] for a source in the polling set) instead.
    fn leave(&self, pass: Pass, t: &Tally) -> Pass {
        let c = &self.counters;
        bump(&c.passes, 1);
        bump(&c.completions, t.completions);
        bump(&c.locks, t.locks);
        bump(&c.budget_exhausted, t.budget_exhausted);
        bump(&c.rearms, t.rearms);
        bump(&c.post_arm_polls, t.post_arm_polls);
        bump(&c.post_arm, t.post_arm);
        bump(&c.idle_drops, t.idle_drops);

        let mut rerun = false;
        let mut old = self.state.load(Relaxed);
        loop {
            if old & RERUN != 0 {
                // Take the request while still the owner, so that the hand-over
                // count keeps its single writer.
                match self.state.cmpxchg(old, old & !RERUN, Full) {
                    Ok(_) => {
                        if !rerun && pass == Pass::Armed {
                            bump(&c.reruns, 1);
                        }
                        rerun = true;
                        old &= !RERUN;
                    }
                    Err(cur) => old = cur,
                }
                continue;
            }
            // Full ordering: the counters above are visible to the next owner,
            // and a concurrent `enter()` either sees `RUNNING` clear or has
            // set `RERUN`, which makes this exchange fail and go round again.
            match self.state.cmpxchg(old, old & !RUNNING, Full) {
                Ok(_) => break,
                Err(cur) => old = cur,
            }
        }
        match pass {
            Pass::Armed if rerun && old & POLLING != 0 => Pass::Polling,
            Pass::Armed if rerun => Pass::Reschedule,
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
    /// Every change of `state` is a `Full` compare-and-exchange, so the state
    /// changes are totally ordered: a pass that clears `RUNNING` in `leave()`
    /// either sees the `RERUN` set by a concurrent `enter()`, or that
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

/// Budget accounting of one pass.
struct PassState {
    left: usize,
    handled: usize,
}

impl PassState {
    fn took(&mut self, n: usize) {
        self.left -= n;
        self.handled += n;
    }
}

/// One locked stretch of a pass: the source, its locked queue, and where
/// completions go when they are handled after the lock is dropped.
struct Stretch<'s, 'q, S: CompletionSource> {
    source: &'s S,
    q: &'q mut S::Queue<'s>,
    /// `None` when completions are handled under the lock.
    got: Option<&'q mut Collected<S::Completion>>,
}

impl<S: CompletionSource> Stretch<'_, '_, S> {
    /// Most this stretch may take with `left` of the budget: all of it when
    /// completions are handled under the lock, else what the buffer holds.
    fn chunk(&self, left: usize) -> usize {
        match &self.got {
            None => left,
            Some(got) => left.min(got.room()),
        }
    }

    /// Takes completions until the queue is empty or `max` were taken;
    /// returns how many were.
    fn take(&mut self, max: usize) -> usize {
        let mut total = 0;
        while total < max {
            let (source, got) = (self.source, &mut self.got);
            let mut n = 0;
            self.q.poll(max - total, |c| {
                n += 1;
                let overflow = match got.as_mut() {
                    None => Err(c),
                    Some(g) => g.push(c),
                };
                // Handled under the lock by choice, or more than asked for:
                // handle it now rather than lose it.
                if let Err(c) = overflow {
                    source.complete(c);
                }
            });
            if n == 0 {
                break;
            }
            total += n;
        }
        total.min(max)
    }
}

#[macros::kunit_tests(rust_completion_batch)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// How the fake's `arm` reports.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Report {
        /// `Quiet` when empty, `MaybeMissed` otherwise (`virtqueue_enable_cb()`).
        Exact,
        /// Always `Unchecked`.
        Never,
    }

    /// What `complete` does besides checking the order.
    #[derive(Clone, Copy)]
    enum Nested {
        /// Calls `run`, as an interrupt on another CPU would.
        Run,
        /// Calls `poll` at the given time.
        Poll(Instant<Monotonic>),
        /// The notification fires in busy-polling mode: join, then `run`.
        JoinRun(Instant<Monotonic>),
    }

    /// A scripted completion queue. Completions are sequence numbers;
    /// `[taken, produced)` are queued, `handled` is the next one expected.
    /// `LOCKED` is its [`CompletionSource::COMPLETE_LOCKED`].
    struct Fake<const LOCKED: bool> {
        b: Batcher,
        produced: Cell<u32>,
        taken: Cell<u32>,
        handled: Cell<u32>,
        /// A completion was handled twice or out of order.
        disorder: Cell<bool>,
        /// The queue's lock is held.
        locked: Cell<bool>,
        /// A completion was handled on the wrong side of the lock, or the
        /// lock was taken while held.
        lock_misuse: Cell<bool>,
        /// Completions taken since the last `reset_taken`.
        taken_in_pass: Cell<u32>,
        /// The notification is armed.
        armed: Cell<bool>,
        /// Completions that arrive after the empty poll, just before the re-arm
        /// takes effect: they raise no notification.
        arm_inject: Cell<u32>,
        /// Completions the device has written but not yet made visible: `arm`
        /// reports them as missed, `poll` cannot see them.
        invisible: Cell<u32>,
        report: Report,
        /// `pending` can look at the queue (`virtqueue_more_used()` style).
        peeks: bool,
        nested: Cell<Option<Nested>>,
        nested_pass: Cell<Option<Pass>>,
    }

    impl<const LOCKED: bool> Fake<LOCKED> {
        fn new(budget: usize, report: Report, peeks: bool) -> Self {
            Self {
                b: Batcher::new(Config {
                    budget,
                    idle: Delta::from_millis(1),
                }),
                produced: Cell::new(0),
                taken: Cell::new(0),
                handled: Cell::new(0),
                disorder: Cell::new(false),
                locked: Cell::new(false),
                lock_misuse: Cell::new(false),
                taken_in_pass: Cell::new(0),
                armed: Cell::new(false),
                arm_inject: Cell::new(0),
                invisible: Cell::new(0),
                report,
                peeks,
                nested: Cell::new(None),
                nested_pass: Cell::new(None),
            }
        }

        /// The device adds `n` completions; returns whether that raised a
        /// notification.
        fn produce(&self, n: u32) -> bool {
            self.produced.set(self.produced.get() + n);
            n > 0 && self.armed.replace(false)
        }

        fn queued(&self) -> u32 {
            self.produced.get() - self.taken.get()
        }

        /// Runs a pass; returns it, the completions it handled and the
        /// completions it took from the queue.
        fn pass(&self) -> (Pass, u32, u32) {
            let before = self.handled.get();
            self.taken_in_pass.set(0);
            let p = self.b.run(self);
            (p, self.handled.get() - before, self.taken_in_pass.get())
        }

        /// Runs passes until one returns `Armed`; returns how many ran and
        /// the most completions one of them took.
        fn until_armed(&self) -> (u32, u32) {
            let (mut passes, mut most) = (0, 0);
            loop {
                let (p, _, took) = self.pass();
                passes += 1;
                most = most.max(took);
                if p == Pass::Armed || passes > 10_000 {
                    return (passes, most);
                }
            }
        }
    }

    struct FakeQueue<'a, const LOCKED: bool>(&'a Fake<LOCKED>);

    impl<const LOCKED: bool> Drop for FakeQueue<'_, LOCKED> {
        fn drop(&mut self) {
            self.0.locked.set(false);
        }
    }

    impl<const LOCKED: bool> CompletionQueue for FakeQueue<'_, LOCKED> {
        type Completion = u32;

        fn poll(&mut self, max: usize, mut sink: impl FnMut(u32)) -> usize {
            let f = self.0;
            let n = f.queued().min(max as u32);
            for i in 0..n {
                sink(f.taken.get() + i);
            }
            f.taken.set(f.taken.get() + n);
            f.taken_in_pass.set(f.taken_in_pass.get() + n);
            n as usize
        }

        fn arm(&mut self) -> Armed {
            let f = self.0;
            let k = f.arm_inject.replace(0);
            f.produced.set(f.produced.get() + k);
            f.armed.set(true);
            match f.report {
                Report::Exact if f.queued() > 0 || f.invisible.get() > 0 => Armed::MaybeMissed,
                Report::Exact => Armed::Quiet,
                Report::Never => Armed::Unchecked,
            }
        }

        fn disarm(&mut self) {
            self.0.armed.set(false);
        }

        fn pending(&mut self) -> bool {
            !self.0.peeks || self.0.queued() > 0
        }
    }

    impl<const LOCKED: bool> CompletionSource for Fake<LOCKED> {
        type Completion = u32;
        type Queue<'a> = FakeQueue<'a, LOCKED>;
        const COMPLETE_LOCKED: bool = LOCKED;

        fn lock(&self) -> FakeQueue<'_, LOCKED> {
            if self.locked.replace(true) {
                self.lock_misuse.set(true);
            }
            FakeQueue(self)
        }

        fn complete(&self, c: u32) {
            if self.locked.get() != LOCKED {
                self.lock_misuse.set(true);
            }
            if c != self.handled.get() {
                self.disorder.set(true);
            }
            self.handled.set(c + 1);
            let nested = match self.nested.take() {
                Some(Nested::Run) => self.b.run(self),
                Some(Nested::Poll(now)) => self.b.poll(self, now),
                Some(Nested::JoinRun(now)) => {
                    self.b.join_polling(now);
                    self.b.run(self)
                }
                None => return,
            };
            self.nested_pass.set(Some(nested));
        }
    }

    #[test]
    fn budget_is_respected() {
        let f = Fake::<false>::new(8, Report::Exact, true);
        f.produce(100);
        let (passes, most) = f.until_armed();
        assert_eq!(passes, 13);
        assert_eq!(most, 8);
        assert_eq!(f.handled.get(), 100);
        assert!(!f.disorder.get());
        assert!(!f.lock_misuse.get());
        assert_eq!(
            f.b.stats(),
            Stats {
                passes: 13,
                completions: 100,
                locks: 13,
                budget_exhausted: 12,
                rearms: 1,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn one_lock_hold_per_pass() {
        // Handled under the lock: one hold whatever the budget.
        let f = Fake::<true>::new(1000, Report::Exact, true);
        f.produce(100);
        assert_eq!(f.pass(), (Pass::Armed, 100, 100));
        assert_eq!(f.b.stats().locks, 1);
        assert!(!f.lock_misuse.get());
        assert!(!f.disorder.get());

        // Handled unlocked: one hold per `COLLECT` completions, and the last
        // one also re-arms.
        let f = Fake::<false>::new(1000, Report::Exact, true);
        f.produce(100);
        assert_eq!(f.pass(), (Pass::Armed, 100, 100));
        assert_eq!(f.b.stats().locks, 100u64.div_ceil(COLLECT as u64));
        assert!(!f.lock_misuse.get());
        assert!(!f.disorder.get());

        // Within `COLLECT`: one hold either way.
        let f = Fake::<false>::new(COLLECT, Report::Exact, true);
        f.produce(COLLECT as u32);
        assert_eq!(f.pass(), (Pass::Armed, COLLECT as u32, COLLECT as u32));
        assert_eq!(f.b.stats().locks, 1);
    }

    #[test]
    fn reschedule_exactly_when_completions_remain() {
        for (queued, want) in [
            (0, Pass::Armed),
            (7, Pass::Armed),
            (8, Pass::Armed),
            (9, Pass::Reschedule),
        ] {
            let f = Fake::<false>::new(8, Report::Exact, true);
            f.produce(queued);
            let (p, n, _) = f.pass();
            assert_eq!(p, want);
            assert_eq!(n, queued.min(8));
            assert_eq!(
                f.b.stats().budget_exhausted,
                u64::from(want == Pass::Reschedule)
            );
        }
        // A source that cannot look must assume more when the budget ran out.
        let f = Fake::<false>::new(8, Report::Exact, false);
        f.produce(8);
        assert_eq!(f.pass(), (Pass::Reschedule, 8, 8));
        assert_eq!(f.pass(), (Pass::Armed, 0, 0));
    }

    #[test]
    fn race_before_rearm_is_caught() {
        for budget in [1usize, 2, 4, 8, 32, 33, 100] {
            for queued in [0u32, 1, 7, 8, 9, 31, 64] {
                for injected in [1u32, 2, 8, 40] {
                    for (report, peeks) in [
                        (Report::Exact, true),
                        (Report::Never, false),
                        (Report::Never, true),
                    ] {
                        let f = Fake::<false>::new(budget, report, peeks);
                        f.produce(queued);
                        // The completions arrive at the first re-arm of the pass sequence.
                        f.arm_inject.set(injected);
                        let (passes, most) = f.until_armed();
                        // Every completion handled once and the queue left empty and armed,
                        // without waiting for a notification (none was raised).
                        assert!(passes <= 10_000);
                        assert_eq!(f.handled.get(), queued + injected);
                        assert_eq!(f.queued(), 0);
                        assert!(f.armed.get());
                        assert!(!f.disorder.get());
                        assert!(!f.lock_misuse.get());
                        assert!(most as usize <= budget);
                        let s = f.b.stats();
                        assert_eq!(s.completions, u64::from(queued + injected));
                        // Caught by the post-arm poll unless the budget was spent.
                        assert!(s.post_arm > 0 || s.budget_exhausted > 0);
                    }
                }
            }
        }
    }

    #[test]
    fn post_arm_poll_only_where_it_can_find_something() {
        // A source that cannot tell: the look after every re-arm.
        let f = Fake::<false>::new(8, Report::Never, true);
        f.produce(3);
        f.arm_inject.set(2);
        assert_eq!(f.pass(), (Pass::Armed, 5, 5));
        assert_eq!(
            f.b.stats(),
            Stats {
                passes: 1,
                completions: 5,
                locks: 1,
                rearms: 2,
                post_arm_polls: 2,
                post_arm: 2,
                ..Stats::default()
            }
        );
        // Armed and empty: the next completion raises a notification.
        assert!(f.produce(1));

        // A source that reports misses: a look only after a reported miss.
        let f = Fake::<false>::new(8, Report::Exact, true);
        f.produce(3);
        f.arm_inject.set(2);
        assert_eq!(f.pass(), (Pass::Armed, 5, 5));
        let s = f.b.stats();
        assert_eq!((s.rearms, s.post_arm_polls, s.post_arm), (2, 1, 2));
        f.produce(4);
        assert_eq!(f.pass(), (Pass::Armed, 4, 4));
        let s = f.b.stats();
        assert_eq!((s.rearms, s.post_arm_polls, s.post_arm), (3, 1, 2));
    }

    #[test]
    fn missed_but_not_yet_visible_reschedules() {
        let f = Fake::<false>::new(8, Report::Exact, true);
        f.produce(2);
        // The re-arm reports a miss whose completion is not visible yet.
        f.invisible.set(1);
        assert_eq!(f.pass(), (Pass::Reschedule, 2, 2));
        let s = f.b.stats();
        assert_eq!((s.post_arm_polls, s.post_arm), (1, 0));
        // It becomes visible; the rescheduled pass finds it.
        f.invisible.set(0);
        f.produce(1);
        assert_eq!(f.pass(), (Pass::Armed, 1, 1));
        assert_eq!(f.queued(), 0);
    }

    #[test]
    fn budget_zero_is_one() {
        let f = Fake::<false>::new(0, Report::Exact, true);
        assert_eq!(f.b.budget(), 1);
        f.produce(2);
        assert_eq!(f.pass(), (Pass::Reschedule, 1, 1));
        assert_eq!(f.pass(), (Pass::Armed, 1, 1));
        assert_eq!(Config::from_param(0).budget, usize::MAX);
        assert_eq!(Config::from_param(5).budget, 5);
    }

    #[test]
    fn concurrent_run_is_deferred_not_lost() {
        let f = Fake::<false>::new(8, Report::Exact, true);
        f.produce(2);
        f.nested.set(Some(Nested::Run));
        // The nested call finds a pass running: it is deferred, and the
        // running pass, which would have ended armed, hands over.
        assert_eq!(f.pass(), (Pass::Reschedule, 2, 2));
        assert_eq!(f.nested_pass.get(), Some(Pass::Deferred));
        assert_eq!(f.b.stats().reruns, 1);
        assert_eq!(f.pass(), (Pass::Armed, 0, 0));
        assert_eq!(f.b.stats().passes, 2);
        assert_eq!(f.b.stats().reruns, 1);
    }

    #[test]
    fn poll_is_deferred_while_a_pass_runs() {
        let f = Fake::<false>::new(8, Report::Exact, true);
        let t0 = Instant::<Monotonic>::now();
        assert!(f.b.join_polling(t0));
        f.produce(3);
        f.nested.set(Some(Nested::Poll(t0)));
        f.taken_in_pass.set(0);
        assert_eq!(f.b.poll(&f, t0), Pass::Polling);
        assert_eq!(f.nested_pass.get(), Some(Pass::Deferred));
        assert_eq!(f.handled.get(), 3);
        assert_eq!(f.b.stats().passes, 1);
        assert!(!f.disorder.get());
    }

    #[test]
    fn hand_over_keeps_a_joined_source_polling() {
        let f = Fake::<false>::new(8, Report::Exact, true);
        let t0 = Instant::<Monotonic>::now();
        f.produce(1);
        // While the notification pass runs, the source's notification fires
        // in busy-polling mode: it joins, and its `run` is deferred.
        f.nested.set(Some(Nested::JoinRun(t0)));
        assert_eq!(f.pass(), (Pass::Polling, 1, 1));
        assert_eq!(f.nested_pass.get(), Some(Pass::Deferred));
        assert!(f.b.is_polling());
        let s = f.b.stats();
        assert_eq!((s.reruns, s.joins), (1, 1));
    }

    #[test]
    fn idle_source_leaves_and_rejoins_polling() {
        let f = Fake::<false>::new(8, Report::Never, true);
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
        assert!(f.produce(1));
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
        assert!(!f.lock_misuse.get());
        assert_eq!(
            f.b.stats(),
            Stats {
                passes: 5,
                completions: 6,
                locks: 5,
                rearms: 2,
                post_arm_polls: 2,
                post_arm: 2,
                idle_drops: 2,
                joins: 2,
                ..Stats::default()
            }
        );
    }
}
