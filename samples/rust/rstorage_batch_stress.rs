// SPDX-License-Identifier: GPL-2.0

//! Stress test of [`kernel::completion_batch`] with real concurrency.
//!
//! Producers, work items bound to each possible CPU, push numbered completions
//! into a ring that stands for a device's completion queue. Pushing into the
//! ring while its notification is armed "raises the interrupt": it disarms the
//! ring and queues the consumer work item, which drains the ring with a
//! [`Batcher`] and requeues itself while the batcher asks for it. The consumer
//! checks that every producer's completions arrive exactly once and in order.
//!
//! With `report_missed=false` (the default) the ring's `arm()` never reports
//! missed completions, so anything pushed between the consumer's last empty
//! poll and its re-arm raises no notification and is found only by the
//! batcher's post-arm poll: a bug there strands completions and the run fails.
//!
//! The whole run happens at module load; the module loads only if it passed,
//! and prints its counters either way.

use kernel::{
    completion_batch::{
        Batcher,
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
        Arc, SpinLockIrq,
    },
    time::{
        delay::fsleep,
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
        completions: u32 {
            default: 20000,
            description: "Completions made by each producer",
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
            description: "Busy-poll the ring, leaving polling after this long idle (0: notification mode)",
        },
        report_missed: bool {
            default: false,
            description: "Let arm() report missed completions (false: rely on the post-arm poll)",
        },
        timeout_secs: u32 {
            default: 120,
            description: "Give up after this many seconds",
        },
    },
}

/// Slots in the completion ring.
const RING: usize = 256;
/// Most producers (each has its own sequence counter on the consumer side).
const MAX_PRODUCERS: usize = 64;
/// Completions taken from the ring under one lock hold.
const POLL_BATCH: usize = 32;

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
    #[pin]
    ring: SpinLockIrq<Ring>,
    batcher: Batcher,
    report_missed: bool,
    /// Busy-poll the ring ([`Batcher::poll`]) instead of one pass per notification.
    busy_poll: bool,
    arm_delay: Delta,
    per_producer: u32,
    burst: u32,
    /// Next sequence number expected from each producer.
    next: [Atomic<u32>; MAX_PRODUCERS],
    handled: Atomic<u64>,
    /// Completions seen twice, out of order or from an unknown producer.
    errors: Atomic<u64>,
    notifications: Atomic<u64>,
    reschedules: Atomic<u64>,
    stop: Atomic<bool>,
    wq: OwnedQueue,
    #[pin]
    consumer: Work<Shared>,
}

impl_has_work! {
    impl HasWork<Self> for Shared { self.consumer }
}

impl Shared {
    /// Raises the ring's notification: queue the consumer. In busy-polling
    /// mode the ring first rejoins the polling set.
    fn notify(this: &Arc<Self>) {
        this.notifications.add(1, Relaxed);
        if this.busy_poll && !this.batcher.join_polling(Instant::now()) {
            // Already polling: the poller will find the completion.
            return;
        }
        // Already queued is fine: it has not started, so it will see the ring.
        let _ = this.wq.enqueue(this.clone());
    }
}

impl WorkItem for Shared {
    type Pointer = Arc<Shared>;

    fn run(this: Arc<Shared>) {
        let pass = if this.busy_poll {
            this.batcher.poll(&*this, Instant::now())
        } else {
            this.batcher.run(&*this)
        };
        match pass {
            Pass::Reschedule | Pass::Polling => {
                this.reschedules.add(1, Relaxed);
                let _ = this.wq.enqueue(this.clone());
            }
            Pass::Armed | Pass::Deferred => {}
        }
    }
}

impl CompletionSource for Shared {
    type Completion = u64;

    fn poll(&self, max: usize, mut sink: impl FnMut(u64)) {
        let mut batch = [0u64; POLL_BATCH];
        let n = {
            let mut r = self.ring.lock();
            let n = r.len.min(max).min(POLL_BATCH);
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
    }

    fn complete(&self, c: u64) {
        let (producer, seq) = ((c >> 32) as usize, c as u32);
        match self.next.get(producer) {
            Some(next) if next.load(Relaxed) == seq => next.store(seq + 1, Relaxed),
            _ => self.errors.add(1, Relaxed),
        }
        self.handled.add(1, Relaxed);
    }

    fn arm(&self) -> bool {
        if self.arm_delay.as_nanos() > 0 {
            // The consumer runs in a work item and may sleep here.
            fsleep(self.arm_delay);
        }
        let mut r = self.ring.lock();
        r.armed = true;
        self.report_missed && r.len > 0
    }

    fn disarm(&self) {
        self.ring.lock().armed = false;
    }

    fn pending(&self) -> bool {
        self.ring.lock().len > 0
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
            // possible against the consumer's poll and re-arm.
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
        let per_producer = module_parameters::completions.value();
        let ncpus = nr_cpu_ids();
        let nprod =
            (ncpus * module_parameters::producers_per_cpu.value()).min(MAX_PRODUCERS as u32);
        let shared = Arc::pin_init(
            try_pin_init!(Shared {
                ring <- new_spinlock_irq!(Ring {
                    slots: [0; RING],
                    head: 0,
                    len: 0,
                    armed: true,
                }),
                batcher: Batcher::new(Config {
                    budget: module_parameters::budget.value() as usize,
                    idle: Delta::from_micros(module_parameters::poll_idle_us.value().into()),
                }),
                busy_poll: module_parameters::poll_idle_us.value() > 0,
                report_missed: module_parameters::report_missed.value(),
                arm_delay: Delta::from_micros(module_parameters::arm_delay_us.value().into()),
                per_producer,
                burst: module_parameters::burst.value().max(1),
                next: [const { Atomic::new(0) }; MAX_PRODUCERS],
                handled: Atomic::new(0),
                errors: Atomic::new(0),
                notifications: Atomic::new(0),
                reschedules: Atomic::new(0),
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

        let handled = shared.handled.load(Relaxed);
        let errors = shared.errors.load(Relaxed);
        let left = shared.ring.lock().len;
        let st = shared.batcher.stats();
        pr_info!(
            "{} producers on {} CPUs, budget {}, report_missed {}, busy_poll {}: {} of {} \
             completions handled in {} ms, {} errors, {} left in the ring\n",
            nprod,
            ncpus,
            shared.batcher.budget(),
            shared.report_missed,
            shared.busy_poll,
            handled,
            total,
            took.as_millis(),
            errors,
            left
        );
        pr_info!(
            "stats: passes={} completions={} budget_exhausted={} rearms={} post_arm={} \
             idle_drops={} notifications={} reschedules={}\n",
            st.passes,
            st.completions,
            st.budget_exhausted,
            st.rearms,
            st.post_arm,
            st.idle_drops,
            shared.notifications.load(Relaxed),
            shared.reschedules.load(Relaxed)
        );
        if handled != total || errors != 0 || left != 0 || st.completions != handled {
            pr_err!("FAIL: completions lost, stranded or handled twice\n");
            return Err(EIO);
        }
        if shared.busy_poll && (st.idle_drops == 0 || shared.batcher.is_polling()) {
            pr_err!("FAIL: the idle ring never left the polling set\n");
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
