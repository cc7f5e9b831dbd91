// SPDX-License-Identifier: GPL-2.0

//! Multiqueue virtio-scsi host driver with per-target queue steering.
//!
//! A Rust counterpart of `drivers/scsi/virtio_scsi.c`: the same device, the same queues (control,
//! event, one or more request queues as blk-mq hardware queues), task management for SCSI error
//! handling and hot-plug events. Two request steering policies (module parameter `steering`):
//!
//! - `1`, per-target (default): see [`steering`]; request-queue interrupts are not managed, so
//!   they follow CPU hot-unplug, and the driver hints their affinity to the CPUs blk-mq maps to
//!   each queue.
//! - `0`, mq: the queue blk-mq chose, with managed interrupt affinity, as the C driver.
//!
//! Request completions are drained by the shared completion-batching helper
//! ([`kernel::completion_batch`]): at most `budget` commands per pass in the interrupt handler,
//! the rest in a work item on the same CPU.

use kernel::{
    completion_batch::{
        Armed,
        Batcher,
        CompletionQueue,
        CompletionSource,
        Config,
        Pass, //
    },
    cpu::CpuId,
    cpumask::CpumaskVar,
    debugfs,
    device::Core,
    impl_has_work, new_mutex, new_spinlock_irq, new_work,
    prelude::*,
    scsi::{
        Command,
        CommandBuffers,
        EhResult,
        Host,
        HostByte,
        HostOps,
        HostRef,
        Limits,
        OwnedCommand,
        QueueMap,
        TimeoutAction, //
    },
    str::CString,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        ArcBorrow,
        Completion,
        Mutex,
        SpinLockIrq,
        SpinLockIrqGuard, //
    },
    virtio::{
        self,
        virtqueue::{
            Affinity,
            Exchange,
            Handler,
            QueueInfo,
            Virtqueue,
            Virtqueues, //
        },
    },
    workqueue::{
        OwnedQueue,
        QueueFlags,
        Work,
        WorkItem, //
    },
};

mod steering;
mod wire;

use steering::{
    Decision,
    TargetQueue, //
};

kernel::module_virtio_driver! {
    type: RVirtioScsi,
    name: "rvirtio_scsi",
    authors: ["rstorage developers"],
    description: "Virtio SCSI HBA driver with per-target queue steering",
    license: "GPL",
    params: {
        steering: u32 {
            default: 1,
            description: "Request steering: 0 = mq (the queue blk-mq chose), 1 = per-target",
        },
        budget: u32 {
            default: 64,
            description: "Completions per pass of the interrupt handler (0 = unbounded)",
        },
        timeout_abort: bool {
            default: false,
            description: "On command timeout start error handling (abort, LUN reset) \
                          instead of waiting for the device",
        },
    },
}

/// Queue index of the control queue, the event queue and the first request queue.
const VQ_CTRL: usize = 0;
const VQ_EVENT: usize = 1;
const VQ_BASE: usize = 2;

/// Event buffers kept posted on the event queue.
const EVENT_BUFS: usize = 8;
/// Events waiting for the event work before the driver falls back to a full rescan.
const EVENT_BACKLOG: usize = 32;

kernel::virtio_device_table!(VIRTIO_SCSI_TABLE, [virtio::DeviceId::new(virtio::id::SCSI)]);

/// Per-command private data: the headers exchanged with the device.
struct Cmd {
    req: [u8; wire::CMD_REQ_SIZE],
    resp: [u8; wire::CMD_RESP_SIZE],
    /// The target, for the steering release at completion.
    target: u32,
    /// Whether the command's target counted it (per-target steering).
    steered: bool,
    /// Set while the device owns the command (error handling checks it).
    in_device: Atomic<bool>,
}

impl Default for Cmd {
    fn default() -> Self {
        Self {
            req: [0; wire::CMD_REQ_SIZE],
            resp: [0; wire::CMD_RESP_SIZE],
            target: 0,
            steered: false,
            in_device: Atomic::new(false),
        }
    }
}

impl CommandBuffers for Cmd {
    fn headers(&mut self) -> (&[u8], &mut [u8]) {
        (&self.req, &mut self.resp)
    }
}

/// A task management request on the control queue.
struct Tmf {
    req: [u8; wire::TMF_REQ_SIZE],
    resp: [u8; 1],
    waiter: Arc<TmfWaiter>,
}

