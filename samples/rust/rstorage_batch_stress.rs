// SPDX-License-Identifier: GPL-2.0

//! Stress test of [`kernel::completion_batch`] with real concurrency.
//!
//! Producers, work items bound to each possible CPU, push numbered completions
//! into a ring that stands for a device's completion queue. Pushing into the
//! ring while its notification is armed "raises the interrupt": it disarms the
//! ring, and the producer runs a [`Batcher`] pass at once, on its own CPU, as
//! an interrupt handler does. A pass that asks to be rescheduled queues the
//! consumer work item, bound to another CPU, which runs passes until the
//! batcher says the ring is armed. So passes are started from every CPU at
//! once; the batcher must defer all but one and hand the deferred work over.
//! The completion code checks that every producer's completions arrive exactly
//! once and in order, and that no two passes handle completions at once.
//!
//! `inline=false` keeps the single consumer of earlier versions (the producers
//! only queue it). `broken_handover=true` plays a batcher without the hand-over:
//! a pass that ended with one (its `reruns` count moved) is treated as if it
//! had returned [`Pass::Armed`]; the run must then fail.
//!
//! With `report_missed=false` (the default) the ring's `arm()` never reports
//! missed completions, so anything pushed between the consumer's last empty
//! poll and its re-arm raises no notification and is found only by the
//! batcher's post-arm poll: a bug there strands completions and the run fails.
//!
//! The whole run happens at module load; the module loads only if it passed,
//! and prints its counters either way.

// All unsafe code lives in the kernel crate's abstractions.
#![forbid(unsafe_code)]

use kernel::{
    completion_batch::{
        Armed,
        Batcher,
        CompletionQueue,
        CompletionSource,
        Config,
        Pass, //
    },
    cpu::{
        nr_cpu_ids,
        CpuId, //
    },
    impl_has_work, new_spinlock_irq, new_work,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc, SpinLockIrq, SpinLockIrqGuard,
    },
    time::{
        delay::{
            fsleep,
            udelay, //
        },
        Delta,
        Instant,
        Monotonic, //
    },
    workqueue::{
        OwnedQueue,
        QueueFlags,
        Work,
        WorkItem, //
    },
};

module! {
    type: BatchStress,
    name: "rstorage_batch_stress",
    authors: ["rstorage developers"],
    description: "Stress test of the completion-batching helper",
    license: "GPL",
    params: {
        total: u32 {
            default: 1000000,
            description: "Completions made by all producers together",
        },
        inline: bool {
            default: true,
            description: "Producers run a pass themselves when they raise the notification",
        },
        locked: bool {
            default: false,
            description: "Handle completions under the ring's lock (else collected, after it)",
        },
        broken_handover: bool {
            default: false,
            description: "Drop the hand-over of deferred passes (the run must fail)",
        },
        producers_per_cpu: u32 {
            default: 2,
            description: "Producer work items per possible CPU",
        },
        budget: u32 {
            default: 8,
            description: "Completions per batcher pass",
        },
        burst: u32 {
            default: 4,
            description: "Completions a producer pushes before it requeues itself",
        },
        arm_delay_us: u32 {
            default: 0,
            description: "Delay before each re-arm, widening the race window it must survive",
        },
        expect_post_arm: bool {
            default: false,
            description: "Fail unless the post-arm poll caught at least one completion",
        },
        poll_idle_us: u32 {
            default: 0,
            description: "Busy-poll the ring until idle this long (0: notification mode)",
        },
        report_missed: bool {
            default: false,
            description: "Let arm() report missed completions (false: rely on the post-arm poll)",
        },
        timeout_secs: u32 {
            default: 300,
            description: "Give up after this many seconds",
        },
    },
}

/// Slots in the completion ring.
const RING: usize = 256;
/// Most producers (each has its own sequence counter on the consumer side).
const MAX_PRODUCERS: usize = 64;

/// A completion: producer number in the upper half, its sequence number in
/// the lower half.
fn encode(producer: u32, seq: u32) -> u64 {
    (u64::from(producer) << 32) | u64::from(seq)
}

struct Ring {
    slots: [u64; RING],
    head: usize,
    len: usize,
    armed: bool,
}

impl Ring {
    /// Pushes `c`; returns `None` when full, else whether the push found the
    /// notification armed (and so must raise it).
    fn push(&mut self, c: u64) -> Option<bool> {
        if self.len == RING {
            return None;
        }
        self.slots[(self.head + self.len) % RING] = c;
        self.len += 1;
        Some(core::mem::replace(&mut self.armed, false))
    }
}

