// SPDX-License-Identifier: GPL-2.0

//! Probe and teardown: the device's queues, the SCSI host and their order.
//!
//! Probe reads the configuration space, finds the queues (control, event, then one request queue
//! per blk-mq hardware queue), allocates and adds the host, posts the event buffers, sets the
//! device ready and scans. Teardown ([`Parts`]'s drop, at unbind) goes the other way: no more
//! events, host removed (the midlayer finishes or fails every command first), then the virtio
//! bus abstraction resets the device and deletes the queues when unbind returns.

use crate::{
    completion::{
        Completions,
        RequestQueue,
        VQ_REQUEST, //
    },
    error_handling::Tmf,
    events::{
        self,
        EventBuf,
        Events,
        EVENT_BACKLOG, //
    },
    host::RVirtioScsiOps,
    hotplug::{
        self,
        CpuWatch, //
    },
    module_parameters,
    stats::{
        self,
        QueueStats, //
    },
    steering::TargetQueue,
    submit::{
        Cmd,
        Shared, //
    },
    wire, LocalModule,
};
use kernel::{
    completion_batch::{
        Batcher,
        Config, //
    },
    cpu::hotplug::Registration,
    debugfs,
    device::Core,
    new_mutex, new_spinlock_irq, new_work,
    prelude::*,
    scsi::{
        Host,
        HostRef,
        Limits,
        OwnedCommand, //
    },
    str::CString,
    sync::{
        atomic::Atomic,
        Arc, //
    },
    virtio::{
        self,
        virtqueue::{
            Affinity,
            Queue,
            QueueInfo,
            Virtqueues, //
        },
    },
    workqueue::{
        OwnedQueue,
        QueueFlags, //
    },
};

/// The device's queues, typed by what they carry.
pub(crate) struct Queues {
    pub(crate) control: Queue<KBox<Tmf>>,
    pub(crate) event: Queue<KBox<EventBuf>>,
    pub(crate) request: KVec<Queue<OwnedCommand<Cmd>>>,
}

/// What the work items need besides the completion side; cleared at unbind.
pub(crate) struct Slow {
    pub(crate) vqs: Option<Arc<Virtqueues<Completions>>>,
    pub(crate) host: Option<HostRef>,
}

/// What a bound device holds; dropping it tears the device down in order.
pub(crate) struct Parts {
    comp: Arc<Completions>,
    vqs: Option<Arc<Virtqueues<Completions>>>,
    host: Option<Host<RVirtioScsiOps>>,
    cpu_watch: Option<Pin<KBox<Registration<CpuWatch>>>>,
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
        drop(self.cpu_watch.take());
        // Host removal finished every command: the device holds none of ours any more (error
        // handling waits for a reset to take them back before it gives up on them).
        {
            let mut slow = self.comp.slow.lock();
            slow.vqs = None;
            slow.host = None;
        }
        // The bus abstraction resets the device and deletes the queues when unbind returns;
        // this reference only keeps the (then empty) set alive.
        drop(self.vqs.take());
        // A deferred drain may have been queued meanwhile; it finds no queues.
        self.comp.wq.flush();
    }
}

impl Parts {
    /// Posts the event buffers and scans for disks.
    pub(crate) fn start(&self) -> Result {
        let (Some(vqs), Some(host)) = (&self.vqs, &self.host) else {
            return Err(ENODEV);
        };
        events::post_buffers(vqs, GFP_KERNEL)?;
        host.scan();
        Ok(())
    }
}

/// Makes the completion side of a device with `num_queues` request queues.
fn completions(
    num_queues: usize,
    nr_irq_queues: usize,
    targets: usize,
    per_target: bool,
) -> Result<Arc<Completions>> {
    let mut queues = KVec::with_capacity(num_queues, GFP_KERNEL)?;
    for _ in 0..num_queues {
        queues.push(
            RequestQueue {
                batcher: Batcher::new(Config::from_param(module_parameters::budget.value())),
                stats: QueueStats::new(targets)?,
                pending_kicks: Atomic::new(0),
                has_online_cpu: Atomic::new(true),
            },
            GFP_KERNEL,
        )?;
    }
    let mut target_queues = KVec::with_capacity(targets, GFP_KERNEL)?;
    for _ in 0..targets {
        target_queues.push(TargetQueue::new(), GFP_KERNEL)?;
    }
    let cpus = kernel::cpu::nr_cpu_ids() as usize;
    let mut cpu_queue = KVec::with_capacity(cpus, GFP_KERNEL)?;
    for _ in 0..cpus {
        cpu_queue.push(Atomic::new(hotplug::UNMAPPED), GFP_KERNEL)?;
    }
    let pending = KVec::with_capacity(EVENT_BACKLOG, GFP_KERNEL)?;
    let wq = OwnedQueue::new(
        c"rvirtio_scsi",
        QueueFlags::PERCPU | QueueFlags::HIGHPRI | QueueFlags::MEM_RECLAIM,
        0,
    )?;
    Arc::pin_init(
        try_pin_init!(Completions {
            per_target,
            nr_irq_queues,
            queues,
            targets: target_queues,
            cpu_queue,
            tmfs: Atomic::new(0),
            host_resets: Atomic::new(0),
            probes: Atomic::new(0),
            probes_lost: Atomic::new(0),
            control_stuck: Atomic::new(false),
            events_handled: Atomic::new(0),
            rescans: Atomic::new(0),
            hotunplug_removed: Atomic::new(0),
            deferred: Atomic::new(0),
            events <- new_spinlock_irq!(
                Events {
                    pending,
                    missed: false,
                    stopping: false,
                },
                "rvirtio_scsi::events"
            ),
            slow <- new_mutex!(
                Slow {
                    vqs: None,
                    host: None,
                },
                "rvirtio_scsi::slow"
            ),
            wq,
            drain_work <- new_work!("rvirtio_scsi::drain"),
            event_work <- new_work!("rvirtio_scsi::event"),
        }),
        GFP_KERNEL,
    )
}