impl Exchange for Tmf {
    fn buffers(&mut self) -> (&[u8], &mut [u8]) {
        (&self.req, &mut self.resp)
    }
}

#[pin_data]
struct TmfWaiter {
    #[pin]
    done: Completion,
    response: Atomic<u32>,
}

/// An event buffer on the event queue.
struct EventBuf([u8; wire::EVENT_SIZE]);

impl Exchange for EventBuf {
    fn buffers(&mut self) -> (&[u8], &mut [u8]) {
        (&[], &mut self.0)
    }
}

/// Adds one to a counter with a single writer (no locked read-modify-write).
fn bump(counter: &Atomic<u64>) {
    counter.store(counter.load(Relaxed) + 1, Relaxed);
}

/// Counters of one request queue.
struct ReqQueue {
    batcher: Batcher,
    submitted: Atomic<u64>,
    completed: Atomic<u64>,
    /// Requests on this queue that blk-mq had mapped to another one.
    steered_in: Atomic<u64>,
    interrupts: Atomic<u64>,
    busy: Atomic<u64>,
}

struct Events {
    pending: KVec<[u8; wire::EVENT_SIZE]>,
    missed: bool,
    stopping: bool,
}

/// What outlives the device's virtqueues for slow-path work; cleared at unbind.
struct Slow {
    vqs: Option<Arc<Virtqueues<Completions>>>,
    host: Option<HostRef>,
}

/// The completion side: handler of the virtqueue interrupts.
#[pin_data]
struct Completions {
    per_target: bool,
    queues: KVec<ReqQueue>,
    targets: KVec<TargetQueue>,
    /// Requests per target and queue (`target * queues.len() + queue`).
    hist: KVec<Atomic<u64>>,
    idle_picks: Atomic<u64>,
    stays: Atomic<u64>,
    resteers: Atomic<u64>,
    /// Completions of steered requests on another queue than their target's: only after a
    /// re-steer (CPU hot-unplug); otherwise the per-target property is broken.
    violations: Atomic<u64>,
    tmfs: Atomic<u64>,
    events_handled: Atomic<u64>,
    /// Request queues whose drain was deferred to `resched_work` (bit per queue).
    resched: Atomic<u64>,
    #[pin]
    events: SpinLockIrq<Events>,
    #[pin]
    slow: Mutex<Slow>,
    wq: OwnedQueue,
    #[pin]
    resched_work: Work<Completions, 0>,
    #[pin]
    event_work: Work<Completions, 1>,
}

impl_has_work! {
    impl HasWork<Self, 0> for Completions { self.resched_work }
    impl HasWork<Self, 1> for Completions { self.event_work }
}

/// One request queue as a completion source for the batcher.
struct ReqSource<'a> {
    vqs: &'a Virtqueues<Completions>,
    comp: &'a Completions,
    index: usize,
}

/// A request queue with its lock held, for one batcher pass.
struct LockedReqQueue<'a> {
    vq: SpinLockIrqGuard<'a, Virtqueue>,
}

impl CompletionQueue for LockedReqQueue<'_> {
    type Completion = OwnedCommand<Cmd>;

    fn poll(&mut self, max: usize, mut sink: impl FnMut(OwnedCommand<Cmd>)) -> usize {
        let mut n = 0;
        while n < max {
            match self.vq.get_buf::<OwnedCommand<Cmd>>() {
                Some((cmd, _len)) => sink(cmd),
                None => break,
            }
            n += 1;
        }
        n
    }

    fn arm(&mut self) -> Armed {
        // `virtqueue_enable_cb()` re-reads the used index after a barrier.
        if self.vq.enable_cb() {
            Armed::Quiet
        } else {
            Armed::MaybeMissed
        }
    }

    fn disarm(&mut self) {
        self.vq.disable_cb();
    }
}

impl CompletionSource for ReqSource<'_> {
    type Completion = OwnedCommand<Cmd>;
    type Queue<'b>
        = LockedReqQueue<'b>
    where
        Self: 'b;

    /// As `virtscsi_vq_done()`: commands are completed under the queue's lock, so a pass is
    /// one lock hold.
    const COMPLETE_LOCKED: bool = true;

    fn lock(&self) -> LockedReqQueue<'_> {
        LockedReqQueue {
            vq: self.vqs.lock(VQ_BASE + self.index),
        }
    }

    fn complete(&self, cmd: OwnedCommand<Cmd>) {
        self.comp.complete_cmd(self.index, cmd);
    }
}