#[pin_data]
struct Shared {
    /// The device's side of the queue: producers push under this lock, as a
    /// device writes a used ring without the driver's lock.
    #[pin]
    ring: SpinLockIrq<Ring>,
    /// The driver's queue lock, the one a batcher pass holds.
    #[pin]
    queue: SpinLockIrq<()>,
    batcher: Batcher,
    report_missed: bool,
    /// Busy-poll the ring ([`Batcher::poll`]) instead of one pass per notification.
    busy_poll: bool,
    inline: bool,
    locked: bool,
    broken_handover: bool,
    arm_delay: Delta,
    per_producer: u32,
    burst: u32,
    /// Where the consumer work item runs: not where the first producers run.
    consumer_cpu: CpuId,
    /// Next sequence number expected from each producer.
    next: [Atomic<u32>; MAX_PRODUCERS],
    handled: Atomic<u64>,
    /// Completions seen twice, out of order or from an unknown producer.
    errors: Atomic<u64>,
    /// Completions handled while another pass was handling one.
    overlaps: Atomic<u64>,
    in_complete: Atomic<bool>,
    notifications: Atomic<u64>,
    /// Passes started by a producer, and how many of those were deferred.
    inline_passes: Atomic<u64>,
    deferred: Atomic<u64>,
    reschedules: Atomic<u64>,
    /// Hand-overs dropped by `broken_handover`.
    dropped: Atomic<u64>,
    stop: Atomic<bool>,
    wq: OwnedQueue,
    #[pin]
    consumer: Work<Shared>,
}

impl_has_work! {
    impl HasWork<Self> for Shared { self.consumer }
}

impl Shared {
    /// Raises the ring's notification: run a pass here (or, without
    /// `inline`, queue the consumer). In busy-polling mode the ring first
    /// rejoins the polling set.
    fn notify(this: &Arc<Self>) {
        this.notifications.add(1, Relaxed);
        if this.busy_poll {
            if this.batcher.join_polling(Instant::now()) {
                this.queue_consumer();
            }
            // Already polling: the poller will find the completion.
            return;
        }
        if !this.inline {
            this.queue_consumer();
            return;
        }
        this.inline_passes.add(1, Relaxed);
        match this.pass() {
            Pass::Reschedule | Pass::Polling => this.queue_consumer(),
            Pass::Deferred => {
                this.deferred.add(1, Relaxed);
            }
            Pass::Armed => {}
        }
    }

    fn queue_consumer(self: &Arc<Self>) {
        // Already queued is fine: it has not started, so it will see the ring.
        let _ = self.wq.enqueue_on(self.consumer_cpu, self.clone());
    }

    /// One notification-driven pass with the ring's handling mode.
    fn pass(&self) -> Pass {
        let before = self.batcher.stats().reruns;
        let pass = if self.locked {
            self.batcher.run(&RingSource::<true>(self))
        } else {
            self.batcher.run(&RingSource::<false>(self))
        };
        if self.broken_handover && pass == Pass::Reschedule && self.batcher.stats().reruns != before
        {
            // What a batcher without the hand-over would have returned.
            self.dropped.add(1, Relaxed);
            return Pass::Armed;
        }
        pass
    }

    fn complete(&self, c: u64) {
        if self.in_complete.xchg(true, Relaxed) {
            self.overlaps.add(1, Relaxed);
        }
        let (producer, seq) = ((c >> 32) as usize, c as u32);
        match self.next.get(producer) {
            Some(next) if next.load(Relaxed) == seq => next.store(seq + 1, Relaxed),
            _ => self.errors.add(1, Relaxed),
        }
        self.handled.add(1, Relaxed);
        self.in_complete.store(false, Relaxed);
    }
}

impl WorkItem for Shared {
    type Pointer = Arc<Shared>;

    fn run(this: Arc<Shared>) {
        let pass = if this.busy_poll {
            this.batcher
                .poll(&RingSource::<false>(&this), Instant::now())
        } else {
            this.pass()
        };
        match pass {
            Pass::Reschedule | Pass::Polling => {
                this.reschedules.add(1, Relaxed);
                this.queue_consumer();
            }
            Pass::Deferred => {
                this.deferred.add(1, Relaxed);
            }
            Pass::Armed => {}
        }
    }
}

/// The ring as a completion source; `LOCKED` says where completions are handled.
struct RingSource<'a, const LOCKED: bool>(&'a Shared);

/// The ring with the driver's queue lock held. Each operation takes the
/// device side's lock briefly, as reading a used ring is one barrier-ordered
/// access, so producers can push between any two of them.
struct LockedRing<'a> {
    _queue: SpinLockIrqGuard<'a, ()>,
    shared: &'a Shared,
}

