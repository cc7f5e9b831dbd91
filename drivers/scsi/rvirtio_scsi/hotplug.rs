// SPDX-License-Identifier: GPL-2.0

//! CPU hotplug: which request queues still serve an online CPU, and their interrupt affinity.
//!
//! Per-target steering must not keep a target on a queue whose CPUs are all offline. Instead of
//! scanning the CPUs at every cross-queue submission, each request queue carries a flag "serves
//! an online CPU", recomputed from the CPU-to-queue map (recorded by `map_queues`) when a CPU
//! comes or goes. Submission reads one flag.
//!
//! In per-target mode the request-queue interrupts are not managed: when its CPUs go offline an
//! interrupt migrates to another CPU, and it does not come back by itself. When a CPU comes back
//! online, its queue's interrupt affinity is set again to the queue's CPUs.

use crate::completion::{
    Completions,
    VQ_REQUEST, //
};
use kernel::{
    cpu::{
        self,
        hotplug::Callbacks,
        CpuId, //
    },
    cpumask::CpumaskVar,
    prelude::*,
    scsi::{
        QueueKind,
        QueueMaps, //
    },
    sync::{
        atomic::Relaxed,
        Arc, //
    },
    virtio::virtqueue::Virtqueues,
};

/// No request queue (a CPU not mapped yet).
pub(crate) const UNMAPPED: u32 = u32::MAX;

impl Completions {
    /// Recomputes which request queues serve an online CPU; `leaving` is a CPU about to go
    /// offline (still in the online mask).
    pub(crate) fn refresh_online(&self, leaving: Option<CpuId>) {
        for (q, queue) in self.queues.iter().enumerate().take(self.nr_irq_queues) {
            let online = self.cpu_queue.iter().enumerate().any(|(c, mapped)| {
                mapped.load(Relaxed) == q as u32
                    && CpuId::from_u32(c as u32)
                        .is_some_and(|id| Some(id) != leaving && cpu::online(id))
            });
            queue.has_online_cpu.store(online, Relaxed);
        }
    }

    /// Returns whether request queue `q` serves an online CPU (for steering).
    pub(crate) fn queue_has_online_cpu(&self, q: u32) -> bool {
        self.queues
            .get(q as usize)
            .is_some_and(|queue| queue.has_online_cpu.load(Relaxed))
    }

    /// Sets the interrupt affinity of request queue `q` to the CPUs mapped to it.
    fn restore_affinity(&self, vqs: &Virtqueues<Completions>, q: usize) {
        let Some(queue) = vqs.queues().request.get(q) else {
            return;
        };
        let Ok(mut mask) = CpumaskVar::new_zero(GFP_KERNEL) else {
            return;
        };
        for (c, mapped) in self.cpu_queue.iter().enumerate() {
            if mapped.load(Relaxed) == q as u32 {
                if let Some(id) = CpuId::from_u32(c as u32) {
                    mask.set(id);
                }
            }
        }
        let _ = queue.set_affinity(&mask);
    }
}

/// `map_queues`: maps CPUs to request queues, records the map and, in per-target mode, sets
/// each queue's interrupt affinity to its CPUs.
///
/// The interrupt queues come first, then the poll queues; the read map (which C drivers also
/// leave empty) gets none, so reads share the default queues.
pub(crate) fn map_queues(
    comp: &Completions,
    vqs: &Virtqueues<Completions>,
    dev: &kernel::device::Device,
    maps: &mut QueueMaps<'_>,
) {
    let irq_queues = comp.nr_irq_queues as u32;
    let poll_queues = comp.queues.len() as u32 - irq_queues;
    if let Some(mut map) = maps.get(QueueKind::Default) {
        if map.set_queues(irq_queues, 0).is_err() {
            return;
        }
        if comp.per_target {
            map.map_queues();
        } else {
            // Managed interrupts: follow their affinity, as the C driver.
            map.map_hw_queues(dev, VQ_REQUEST as u32);
        }
        for (c, mapped) in comp.cpu_queue.iter().enumerate() {
            mapped.store(map.queue_for_cpu(c as u32).unwrap_or(UNMAPPED), Relaxed);
        }
    }
    if let Some(mut map) = maps.get(QueueKind::Read) {
        let _ = map.set_queues(0, irq_queues);
    }
    if let Some(mut map) = maps.get(QueueKind::Poll) {
        // No interrupts: the block layer spreads them over the CPUs.
        if map.set_queues(poll_queues, irq_queues).is_ok() && poll_queues > 0 {
            map.map_queues();
        }
    }
    comp.refresh_online(None);
    if comp.per_target {
        for q in 0..comp.nr_irq_queues {
            comp.restore_affinity(vqs, q);
        }
    }
}

/// What the CPU hotplug registration of a device acts on.
pub(crate) struct CpuWatch {
    pub(crate) comp: Arc<Completions>,
    pub(crate) vqs: Arc<Virtqueues<Completions>>,
}

impl Callbacks for CpuWatch {
    fn online(&self, cpu: CpuId) {
        self.comp.refresh_online(None);
        if self.comp.per_target {
            if let Some(q) = self.comp.cpu_queue.get(cpu.as_u32() as usize) {
                let q = q.load(Relaxed);
                if q != UNMAPPED {
                    self.comp.restore_affinity(&self.vqs, q as usize);
                }
            }
        }
    }

    fn offline(&self, cpu: CpuId) {
        self.comp.refresh_online(Some(cpu));
    }
}