/// The queues to find: control, event, then the request queues (the poll queues last, without
/// interrupts).
fn queue_info(num_queues: usize, nr_irq_queues: usize) -> Result<KVec<QueueInfo>> {
    let mut info = KVec::with_capacity(VQ_REQUEST + num_queues, GFP_KERNEL)?;
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
    for q in 0..num_queues {
        info.push(
            QueueInfo {
                name: c"request",
                callback: q < nr_irq_queues,
            },
            GFP_KERNEL,
        )?;
    }
    Ok(info)
}

/// Sets up a device: queues, host, debugfs.
pub(crate) fn setup(vdev: &virtio::Device<Core<'_>>) -> Result<Parts> {
    let num_queues = vdev.cread(wire::config::NUM_QUEUES)?.max(1);
    let num_queues = num_queues.min(kernel::cpu::nr_cpu_ids()).min(64) as usize;
    let max_target = u32::from(vdev.cread(wire::config::MAX_TARGET)?);
    let per_target = module_parameters::steering.value() != 0;
    let ntargets = max_target as usize + 1;
    // As the C driver: at least one queue keeps interrupts.
    let poll_queues = (module_parameters::poll_queues.value() as usize).min(num_queues - 1);
    let nr_irq_queues = num_queues - poll_queues;
    let comp = completions(num_queues, nr_irq_queues, ntargets, per_target)?;

    let affinity = if per_target {
        Affinity::Unmanaged
    } else {
        Affinity::Managed {
            pre_vectors: VQ_REQUEST as u32,
        }
    };
    let vqs = Virtqueues::find(
        vdev,
        &queue_info(num_queues, nr_irq_queues)?,
        affinity,
        comp.clone(),
        |found| {
            Ok(Queues {
                control: found.next_queue()?,
                event: found.next_queue()?,
                request: found.next_queues(num_queues)?,
            })
        },
    )?;
    // The device must use our header sizes; a device without them keeps its defaults.
    let _ = vdev.cwrite32(wire::config::CDB_SIZE, wire::CDB_SIZE as u32);
    let _ = vdev.cwrite32(wire::config::SENSE_SIZE, wire::SENSE_SIZE as u32);

    let can_queue = vqs.queues().request[0].lock().vring_size();
    let cmd_per_lun = vdev.cread(wire::config::CMD_PER_LUN)?.max(1).min(can_queue);
    let limits = Limits {
        nr_hw_queues: num_queues as u32,
        nr_poll_queues: poll_queues as u32,
        can_queue: can_queue as i32,
        cmd_per_lun: cmd_per_lun.min(i16::MAX as u32) as i16,
        sg_tablesize: vdev.cread(wire::config::SEG_MAX)?.clamp(1, u16::MAX.into()) as u16,
        max_sectors: match vdev.cread(wire::config::MAX_SECTORS)? {
            0 => 0xffff,
            n => n,
        },
        max_id: ntargets as u32,
        // LUNs above 255 use flat addressing, in 16640..32767.
        max_lun: u64::from(vdev.cread(wire::config::MAX_LUN)?) + 1 + 0x4000,
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
    let cpu_watch = KBox::pin_init(
        Registration::new(
            c"scsi/rvirtio_scsi:online",
            CpuWatch {
                comp: comp.clone(),
                vqs: vqs.clone(),
            },
        ),
        GFP_KERNEL,
    )?;
    // From here on, dropping `parts` tears everything down in order.
    let name = CString::try_from_fmt(fmt!("rvirtio_scsi-host{host_no}"))?;
    let debugfs = debugfs::Dir::new(&name);
    let stats = KBox::pin_init(
        debugfs.read_callback_file(c"stats", comp.clone(), &stats::write),
        GFP_KERNEL,
    )
    .ok();
    let parts = Parts {
        comp,
        vqs: Some(vqs),
        host: Some(host),
        cpu_watch: Some(cpu_watch),
        stats,
        debugfs: Some(debugfs),
    };
    vdev.ready();
    dev_info!(
        vdev.as_ref(),
        "host{}: {} request queues ({} polled), {} targets, steering {}, budget {}\n",
        host_no,
        num_queues,
        poll_queues,
        ntargets,
        if per_target { "per-target" } else { "mq" },
        module_parameters::budget.value()
    );
    Ok(parts)
}