impl CompletionQueue for LockedRing<'_> {
    type Completion = u64;

    fn poll(&mut self, max: usize, mut sink: impl FnMut(u64)) -> usize {
        let mut batch = [0u64; 32];
        let mut done = 0;
        while done < max {
            let n = {
                let mut r = self.shared.ring.lock();
                let n = r.len.min(max - done).min(batch.len());
                for (i, slot) in batch[..n].iter_mut().enumerate() {
                    *slot = r.slots[(r.head + i) % RING];
                }
                r.head = (r.head + n) % RING;
                r.len -= n;
                n
            };
            for &c in &batch[..n] {
                sink(c);
            }
            done += n;
            if n < batch.len() {
                break;
            }
        }
        done
    }

    fn arm(&mut self) -> Armed {
        if self.shared.arm_delay.as_nanos() > 0 {
            // Widen the window between the empty poll and the re-arm.
            udelay(self.shared.arm_delay);
        }
        let mut r = self.shared.ring.lock();
        r.armed = true;
        match (self.shared.report_missed, r.len) {
            (false, _) => Armed::Unchecked,
            (true, 0) => Armed::Quiet,
            (true, _) => Armed::MaybeMissed,
        }
    }

    fn disarm(&mut self) {
        self.shared.ring.lock().armed = false;
    }

    fn pending(&mut self) -> bool {
        self.shared.ring.lock().len > 0
    }
}

impl<const LOCKED: bool> CompletionSource for RingSource<'_, LOCKED> {
    type Completion = u64;
    type Queue<'b>
        = LockedRing<'b>
    where
        Self: 'b;
    const COMPLETE_LOCKED: bool = LOCKED;

    fn lock(&self) -> LockedRing<'_> {
        LockedRing {
            _queue: self.0.queue.lock(),
            shared: self.0,
        }
    }

    fn complete(&self, c: u64) {
        self.0.complete(c);
    }
}

#[pin_data]
struct Producer {
    id: u32,
    cpu: CpuId,
    next: Atomic<u32>,
    shared: Arc<Shared>,
    #[pin]
    work: Work<Producer>,
}

impl_has_work! {
    impl HasWork<Self> for Producer { self.work }
}

impl WorkItem for Producer {
    type Pointer = Arc<Producer>;

    fn run(this: Arc<Producer>) {
        let s = &this.shared;
        let mut seq = this.next.load(Relaxed);
        let end = (seq + s.burst).min(s.per_producer);
        while seq < end {
            // One completion per lock hold, to open as many race windows as
            // possible against the passes' polls and re-arms.
            let pushed = s.ring.lock().push(encode(this.id, seq));
            match pushed {
                None => break,
                Some(raise) => {
                    seq += 1;
                    if raise {
                        Shared::notify(s);
                    }
                }
            }
        }
        this.next.store(seq, Relaxed);
        if seq < s.per_producer && !s.stop.load(Relaxed) {
            let (shared, cpu) = (this.shared.clone(), this.cpu);
            let _ = shared.wq.enqueue_on(cpu, this);
        }
    }
}

struct BatchStress;

impl kernel::Module for BatchStress {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let ncpus = nr_cpu_ids();
        let nprod =
            (ncpus * module_parameters::producers_per_cpu.value()).clamp(1, MAX_PRODUCERS as u32);
        let per_producer = module_parameters::total.value().div_ceil(nprod);
        let shared = Arc::pin_init(
            try_pin_init!(Shared {
                ring <- new_spinlock_irq!(
                    Ring {
                        slots: [0; RING],
                        head: 0,
                        len: 0,
                        armed: true,
                    },
                    "rstorage_batch_stress::ring"
                ),
                queue <- new_spinlock_irq!((), "rstorage_batch_stress::queue"),
                batcher: Batcher::new(Config {
                    budget: module_parameters::budget.value() as usize,
                    idle: Delta::from_micros(module_parameters::poll_idle_us.value().into()),
                }),
                busy_poll: module_parameters::poll_idle_us.value() > 0,
                inline: module_parameters::inline.value(),
                locked: module_parameters::locked.value(),
                broken_handover: module_parameters::broken_handover.value(),
                report_missed: module_parameters::report_missed.value(),
                arm_delay: Delta::from_micros(module_parameters::arm_delay_us.value().into()),
                per_producer,
                burst: module_parameters::burst.value().max(1),
                consumer_cpu: CpuId::from_u32(ncpus - 1).ok_or(EINVAL)?,
                next: [const { Atomic::new(0) }; MAX_PRODUCERS],
                handled: Atomic::new(0),
                errors: Atomic::new(0),
                overlaps: Atomic::new(0),
                in_complete: Atomic::new(false),
                notifications: Atomic::new(0),
                inline_passes: Atomic::new(0),
                deferred: Atomic::new(0),
                reschedules: Atomic::new(0),
                dropped: Atomic::new(0),
                stop: Atomic::new(false),
                wq: OwnedQueue::new(
                    c"rstorage_stress",
                    QueueFlags::PERCPU | QueueFlags::HIGHPRI,
                    0,
                )?,
                consumer <- new_work!("rstorage_batch_stress::consumer"),
            }),
            GFP_KERNEL,
        )?;

