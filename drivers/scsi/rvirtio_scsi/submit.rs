// SPDX-License-Identifier: GPL-2.0

//! Submission: `queuecommand`, request steering and device notification.
//!
//! A command goes to the request queue of its blk-mq hardware queue (steering `mq`), or to its
//! target's queue (per-target steering, see [`steering`](crate::steering)). The request header is
//! built in the command's private data, with the CDB copied once from the command; the response
//! header is not cleared (the device writes it).
//!
//! The device is notified once per batch, as the C driver does: a command that is not the last
//! of its batch is added without a notification, and the last one (or `commit_rqs`) notifies.
//! A steered command may land on another queue than its batch's: the batch's hardware queue
//! records that queue in its `pending_kicks`, and the end of the batch notifies every queue
//! recorded there.

use crate::{
    completion::{
        set_bits,
        Completions, //
    },
    steering::Decision,
    wire,
};
use kernel::{
    prelude::*,
    scsi::{
        Command,
        CommandBuffers,
        HostByte,
        OwnedCommand, //
    },
    sync::{
        aref::ARef,
        atomic::Full,
        Arc, //
    },
    virtio::{
        self,
        virtqueue::Virtqueues, //
    },
};

/// Per-command private data: the headers exchanged with the device.
pub(crate) struct Cmd {
    req: [u8; wire::CMD_REQ_SIZE],
    pub(crate) resp: [u8; wire::CMD_RESP_SIZE],
    /// The target, for the steering release at completion.
    pub(crate) target: u32,
    /// Whether the command's target counted it (per-target steering).
    pub(crate) steered: bool,
}

impl Default for Cmd {
    fn default() -> Self {
        Self {
            req: [0; wire::CMD_REQ_SIZE],
            resp: [0; wire::CMD_RESP_SIZE],
            target: 0,
            steered: false,
        }
    }
}

impl CommandBuffers for Cmd {
    fn headers(&mut self) -> (&[u8], &mut [u8]) {
        (&self.req, &mut self.resp)
    }
}

/// The host data: what the SCSI callbacks need.
pub(crate) struct Shared {
    pub(crate) vqs: Arc<Virtqueues<Completions>>,
    pub(crate) comp: Arc<Completions>,
    pub(crate) dev: ARef<virtio::Device>,
}

impl Shared {
    /// Notifies the device of the commands added to the request queues in `mask` (bit per
    /// queue).
    fn kick_queues(&self, mut mask: u64) {
        let request = &self.vqs.queues().request;
        while mask != 0 {
            let q = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(queue) = request.get(q) {
                queue.lock().kick();
            }
        }
    }

    /// Notifies the queues that commands of hardware queue `hwq` were added to without a
    /// notification.
    fn flush_kicks(&self, hwq: usize) {
        let Some(q) = self.comp.queues.get(hwq) else {
            return;
        };
        let mask = q.pending_kicks.xchg(0, Full);
        if mask != 0 {
            self.kick_queues(mask);
        }
    }
}

/// Chooses the request queue of a command: its target's (per-target steering) or `hwq`.
fn choose_queue(
    comp: &Completions,
    cmd: &OwnedCommand<Cmd>,
    hwq: u32,
) -> (usize, Option<Decision>) {
    let target = cmd.id();
    let (queue, decision) = match comp.targets.get(target as usize) {
        // Polled commands stay on their poll queue: `mq_poll` looks for them there.
        Some(t) if comp.per_target && (hwq as usize) < comp.nr_irq_queues => {
            let (q, d) = t.acquire(hwq, |q| comp.queue_has_online_cpu(q));
            (q, Some(d))
        }
        _ => (hwq, None),
    };
    let queue = queue as usize;
    if queue < comp.queues.len() {
        (queue, decision)
    } else {
        (0, decision)
    }
}

/// `queuecommand`.
pub(crate) fn queuecommand(
    host: &Shared,
    mut cmd: OwnedCommand<Cmd>,
) -> Result<(), OwnedCommand<Cmd>> {
    let comp = &host.comp;
    let unique_tag = cmd.unique_tag();
    let hwq = usize::from(Command::<Cmd>::hw_queue_of(unique_tag));
    let (queue, decision) = choose_queue(comp, &cmd, hwq as u32);
    let steered = decision.is_some();
    let tag = u64::from(unique_tag);
    let last = cmd.is_last();
    let target = {
        let (c, data) = cmd.split_mut();
        let target = c.id();
        wire::cmd_req(&mut data.req, target, c.lun(), tag, c.cdb());
        data.target = target;
        data.steered = steered;
        target
    };

    let stats = &comp.queues[queue].stats;
    let mut vq = host.vqs.queues().request[queue].lock();
    match vq.add(cmd) {
        Ok(()) => {
            // Counters of this queue are written under its lock only.
            stats.submitted(target, decision, queue != hwq);
            if last {
                vq.kick();
                host.flush_kicks(hwq);
                if queue != hwq {
                    // Commands of this batch that stayed on their own queue.
                    host.kick_queues(1u64 << (hwq % 64));
                }
            } else {
                drop(vq);
                if queue != hwq {
                    set_bits(&comp.queues[hwq].pending_kicks, 1u64 << (queue % 64));
                }
            }
            Ok(())
        }
        Err((e, mut cmd)) => {
            drop(vq);
            if steered {
                comp.targets[target as usize].release();
            }
            // What was added before in this batch must reach the device.
            host.flush_kicks(hwq);
            host.kick_queues(1u64 << (hwq % 64));
            if e == EIO || e == ENODEV {
                // Broken or gone device: fail the command, as the C driver does.
                cmd.set_result(0, HostByte::BadTarget);
                cmd.done();
                Ok(())
            } else {
                stats.busy.add(1, kernel::sync::atomic::Relaxed);
                Err(cmd)
            }
        }
    }
}

/// `commit_rqs`: the batch of hardware queue `hwq` ended without a last command.
pub(crate) fn commit_rqs(host: &Shared, hwq: u16) {
    let hwq = usize::from(hwq);
    if hwq >= host.comp.queues.len() {
        return;
    }
    host.flush_kicks(hwq);
    host.kick_queues(1u64 << (hwq % 64));
}
