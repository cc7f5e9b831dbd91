// SPDX-License-Identifier: GPL-2.0

//! Completion: the virtqueue interrupt handler and the drain of the request queues.
//!
//! A request queue's interrupt runs one pass of the shared completion-batching helper
//! ([`kernel::completion_batch`]) over the queue: at most `budget` commands, completed under
//! the queue's lock (one lock hold per pass, as `virtscsi_vq_done()` does). When the budget runs
//! out, the rest is drained by a work item on the same CPU (the drain work).

use crate::{
    events::{
        self,
        Events, //
    },
    probe::{
        Queues,
        Slow, //
    },
    stats::{
        bump,
        QueueStats, //
    },
    steering::TargetQueue,
    submit::Cmd,
    wire,
};
use kernel::{
    completion_batch::{
        Armed,
        Batcher,
        CompletionQueue,
        CompletionSource,
        Pass, //
    },
    cpu::CpuId,
    impl_has_work,
    prelude::*,
    scsi::{
        HostByte,
        OwnedCommand, //
    },
    sync::{
        atomic::{
            Atomic,
            Full,
            Relaxed, //
        },
        Arc, Mutex, SpinLockIrq,
    },
    virtio::virtqueue::{
        Handler,
        QueueGuard,
        Virtqueues, //
    },
    workqueue::{
        OwnedQueue,
        Work,
        WorkItem, //
    },
};

/// Position of the control queue, the event queue and the first request queue among the
/// device's queues.
pub(crate) const VQ_CONTROL: usize = 0;
pub(crate) const VQ_EVENT: usize = 1;
pub(crate) const VQ_REQUEST: usize = 2;

/// Work item ids of [`Completions`].
pub(crate) const DRAIN_WORK: u64 = 0;
pub(crate) const EVENT_WORK: u64 = 1;

/// One request queue: its batcher and counters, alone in their cache lines.
#[repr(align(64))]
pub(crate) struct RequestQueue {
    pub(crate) batcher: Batcher,
    pub(crate) stats: QueueStats,
    /// Request queues (bit per queue) that commands submitted on this blk-mq hardware queue
    /// were added to without a notification of the device: notified at the end of the batch.
    pub(crate) pending_kicks: Atomic<u64>,
    /// Whether a CPU mapped to this queue is online (kept by the CPU hotplug callbacks).
    pub(crate) has_online_cpu: Atomic<bool>,
}

/// The completion side of a device: the handler of its virtqueue interrupts.
#[pin_data]
pub(crate) struct Completions {
    pub(crate) per_target: bool,
    /// Request queues with interrupts; the poll queues follow them.
    pub(crate) nr_irq_queues: usize,
    pub(crate) queues: KVec<RequestQueue>,
    pub(crate) targets: KVec<TargetQueue>,
    /// The request queue of each CPU (`nr_cpu_ids` entries), recorded by `map_queues`.
    pub(crate) cpu_queue: KVec<Atomic<u32>>,
    pub(crate) tmfs: Atomic<u64>,
    pub(crate) host_resets: Atomic<u64>,
    /// A task management function got no answer, and none came since (reset by an answer or a
    /// device reset).
    pub(crate) control_stuck: Atomic<bool>,
    /// Liveness probes (QUERY TASK) of timed-out commands, and those the device answered
    /// without knowing the command.
    pub(crate) probes: Atomic<u64>,
    pub(crate) probes_lost: Atomic<u64>,
    pub(crate) events_handled: Atomic<u64>,
    /// Full rescans after lost events, and the devices they found gone.
    pub(crate) rescans: Atomic<u64>,
    pub(crate) hotunplug_removed: Atomic<u64>,
    /// Request queues whose drain was deferred to the drain work (bit per queue).
    pub(crate) deferred: Atomic<u64>,
    #[pin]
    pub(crate) events: SpinLockIrq<Events>,
    #[pin]
    pub(crate) slow: Mutex<Slow>,
    pub(crate) wq: OwnedQueue,
    #[pin]
    pub(crate) drain_work: Work<Completions, DRAIN_WORK>,
    #[pin]
    pub(crate) event_work: Work<Completions, EVENT_WORK>,
}

impl_has_work! {
    impl HasWork<Self, DRAIN_WORK> for Completions { self.drain_work }
    impl HasWork<Self, EVENT_WORK> for Completions { self.event_work }
}

/// One request queue as a completion source for the batcher.
struct RequestSource<'a> {
    vqs: &'a Virtqueues<Completions>,
    comp: &'a Completions,
    index: usize,
}

/// A request queue with its lock held, for one batcher pass.
struct LockedRequestQueue<'a> {
    vq: QueueGuard<'a, OwnedCommand<Cmd>>,
    /// A poll queue: the device never interrupts for it, so there is nothing to arm.
    polled: bool,
}

impl CompletionQueue for LockedRequestQueue<'_> {
    type Completion = OwnedCommand<Cmd>;

    fn poll(&mut self, max: usize, mut sink: impl FnMut(OwnedCommand<Cmd>)) -> usize {
        let mut n = 0;
        while n < max {
            match self.vq.get_buf() {
                Some((cmd, _len)) => sink(cmd),
                None => break,
            }
            n += 1;
        }
        n
    }

    fn arm(&mut self) -> Armed {
        if self.polled {
            // The next `mq_poll` looks again.
            return Armed::Quiet;
        }
        // `virtqueue_enable_cb()` re-reads the used index after a barrier.
        if self.vq.enable_cb() {
            Armed::Quiet
        } else {
            Armed::MaybeMissed
        }
    }

    fn disarm(&mut self) {
        if !self.polled {
            self.vq.disable_cb();
        }
    }
}