impl Completions {
    fn complete_cmd(&self, queue: usize, mut cmd: OwnedCommand<Cmd>) {
        let (target, steered, response, status, resid, sense_len, sense) = {
            let c = cmd.priv_mut();
            c.in_device.store(false, Relaxed);
            let r = wire::cmd_resp(&c.resp);
            let mut sense = [0u8; wire::SENSE_SIZE];
            if !r.sense.is_empty() {
                sense[..r.sense.len()].copy_from_slice(r.sense);
            }
            (
                c.target,
                c.steered,
                r.response,
                r.status,
                r.resid,
                r.sense.len(),
                sense,
            )
        };
        let host = match response {
            wire::response::OK => HostByte::Ok,
            wire::response::OVERRUN => HostByte::Error,
            wire::response::ABORTED => HostByte::Abort,
            wire::response::BAD_TARGET | wire::response::TARGET_FAILURE => HostByte::BadTarget,
            wire::response::RESET => HostByte::Reset,
            wire::response::BUSY => HostByte::BusBusy,
            wire::response::TRANSPORT_FAILURE => HostByte::TransportDisrupted,
            wire::response::NEXUS_FAILURE => HostByte::Ok,
            _ => HostByte::Error,
        };
        let status = if response == wire::response::NEXUS_FAILURE {
            wire::SAM_STAT_RESERVATION_CONFLICT
        } else {
            status
        };
        cmd.set_result(status, host);
        if resid != 0 {
            cmd.set_resid(resid);
        }
        if sense_len > 0 {
            cmd.set_sense(&sense[..sense_len]);
        }
        cmd.done();
        // Called from `ReqSource::poll`, under the queue's lock.
        bump(&self.queues[queue].completed);
        if steered {
            if let Some(t) = self.targets.get(target as usize) {
                // In flight, so the target's queue is this one unless it was re-steered.
                if t.snapshot().1 != queue as u32 {
                    self.violations.add(1, Relaxed);
                }
                t.release();
            }
        }
    }

    /// Runs one batcher pass over request queue `index`; returns whether work remains.
    fn drain(&self, vqs: &Virtqueues<Completions>, index: usize) -> bool {
        let src = ReqSource {
            vqs,
            comp: self,
            index,
        };
        matches!(self.queues[index].batcher.run(&src), Pass::Reschedule)
    }

    fn defer(this: &Arc<Self>, index: usize) {
        let bit = 1u64 << (index % 64);
        let mut old = this.resched.load(Relaxed);
        while let Err(seen) = this
            .resched
            .cmpxchg(old, old | bit, kernel::sync::atomic::Full)
        {
            old = seen;
        }
        // Queued already is fine: the pending run sees the bit.
        let _ = this
            .wq
            .enqueue_on::<Arc<Self>, 0>(CpuId::current(), this.clone());
    }

    fn event_done(this: &Arc<Self>, vqs: &Virtqueues<Completions>) {
        let mut queued = false;
        let mut kick = false;
        {
            let mut vq = vqs.lock(VQ_EVENT);
            while let Some((buf, _)) = vq.get_buf::<KBox<EventBuf>>() {
                let mut ev = this.events.lock();
                if ev.stopping {
                    continue;
                }
                if ev.pending.push_within_capacity(buf.0).is_err() {
                    ev.missed = true;
                }
                drop(ev);
                queued = true;
                // Re-post the buffer at once; its contents were copied.
                if vq.add_sgs(buf, GFP_ATOMIC).is_ok() {
                    kick = true;
                }
            }
            if kick {
                kick = vq.kick_prepare();
            }
        }
        if kick {
            vqs.notify(VQ_EVENT);
        }
        if queued {
            let _ = this.wq.enqueue::<Arc<Self>, 1>(this.clone());
        }
    }

    fn ctrl_done(vqs: &Virtqueues<Completions>) {
        let mut vq = vqs.lock(VQ_CTRL);
        while let Some((tmf, _)) = vq.get_buf::<KBox<Tmf>>() {
            tmf.waiter.response.store(u32::from(tmf.resp[0]), Relaxed);
            tmf.waiter.done.complete_all();
        }
    }

