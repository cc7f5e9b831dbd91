// SPDX-License-Identifier: GPL-2.0

//! Completion threads: one per CPU that some device uses, spawned when the
//! first such device appears. Every response of a device goes to
//! the same thread, chosen when the device is created, so the packet handler
//! finds it with one index. A thread drains its queue through the
//! completion-batching helper, copies read data into the request and ends
//! requests. `single_thread=1` uses one thread for every device.

use kernel::{
    completion_batch::{
        Armed,
        Batcher,
        CompletionQueue,
        CompletionSource,
        Config,
        Pass, //
    },
    cpu::{self, CpuId},
    kthread::{Context, Kthread},
    net::skbuff::RxSkBuff,
    new_condvar, new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, CondVar, Mutex, SpinLockIrq, SpinLockIrqGuard,
    },
    time::msecs_to_jiffies,
};

use crate::{
    aoe::Aoe,
    dev::{Dev, Life, DISK_WORK},
    frame::Job,
    module_parameters,
    ring::Ring,
    stats::Counter,
    tx::{pump, Alloc},
    wire::{self, Ata},
};

/// A response waiting for its completion thread.
pub(crate) struct Done {
    pub(crate) dev: Arc<Dev>,
    pub(crate) frame: usize,
    /// The ATA status, read by the packet handler.
    pub(crate) ok: bool,
    pub(crate) skb: RxSkBuff,
}

pub(crate) struct ComplQueue {
    pub(crate) items: Ring<Done>,
    pub(crate) stop: bool,
}

/// A completion thread's queue and counters.
///
/// Lock order: `Compl::q` is a leaf; `Compl::thread` is taken alone.
#[pin_data]
pub(crate) struct Compl {
    pub(crate) cpu: CpuId,
    #[pin]
    pub(crate) q: SpinLockIrq<ComplQueue>,
    #[pin]
    pub(crate) wait: CondVar,
    pub(crate) batcher: Batcher,
    pub(crate) completed: Counter,
    pub(crate) running: Atomic<bool>,
    #[pin]
    pub(crate) thread: Mutex<Option<Kthread>>,
}

impl Compl {
    /// The (not yet started) thread of CPU `cpu`.
    pub(crate) fn new(cpu: CpuId) -> impl PinInit<Self, Error> {
        try_pin_init!(Compl {
            cpu,
            q <- new_spinlock_irq!(
                ComplQueue { items: Ring::new(), stop: false },
                "raoe::Compl::q"
            ),
            wait <- new_condvar!("raoe::Compl::wait"),
            batcher: Batcher::new(Config::from_param(module_parameters::budget.value())),
            completed: Counter::default(),
            running: Atomic::new(false),
            thread <- new_mutex!(None, "raoe::Compl::thread"),
        })
    }

    /// Stops the thread after it drained its queue; completes what is left.
    pub(crate) fn stop(&self, aoe: &Aoe) {
        self.q.lock().stop = true;
        self.wait.notify_all();
        drop(self.thread.lock().take());
        self.running.store(false, Relaxed);
        while let Some(d) = self.q.lock().items.pop() {
            complete(aoe, d);
        }
    }
}

impl Aoe {
    /// The completion thread of device number `index`: the `index % n`-th
    /// online CPU's (`minor % ncpus`), or the first with
    /// `single_thread=1`. Chosen once, when the device is created.
    pub(crate) fn pick_thread(&self, index: usize) -> usize {
        if module_parameters::single_thread.value() {
            return 0;
        }
        let n = cpu::num_online() as usize;
        if n == 0 {
            return 0;
        }
        let k = index % n;
        self.compl
            .iter()
            .enumerate()
            .filter(|(_, c)| cpu::online(c.cpu))
            .nth(k)
            .map_or(0, |(i, _)| i)
    }

    /// Whether a live device's completion thread is not running yet.
    pub(crate) fn missing_threads(&self) -> bool {
        self.devs
            .lock()
            .iter()
            .any(|d| !self.compl[d.compl].running.load(Relaxed))
    }

    /// Starts the completion threads that live devices use and that are not
    /// running (work item: spawning sleeps). Until its thread runs, a
    /// device's responses wait in the thread's queue.
    pub(crate) fn spawn_threads(this: &Arc<Self>) {
        for (i, c) in this.compl.iter().enumerate() {
            if c.running.load(Relaxed) || !this.devs.lock().iter().any(|d| d.compl == i) {
                continue;
            }
            let mut slot = c.thread.lock();
            if slot.is_some() {
                continue;
            }
            // A CPU that went offline since: the thread starts unbound and
            // moves to its CPU when the CPU comes back.
            let cpu = cpu::online(c.cpu).then_some(c.cpu);
            let aoe = this.clone();
            match Kthread::spawn(fmt!("raoe_compl/{}", i), cpu, move |ctx| {
                compl_thread(&aoe, i, ctx)
            }) {
                Ok(t) => {
                    *slot = Some(t);
                    c.running.store(true, Relaxed);
                }
                Err(e) => pr_warn!("cannot start completion thread {}: {:?}\n", i, e),
            }
        }
    }
}