impl CompletionSource for RequestSource<'_> {
    type Completion = OwnedCommand<Cmd>;
    type Queue<'b>
        = LockedRequestQueue<'b>
    where
        Self: 'b;

    /// As `virtscsi_vq_done()`: commands are completed under the queue's lock, so a pass is
    /// one lock hold.
    const COMPLETE_LOCKED: bool = true;

    fn lock(&self) -> LockedRequestQueue<'_> {
        LockedRequestQueue {
            vq: self.vqs.queues().request[self.index].lock(),
            polled: self.index >= self.comp.nr_irq_queues,
        }
    }

    fn complete(&self, cmd: OwnedCommand<Cmd>) {
        self.comp.complete_cmd(self.index, cmd);
    }
}

/// Sets `bits` in a bit mask that another context takes with `xchg(0)`.
///
/// Always a read-modify-write, even when the bits look set: a plain read could return the mask
/// from before the other context took it, and the bits would be lost.
pub(crate) fn set_bits(mask: &Atomic<u64>, bits: u64) {
    let mut old = mask.load(Relaxed);
    while let Err(seen) = mask.cmpxchg(old, old | bits, Full) {
        old = seen;
    }
}

/// The host byte of a virtio-scsi response code.
fn host_byte(response: u8) -> HostByte {
    match response {
        wire::response::OK => HostByte::Ok,
        wire::response::OVERRUN => HostByte::Error,
        wire::response::ABORTED => HostByte::Abort,
        wire::response::BAD_TARGET | wire::response::TARGET_FAILURE => HostByte::BadTarget,
        wire::response::RESET => HostByte::Reset,
        wire::response::BUSY => HostByte::BusBusy,
        wire::response::TRANSPORT_FAILURE => HostByte::TransportDisrupted,
        wire::response::NEXUS_FAILURE => HostByte::Ok,
        _ => HostByte::Error,
    }
}

impl Completions {
    /// Completes a command the device gave back on request queue `queue`; called under the
    /// queue's lock.
    fn complete_cmd(&self, queue: usize, mut cmd: OwnedCommand<Cmd>) {
        // The device gave the command back: its response is ours to read.
        let (target, steered, response, status, resid, sense_len) = {
            let c = cmd.priv_mut();
            let r = wire::cmd_resp(&c.resp);
            (
                c.target,
                c.steered,
                r.response,
                r.status,
                r.resid,
                r.sense.len(),
            )
        };
        let status = if response == wire::response::NEXUS_FAILURE {
            wire::SAM_STAT_RESERVATION_CONFLICT
        } else {
            status
        };
        cmd.set_result(status, host_byte(response));
        if resid != 0 {
            cmd.set_resid(resid);
        }
        if sense_len > 0 {
            // Copied once, from the response into the command's sense buffer.
            cmd.set_sense_from(|c| wire::cmd_resp(&c.resp).sense);
        }
        cmd.done();
        let stats = &self.queues[queue].stats;
        bump(&stats.completed);
        if steered {
            if let Some(t) = self.targets.get(target as usize) {
                // In flight, so the target's queue is this one unless it was re-steered.
                if t.snapshot().1 != queue as u32 {
                    bump(&stats.violations);
                }
                t.release();
            }
        }
    }

    /// Runs one batcher pass over request queue `index`; returns whether work remains.
    pub(crate) fn drain(&self, vqs: &Virtqueues<Completions>, index: usize) -> bool {
        let src = RequestSource {
            vqs,
            comp: self,
            index,
        };
        matches!(self.queues[index].batcher.run(&src), Pass::Reschedule)
    }

    /// `mq_poll`: drains poll queue `index` once, through the batcher (at most `budget`
    /// commands); returns how many commands completed.
    pub(crate) fn poll(&self, vqs: &Virtqueues<Completions>, index: usize) -> u32 {
        let Some(queue) = self.queues.get(index) else {
            return 0;
        };
        let before = queue.stats.completed.load(Relaxed);
        self.drain(vqs, index);
        queue.stats.completed.load(Relaxed).wrapping_sub(before) as u32
    }

    /// Leaves the rest of request queue `index` to the drain work on this CPU.
    fn defer(this: &Arc<Self>, index: usize) {
        set_bits(&this.deferred, 1u64 << (index % 64));
        // Queued already is fine: the pending run sees the bit.
        let _ = this
            .wq
            .enqueue_on::<Arc<Self>, DRAIN_WORK>(CpuId::current(), this.clone());
    }
}

impl WorkItem<DRAIN_WORK> for Completions {
    type Pointer = Arc<Completions>;

    fn run(this: Arc<Completions>) {
        let Some(vqs) = this.slow.lock().vqs.clone() else {
            return;
        };
        let bits = this.deferred.xchg(0, Full);
        for index in 0..this.queues.len() {
            if bits & (1u64 << (index % 64)) != 0 && this.drain(&vqs, index) {
                Completions::defer(&this, index);
            }
        }
    }
}

impl Handler for Completions {
    type Queues = Queues;

    fn reset_done(&self, vqs: &Virtqueues<Self>) {
        crate::error_handling::reset_done(self, vqs);
    }

    fn callback(&self, vqs: &Virtqueues<Self>, index: usize) {
        match index {
            VQ_CONTROL => crate::error_handling::control_done(vqs),
            VQ_EVENT => events::event_done(vqs.handler(), vqs),
            _ => {
                let q = index - VQ_REQUEST;
                // A queue's interrupt handler does not run concurrently with itself.
                bump(&self.queues[q].stats.interrupts);
                if self.drain(vqs, q) {
                    Completions::defer(vqs.handler(), q);
                }
            }
        }
    }
}