    fn handle_event(&self, host: &HostRef, ev: &[u8; wire::EVENT_SIZE]) {
        let event = wire::le32(&ev[0..4]) & !wire::T_EVENTS_MISSED;
        let (target, lun) = wire::decode_lun(&ev[4..12]);
        let reason = wire::le32(&ev[12..16]);
        self.events_handled.add(1, Relaxed);
        match event {
            wire::T_TRANSPORT_RESET => match reason {
                wire::EVT_RESET_RESCAN if lun == 0 => host.scan_target(0, target),
                wire::EVT_RESET_RESCAN => {
                    if let Err(e) = host.add_device(0, target, lun) {
                        pr_info!("add 0:{target}:{lun} failed: {e:?}\n");
                    }
                }
                wire::EVT_RESET_REMOVED => {
                    if !host.remove_device(0, target, lun) {
                        pr_err!(
                            "SCSI device {} 0 {} {} not found\n",
                            host.host_no(),
                            target,
                            lun
                        );
                    }
                }
                _ => pr_info!("unsupported transport reset reason {reason:#x}\n"),
            },
            wire::T_PARAM_CHANGE => {
                let (asc, ascq) = (reason & 0xff, (reason >> 8) & 0xff);
                // Parameters, mode parameters or capacity data changed.
                if asc == 0x2a && matches!(ascq, 0x00 | 0x01 | 0x09) {
                    host.rescan_device(0, target, lun);
                }
            }
            0 => {}
            _ => pr_err!("unsupported virtio scsi event {event:#x}\n"),
        }
    }
}

impl WorkItem<0> for Completions {
    type Pointer = Arc<Completions>;

    fn run(this: Arc<Completions>) {
        let Some(vqs) = this.slow.lock().vqs.clone() else {
            return;
        };
        let bits = this.resched.xchg(0, kernel::sync::atomic::Full);
        for index in 0..this.queues.len() {
            if bits & (1u64 << (index % 64)) != 0 && this.drain(&vqs, index) {
                Completions::defer(&this, index);
            }
        }
    }
}

impl WorkItem<1> for Completions {
    type Pointer = Arc<Completions>;

    fn run(this: Arc<Completions>) {
        let Some(host) = this.slow.lock().host.clone() else {
            return;
        };
        loop {
            let mut batch = [[0u8; wire::EVENT_SIZE]; EVENT_BACKLOG];
            let (n, missed) = {
                let mut ev = this.events.lock();
                let n = ev.pending.len().min(EVENT_BACKLOG);
                for (dst, src) in batch.iter_mut().zip(ev.pending.iter()) {
                    *dst = *src;
                }
                ev.pending.clear();
                (n, core::mem::replace(&mut ev.missed, false))
            };
            if n == 0 && !missed {
                break;
            }
            for ev in &batch[..n] {
                if wire::le32(&ev[0..4]) & wire::T_EVENTS_MISSED != 0 {
                    host.scan();
                }
                this.handle_event(&host, ev);
            }
            if missed {
                host.scan();
            }
        }
    }
}

impl Handler for Completions {
    fn callback(&self, vqs: &Virtqueues<Self>, index: usize) {
        match index {
            VQ_CTRL => Completions::ctrl_done(vqs),
            VQ_EVENT => Completions::event_done(vqs.handler(), vqs),
            _ => {
                let q = index - VQ_BASE;
                // A queue's interrupt handler does not run concurrently with itself.
                bump(&self.queues[q].interrupts);
                if self.drain(vqs, q) {
                    Completions::defer(vqs.handler(), q);
                }
            }
        }
    }
}

/// The host data: what the SCSI callbacks need.
struct Shared {
    vqs: Arc<Virtqueues<Completions>>,
    comp: Arc<Completions>,
    dev: ARef<virtio::Device>,
}

impl Shared {
    fn kick(&self, vq: usize, kick: bool) {
        if kick {
            self.vqs.notify(vq);
        }
    }