        let start = Instant::<Monotonic>::now();
        for id in 0..nprod {
            let cpu = CpuId::from_u32(id % ncpus).ok_or(EINVAL)?;
            let s = shared.clone();
            let producer = Arc::pin_init(
                pin_init!(Producer {
                    id,
                    cpu,
                    next: Atomic::new(0),
                    shared: s,
                    work <- new_work!("rstorage_batch_stress::producer"),
                }),
                GFP_KERNEL,
            )?;
            let _ = shared.wq.enqueue_on(cpu, producer);
        }

        let total = u64::from(nprod) * u64::from(per_producer);
        let limit = Delta::from_secs(module_parameters::timeout_secs.value().into());
        while shared.handled.load(Relaxed) < total && start.elapsed() < limit {
            fsleep(Delta::from_millis(10));
        }
        shared.stop.store(true, Relaxed);
        shared.wq.drain();
        let took = start.elapsed();

        let s = &*shared;
        let handled = s.handled.load(Relaxed);
        let errors = s.errors.load(Relaxed);
        let overlaps = s.overlaps.load(Relaxed);
        let left = s.ring.lock().len;
        let st = s.batcher.stats();
        let deferred = s.deferred.load(Relaxed);
        pr_info!(
            "{} producers on {} CPUs, budget {}, report_missed {}, busy_poll {}, inline {}, \
             locked {}, broken_handover {}: {} of {} completions handled in {} ms, {} errors, \
             {} overlaps, {} left in the ring\n",
            nprod,
            ncpus,
            s.batcher.budget(),
            s.report_missed,
            s.busy_poll,
            s.inline,
            s.locked,
            s.broken_handover,
            handled,
            total,
            took.as_millis(),
            errors,
            overlaps,
            left
        );
        pr_info!(
            "stats: passes={} completions={} locks={} budget_exhausted={} rearms={} \
             post_arm_polls={} post_arm={} reruns={} idle_drops={} joins={}\n",
            st.passes,
            st.completions,
            st.locks,
            st.budget_exhausted,
            st.rearms,
            st.post_arm_polls,
            st.post_arm,
            st.reruns,
            st.idle_drops,
            st.joins
        );
        pr_info!(
            "callers: notifications={} inline_passes={} deferred={} reschedules={} \
             dropped_handovers={}\n",
            s.notifications.load(Relaxed),
            s.inline_passes.load(Relaxed),
            deferred,
            s.reschedules.load(Relaxed),
            s.dropped.load(Relaxed)
        );
        if handled != total && left == 0 && errors == 0 && overlaps == 0 && took >= limit {
            pr_err!(
                "FAIL: time limit of {} ms reached with nothing stranded (too slow a machine?)\n",
                limit.as_millis()
            );
            return Err(ETIMEDOUT);
        }
        if handled != total
            || errors != 0
            || overlaps != 0
            || left != 0
            || st.completions != handled
        {
            pr_err!("FAIL: completions lost, stranded, reordered or handled twice\n");
            return Err(EIO);
        }
        if s.busy_poll && (st.idle_drops == 0 || s.batcher.is_polling()) {
            pr_err!("FAIL: the idle ring never left the polling set\n");
            return Err(EIO);
        }
        if s.inline && !s.busy_poll && (deferred == 0 || st.reruns == 0) {
            pr_err!(
                "FAIL: no concurrency seen (deferred {}, hand-overs {})\n",
                deferred,
                st.reruns
            );
            return Err(EIO);
        }
        if module_parameters::expect_post_arm.value() && st.post_arm == 0 {
            pr_err!("FAIL: the post-arm poll never caught a completion\n");
            return Err(EIO);
        }
        pr_info!("PASS: every completion handled exactly once\n");
        Ok(BatchStress)
    }
}