/// A completion thread's queue as a completion source.
struct ComplSource<'a> {
    aoe: &'a Aoe,
    c: &'a Compl,
}

/// A completion thread's queue with its lock held, for one batcher pass.
struct LockedCompl<'a> {
    q: SpinLockIrqGuard<'a, ComplQueue>,
}

impl CompletionQueue for LockedCompl<'_> {
    type Completion = Done;

    fn poll(&mut self, max: usize, mut sink: impl FnMut(Done)) -> usize {
        let mut n = 0;
        while n < max {
            match self.q.items.pop() {
                Some(d) => sink(d),
                None => break,
            }
            n += 1;
        }
        n
    }

    fn arm(&mut self) -> Armed {
        // The producer queues under this lock and then wakes us, so a completion queued after
        // this check is never missed.
        if self.q.items.is_empty() {
            Armed::Quiet
        } else {
            Armed::MaybeMissed
        }
    }

    fn pending(&mut self) -> bool {
        !self.q.items.is_empty()
    }
}

impl CompletionSource for ComplSource<'_> {
    type Completion = Done;
    type Queue<'b>
        = LockedCompl<'b>
    where
        Self: 'b;

    fn lock(&self) -> LockedCompl<'_> {
        LockedCompl { q: self.c.q.lock() }
    }

    /// Called after the queue's lock is dropped: receive handlers keep queueing meanwhile.
    fn complete(&self, d: Done) {
        complete(self.aoe, d);
        self.c.completed.inc();
    }
}

/// Reads and parses the IDENTIFY data of a response, `at` bytes into it.
fn read_identify(skb: &RxSkBuff, at: usize) -> Option<(wire::Identity, [u8; wire::SECTOR])> {
    let mut id = [0u8; wire::SECTOR];
    skb.read(at, &mut id).ok()?;
    let parsed = wire::parse_identify(&id)?;
    wire::fix_identify_strings(&mut id);
    Some((parsed, id))
}

/// Processes one response: data into the request, frame back to the pool.
pub(crate) fn complete(aoe: &Aoe, d: Done) {
    let dev = d.dev;
    let cmd = {
        let mut st = dev.st.lock();
        // Not answered any more: failed meanwhile (the device went down).
        let Some(c) = st.frames.get_mut(d.frame).and_then(|f| f.take_answered()) else {
            return;
        };
        st.nout -= 1;
        c
    };
    // The data follows the headers; it is copied out of the buffer, wherever
    // the buffer holds it.
    let data_at = wire::ata_len(0);
    match cmd.job {
        Job::Io(piece) => {
            let ok = d.ok
                && match cmd.ata {
                    Ata::Read { .. } => piece.req.copy_in(&piece.range, &d.skb, data_at).is_ok(),
                    _ => true,
                };
            if !ok {
                dev.stats.failed.inc();
                aoe.err.post(format_args!(
                    "{:>15} e{}.{} cmd={:?}",
                    "ata error", dev.addr.major, dev.addr.minor, cmd.ata
                ));
            }
            piece.finish(ok);
        }
        Job::Identify => match d.ok.then(|| read_identify(&d.skb, data_at)).flatten() {
            Some((id, raw)) => {
                {
                    let mut st = dev.st.lock();
                    st.sectors = id.sectors;
                    st.lba48 = id.lba48;
                    st.ident = raw;
                    st.chs = id.chs;
                    if st.life == Life::Identifying {
                        st.life = Life::Up;
                    }
                }
                let _ = dev.tx.wq.enqueue::<_, DISK_WORK>(dev.clone());
            }
            None => {
                pr_warn!(
                    "e{}.{}: bad IDENTIFY response\n",
                    dev.addr.major,
                    dev.addr.minor
                );
                dev.st.lock().identify_due = true;
            }
        },
    }
    // Refill the window here, without waking another thread.
    pump(dev.as_arc_borrow(), Alloc::Atomic);
}

/// A completion thread: drains its queue in budgeted passes.
fn compl_thread(aoe: &Arc<Aoe>, index: usize, ctx: &Context) {
    let c = &aoe.compl[index];
    let src = ComplSource { aoe, c };
    let mut passes = 0u32;
    loop {
        match c.batcher.run(&src) {
            Pass::Reschedule | Pass::Deferred | Pass::Polling => {
                kernel::task::might_sleep();
                passes = passes.wrapping_add(1);
                if passes % 64 == 0 {
                    kernel::processor::cpu_relax();
                }
                continue;
            }
            Pass::Armed => {}
        }
        // Come back to our CPU after it returned from being offline.
        if CpuId::current() != c.cpu && cpu::online(c.cpu) {
            let _ = ctx.set_cpu(c.cpu);
        }
        let mut q = c.q.lock();
        while q.items.is_empty() && !q.stop {
            let _ = c
                .wait
                .wait_interruptible_timeout(&mut q, msecs_to_jiffies(1000));
            if ctx.should_stop() {
                break;
            }
        }
        if q.items.is_empty() && (q.stop || ctx.should_stop()) {
            return;
        }
    }
}