    /// Sends a task management function and waits for the device's answer.
    fn tmf(&self, subtype: u32, cmd: &Command<Cmd>, tag: u64) -> EhResult {
        self.comp.tmfs.add(1, Relaxed);
        let Ok(waiter) = Arc::pin_init(
            pin_init!(TmfWaiter {
                done <- Completion::new(),
                response: Atomic::new(u32::MAX),
            }),
            kernel::alloc::flags::GFP_NOIO,
        ) else {
            return EhResult::Failed;
        };
        let mut req = [0u8; wire::TMF_REQ_SIZE];
        wire::tmf_req(&mut req, subtype, cmd.id(), cmd.lun(), tag);
        let Ok(tmf) = KBox::new(
            Tmf {
                req,
                resp: [u8::MAX],
                waiter: waiter.clone(),
            },
            kernel::alloc::flags::GFP_NOIO,
        ) else {
            return EhResult::Failed;
        };
        let kick = {
            let mut vq = self.vqs.lock(VQ_CTRL);
            if vq.add_sgs(tmf, GFP_ATOMIC).is_err() {
                return EhResult::Failed;
            }
            vq.kick_prepare()
        };
        self.kick(VQ_CTRL, kick);
        waiter.done.wait_for_completion();
        let response = waiter.response.load(Relaxed);
        // The device has completed the commands the function affected, but their interrupts may
        // not have run yet: drain every request queue once.
        for q in 0..self.comp.queues.len() {
            while self.comp.drain(&self.vqs, q) {}
        }
        if response == u32::from(wire::response::OK)
            || response == u32::from(wire::response::FUNCTION_SUCCEEDED)
        {
            EhResult::Success
        } else {
            EhResult::Failed
        }
    }
}

struct RVirtioScsiOps;

#[vtable]
impl HostOps for RVirtioScsiOps {
    type HostData = Shared;
    type CmdPriv = Cmd;

    const NAME: &'static CStr = c"Virtio SCSI HBA (Rust)";
    const PROC_NAME: &'static CStr = c"rvirtio_scsi";

    fn queuecommand(
        host: ArcBorrow<'_, Shared>,
        mut cmd: OwnedCommand<Cmd>,
    ) -> Result<(), OwnedCommand<Cmd>> {
        let comp = &host.comp;
        let hwq = u32::from(cmd.hw_queue());
        let target = cmd.id();
        let mut steered = false;
        let queue = match comp.targets.get(target as usize) {
            Some(t) if comp.per_target => {
                let (q, decision) = t.acquire(hwq, |q| cmd.queue_has_online_cpu(q));
                match decision {
                    Decision::Idle => comp.idle_picks.add(1, Relaxed),
                    Decision::Stay => comp.stays.add(1, Relaxed),
                    Decision::Resteer => comp.resteers.add(1, Relaxed),
                }
                steered = true;
                q
            }
            _ => hwq,
        } as usize;
        let queue = if queue < comp.queues.len() { queue } else { 0 };

        let tag = u64::from(cmd.unique_tag());
        let (id, lun) = (cmd.id(), cmd.lun());
        let mut cdb = [0u8; wire::CDB_SIZE];
        let n = cmd.cdb().len().min(wire::CDB_SIZE);
        cdb[..n].copy_from_slice(&cmd.cdb()[..n]);
        {
            let c = cmd.priv_mut();
            wire::cmd_req(&mut c.req, id, lun, tag, &cdb[..n]);
            c.resp.fill(0);
            c.target = target;
            c.steered = steered;
            c.in_device.store(true, Relaxed);
        }
        // A request steered away from its blk-mq queue is not covered by that queue's
        // `commit_rqs`: notify at once.
        let last = cmd.is_last() || queue as u32 != hwq;

        let q = &comp.queues[queue];
        let res = {
            let mut vq = host.vqs.lock(VQ_BASE + queue);
            match vq.add_sgs(cmd, GFP_ATOMIC) {
                Ok(()) => {
                    // Counters of this queue are written under its lock only.
                    bump(&q.submitted);
                    if let Some(h) = comp.hist.get(target as usize * comp.queues.len() + queue) {
                        bump(h);
                    }
                    if queue as u32 != hwq {
                        bump(&q.steered_in);
                    }
                    Ok(last && vq.kick_prepare())
                }
                Err(e) => Err(e),
            }
        };
        match res {
            Ok(kick) => {
                host.kick(VQ_BASE + queue, kick);
                Ok(())
            }
            Err((e, mut cmd)) => {
                cmd.priv_mut().in_device.store(false, Relaxed);
                if steered {
                    comp.targets[target as usize].release();
                }
                if e == EIO {
                    // Broken device: fail the command, as the C driver does.
                    cmd.set_result(0, HostByte::BadTarget);
                    cmd.done();
                    Ok(())
                } else {
                    q.busy.add(1, Relaxed);
                    Err(cmd)
                }
            }
        }
    }

    fn commit_rqs(host: ArcBorrow<'_, Shared>, hwq: u16) {
        let index = VQ_BASE + usize::from(hwq);
        if index >= host.vqs.len() {
            return;
        }
        let kick = host.vqs.lock(index).kick_prepare();
        host.kick(index, kick);
    }

    fn map_queues(host: ArcBorrow<'_, Shared>, map: &mut QueueMap<'_>) {
        if !host.comp.per_target {
            // Managed interrupts: follow their affinity, as the C driver.
            map.map_hw_queues(host.dev.as_ref(), VQ_BASE as u32);
            return;
        }
        map.map_queues();
        // Hint each queue's interrupt to the CPUs that submit on it.
        for q in 0..map.nr_queues() {
            let Ok(mut mask) = CpumaskVar::new_zero(GFP_KERNEL) else {
                return;
            };
            for cpu in 0..kernel::cpu::nr_cpu_ids() {
                if map.queue_for_cpu(cpu) == Some(q) {
                    if let Some(id) = CpuId::from_u32(cpu) {
                        mask.set(id);
                    }
                }
            }
            let _ = host.vqs.set_affinity(VQ_BASE + q as usize, &mask);
        }
    }

    fn eh_abort_handler(host: ArcBorrow<'_, Shared>, cmd: &Command<Cmd>) -> EhResult {
        pr_info!(
            "abort: target {} lun {} tag {:#x}\n",
            cmd.id(),
            cmd.lun(),
            cmd.unique_tag()
        );
        let r = host.tmf(wire::TMF_ABORT_TASK, cmd, u64::from(cmd.unique_tag()));
        // The midlayer takes the command back on success: only if the device gave it back.
        if r == EhResult::Success && cmd.priv_data().in_device.load(Relaxed) {
            return EhResult::Failed;
        }
        r
    }

    fn eh_device_reset_handler(host: ArcBorrow<'_, Shared>, cmd: &Command<Cmd>) -> EhResult {
        pr_info!("LUN reset: target {} lun {}\n", cmd.id(), cmd.lun());
        host.tmf(wire::TMF_LOGICAL_UNIT_RESET, cmd, 0)
    }

    fn eh_timed_out(_host: ArcBorrow<'_, Shared>, _cmd: &Command<Cmd>) -> TimeoutAction {
        // The device answers every command; by default give it the time it needs, as the C
        // driver does.
        if module_parameters::timeout_abort.value() {
            TimeoutAction::NotHandled
        } else {
            TimeoutAction::ResetTimer
        }
    }
}

/// What a bound device holds; dropping it tears the device down in order.
struct Parts {
    comp: Arc<Completions>,
    vqs: Option<Arc<Virtqueues<Completions>>>,
    host: Option<Host<RVirtioScsiOps>>,
    stats: Option<Pin<KBox<debugfs::File<Arc<Completions>>>>>,
    debugfs: Option<debugfs::Dir>,
}

impl Drop for Parts {
    fn drop(&mut self) {
        // No new event work, and none running.
        self.comp.events.lock().stopping = true;
        self.comp.wq.flush();
        drop(self.stats.take());
        drop(self.debugfs.take());
        // Remove the host: the midlayer finishes or fails every command first.
        drop(self.host.take());
        {
            let mut slow = self.comp.slow.lock();
            slow.vqs = None;
            slow.host = None;
        }
        // Reset the device and delete the queues (the last reference is ours).
        drop(self.vqs.take());
        // A deferred drain may have been queued meanwhile; it finds no queues.
        self.comp.wq.flush();
    }
}

impl Parts {
    /// Posts the event buffers and scans for disks.
    fn start(&self) -> Result {
        let (Some(vqs), Some(host)) = (&self.vqs, &self.host) else {
            return Err(ENODEV);
        };
        let mut bufs = KVec::with_capacity(EVENT_BUFS, GFP_KERNEL)?;
        for _ in 0..EVENT_BUFS {
            bufs.push(
                KBox::new(EventBuf([0; wire::EVENT_SIZE]), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        let kick = {
            let mut vq = vqs.lock(VQ_EVENT);
            for buf in bufs.drain_all() {
                vq.add_sgs(buf, GFP_ATOMIC).map_err(|(e, _)| e)?;
            }
            vq.kick_prepare()
        };
        if kick {
            vqs.notify(VQ_EVENT);
        }
        host.scan();
        Ok(())
    }
}

/// The driver's data of a device.
#[pin_data]
struct RVirtioScsi {
    /// `None` once unbound.
    #[pin]
    parts: Mutex<Option<Parts>>,
}

impl RVirtioScsi {
    fn write_stats(c: &Arc<Completions>, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(
            f,
            "steering: {}",
            if c.per_target { "per-target" } else { "mq" }
        )?;
        writeln!(
            f,
            "decisions: idle {} stay {} resteer {}",
            c.idle_picks.load(Relaxed),
            c.stays.load(Relaxed),
            c.resteers.load(Relaxed)
        )?;
        writeln!(f, "violations {}", c.violations.load(Relaxed))?;
        writeln!(
            f,
            "tmf: {} events: {}",
            c.tmfs.load(Relaxed),
            c.events_handled.load(Relaxed)
        )?;
        for (i, q) in c.queues.iter().enumerate() {
            let s = q.batcher.stats();
            writeln!(
                f,
                "queue {i}: submitted {} completed {} steered_in {} busy {} interrupts {} \
                 passes {} locks {} budget_exhausted {} rearms {} post_arm_polls {} post_arm {} \
                 reruns {}",
                q.submitted.load(Relaxed),
                q.completed.load(Relaxed),
                q.steered_in.load(Relaxed),
                q.busy.load(Relaxed),
                q.interrupts.load(Relaxed),
                s.passes,
                s.locks,
                s.budget_exhausted,
                s.rearms,
                s.post_arm_polls,
                s.post_arm,
                s.reruns
            )?;
        }
        let nq = c.queues.len();
        for (t, tq) in c.targets.iter().enumerate() {
            let counts = &c.hist[t * nq..(t + 1) * nq];
            if counts.iter().all(|h| h.load(Relaxed) == 0) {
                continue;
            }
            let (inflight, queue) = tq.snapshot();
            write!(f, "target {t}: inflight {inflight} queue {queue} requests")?;
            for h in counts {
                write!(f, " {}", h.load(Relaxed))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }

    fn setup(vdev: &virtio::Device<Core<'_>>) -> Result<Parts> {
        let num_queues = vdev.cread32(wire::config::NUM_QUEUES)?.max(1);
        let num_queues = num_queues.min(kernel::cpu::nr_cpu_ids()).min(64) as usize;
        let max_target = u32::from(vdev.cread16(wire::config::MAX_TARGET)?);
        let per_target = module_parameters::steering.value() != 0;

        let mut queues = KVec::with_capacity(num_queues, GFP_KERNEL)?;
        for _ in 0..num_queues {
            queues.push(
                ReqQueue {
                    batcher: Batcher::new(Config::from_param(module_parameters::budget.value())),
                    submitted: Atomic::new(0),
                    completed: Atomic::new(0),
                    steered_in: Atomic::new(0),
                    interrupts: Atomic::new(0),
                    busy: Atomic::new(0),
                },
                GFP_KERNEL,
            )?;
        }
        let ntargets = max_target as usize + 1;
        let mut targets = KVec::with_capacity(ntargets, GFP_KERNEL)?;
        for _ in 0..ntargets {
            targets.push(TargetQueue::new(), GFP_KERNEL)?;
        }
        let mut hist = KVec::with_capacity(ntargets * num_queues, GFP_KERNEL)?;
        for _ in 0..ntargets * num_queues {
            hist.push(Atomic::new(0), GFP_KERNEL)?;
        }
        let pending = KVec::with_capacity(EVENT_BACKLOG, GFP_KERNEL)?;
        let wq = OwnedQueue::new(
            c"rvirtio_scsi",
            QueueFlags::PERCPU | QueueFlags::HIGHPRI | QueueFlags::MEM_RECLAIM,
            0,
        )?;
        let comp = Arc::pin_init(
            try_pin_init!(Completions {
                per_target,
                queues,
                targets,
                hist,
                idle_picks: Atomic::new(0),
                stays: Atomic::new(0),
                resteers: Atomic::new(0),
                violations: Atomic::new(0),
                tmfs: Atomic::new(0),
                events_handled: Atomic::new(0),
                resched: Atomic::new(0),
                events <- new_spinlock_irq!(Events {
                    pending,
                    missed: false,
                    stopping: false,
                }),
                slow <- new_mutex!(Slow {
                    vqs: None,
                    host: None,
                }),
                wq,
                resched_work <- new_work!("rvirtio_scsi::resched"),
                event_work <- new_work!("rvirtio_scsi::event"),
            }),
            GFP_KERNEL,
        )?;

        let mut info = KVec::with_capacity(VQ_BASE + num_queues, GFP_KERNEL)?;
        info.push(
            QueueInfo {
                name: c"control",
                callback: true,
            },
            GFP_KERNEL,
        )?;
        info.push(
            QueueInfo {
                name: c"event",
                callback: true,
            },
            GFP_KERNEL,
        )?;
        for _ in 0..num_queues {
            info.push(
                QueueInfo {
                    name: c"request",
                    callback: true,
                },
                GFP_KERNEL,
            )?;
        }
        let affinity = if per_target {
            Affinity::Unmanaged
        } else {
            Affinity::Managed {
                pre_vectors: VQ_BASE as u32,
            }
        };
        let vqs = Virtqueues::find(vdev, &info, affinity, comp.clone())?;
        // The device must use our header sizes; a device without them keeps its defaults.
        let _ = vdev.cwrite32(wire::config::CDB_SIZE, wire::CDB_SIZE as u32);
        let _ = vdev.cwrite32(wire::config::SENSE_SIZE, wire::SENSE_SIZE as u32);

        let can_queue = vqs.vring_size(VQ_BASE);
        let cmd_per_lun = vdev
            .cread32(wire::config::CMD_PER_LUN)?
            .max(1)
            .min(can_queue);
        let limits = Limits {
            nr_hw_queues: num_queues as u32,
            can_queue: can_queue as i32,
            cmd_per_lun: cmd_per_lun.min(i16::MAX as u32) as i16,
            sg_tablesize: vdev
                .cread32(wire::config::SEG_MAX)?
                .clamp(1, u16::MAX.into()) as u16,
            max_sectors: match vdev.cread32(wire::config::MAX_SECTORS)? {
                0 => 0xffff,
                n => n,
            },
            max_id: ntargets as u32,
            // LUNs above 255 use flat addressing, in 16640..32767.
            max_lun: u64::from(vdev.cread32(wire::config::MAX_LUN)?) + 1 + 0x4000,
            max_channel: 0,
            max_cmd_len: wire::CDB_SIZE as u16,
        };
        let shared = Arc::new(
            Shared {
                vqs: vqs.clone(),
                comp: comp.clone(),
                dev: (&**vdev).into(),
            },
            GFP_KERNEL,
        )?;
        let mut host = Host::<RVirtioScsiOps>::alloc::<LocalModule>(shared, &limits)?;
        host.add(vdev.as_ref())?;
        let host_no = host.host_no();
        {
            let mut slow = comp.slow.lock();
            slow.vqs = Some(vqs.clone());
            slow.host = Some(host.get_ref());
        }
        // From here on, dropping `parts` through `Self` tears everything down in order.
        let name = CString::try_from_fmt(fmt!("rvirtio_scsi-host{host_no}"))?;
        let debugfs = debugfs::Dir::new(&name);
        let stats = KBox::pin_init(
            debugfs.read_callback_file(c"stats", comp.clone(), &Self::write_stats),
            GFP_KERNEL,
        )
        .ok();
        let parts = Parts {
            comp: comp.clone(),
            vqs: Some(vqs.clone()),
            host: Some(host),
            stats,
            debugfs: Some(debugfs),
        };
        vdev.ready();
        dev_info!(
            vdev.as_ref(),
            "host{}: {} request queues, {} targets, steering {}, budget {}\n",
            host_no,
            num_queues,
            ntargets,
            if per_target { "per-target" } else { "mq" },
            module_parameters::budget.value()
        );
        Ok(parts)
    }
}

impl virtio::Driver for RVirtioScsi {
    type Data<'bound> = Self;

    const ID_TABLE: virtio::IdTable = &VIRTIO_SCSI_TABLE;
    const FEATURES: &'static [u32] = &[wire::F_HOTPLUG, wire::F_CHANGE];

    fn probe<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pin_init::pin_init_scope(move || {
            let parts = Self::setup(vdev)?;
            parts.start()?;
            Ok(try_pin_init!(Self {
                parts <- new_mutex!(Some(parts)),
            }))
        })
    }

    fn unbind<'bound>(_vdev: &'bound virtio::Device<Core<'_>>, this: Pin<&Self>) {
        // The virtio core requires the device reset when `remove` returns.
        drop(this.parts.lock().take());
    }
}
