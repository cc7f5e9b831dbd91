// SPDX-License-Identifier: GPL-2.0

//! Events: hot-plug and parameter changes reported by the device on the event queue.
//!
//! The interrupt handler copies each event into a bounded backlog and re-posts its buffer at
//! once; the event work handles the backlog in process context (scanning or removing LUNs). When
//! the backlog is full, or the device reports that it dropped events (`EVENTS_MISSED`), the
//! lost events may have been removals as well as additions: as the C driver does, the work sends
//! INQUIRY to every device of the host and removes those that are gone, then rescans the host.

use crate::{
    completion::{
        Completions,
        EVENT_WORK, //
    },
    wire,
};
use kernel::{
    alloc::Flags,
    prelude::*,
    scsi::{
        HostByte,
        HostRef, //
    },
    sync::{
        atomic::Relaxed,
        Arc, //
    },
    virtio::virtqueue::{
        Exchange,
        Virtqueues, //
    },
    workqueue::WorkItem,
};

/// Event buffers kept posted on the event queue.
pub(crate) const EVENT_BUFS: usize = 8;
/// Events waiting for the event work before the driver falls back to a full rescan.
pub(crate) const EVENT_BACKLOG: usize = 32;

/// An event buffer on the event queue.
pub(crate) struct EventBuf(pub(crate) [u8; wire::EVENT_SIZE]);

impl Exchange for EventBuf {
    fn buffers(&mut self) -> (&[u8], &mut [u8]) {
        (&[], &mut self.0)
    }
}

/// The backlog of events for the event work.
pub(crate) struct Events {
    pub(crate) pending: KVec<[u8; wire::EVENT_SIZE]>,
    /// Events were dropped (backlog full): rescan.
    pub(crate) missed: bool,
    /// The device is going away: drop events.
    pub(crate) stopping: bool,
}

/// Takes the used event buffers: copies each event to the backlog and re-posts the buffer.
pub(crate) fn event_done(this: &Arc<Completions>, vqs: &Virtqueues<Completions>) {
    let mut queued = false;
    let mut reposted = false;
    let mut vq = vqs.queues().event.lock();
    while let Some((buf, _)) = vq.get_buf() {
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
        if vq.add(buf).is_ok() {
            reposted = true;
        }
    }
    if reposted {
        vq.kick();
    } else {
        drop(vq);
    }
    if queued {
        let _ = this
            .wq
            .enqueue::<Arc<Completions>, EVENT_WORK>(this.clone());
    }
}

/// Removes the devices that are gone: those whose INQUIRY says the LUN is not attached
/// (peripheral qualifier), or whose target answers BAD TARGET (all its LUNs unplugged).
fn rescan_hotunplug(comp: &Completions, host: &HostRef) {
    host.for_each_device(|sdev| {
        let len = match sdev.inquiry_len() {
            0 => 36,
            n => n,
        };
        let cdb = [wire::INQUIRY, 0, 0, 0, len, 0];
        let Ok(done) = sdev.execute_read(&cdb, usize::from(len), INQUIRY_TIMEOUT_MS, 5) else {
            return;
        };
        let gone = if done.is_good() {
            done.data.first().is_some_and(|b| b >> 5 != 0)
        } else {
            done.host_byte() == HostByte::BadTarget as u8
        };
        if gone {
            pr_info!(
                "device 0:{}:{} gone after missed events: removing it\n",
                sdev.id(),
                sdev.lun()
            );
            sdev.remove();
            comp.hotunplug_removed.add(1, Relaxed);
        }
    });
}

/// Timeout of the INQUIRY of [`rescan_hotunplug`] (the disk driver's default command timeout).
const INQUIRY_TIMEOUT_MS: u32 = 30_000;

/// After events were lost: removes the devices that are gone, then scans for new ones.
fn rescan(comp: &Completions, host: &HostRef) {
    comp.rescans.add(1, Relaxed);
    rescan_hotunplug(comp, host);
    host.scan();
}

/// Handles one event in process context.
fn handle_event(comp: &Completions, host: &HostRef, ev: &[u8; wire::EVENT_SIZE]) {
    let event = wire::le32(&ev[0..4]) & !wire::T_EVENTS_MISSED;
    let (target, lun) = wire::decode_lun(&ev[4..12]);
    let reason = wire::le32(&ev[12..16]);
    comp.events_handled.add(1, Relaxed);
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

impl WorkItem<EVENT_WORK> for Completions {
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
                    rescan(&this, &host);
                }
                handle_event(&this, &host, ev);
            }
            if missed {
                rescan(&this, &host);
            }
        }
    }
}

/// Posts the event buffers; called at probe and after a device reset, before the device is
/// ready.
pub(crate) fn post_buffers(vqs: &Virtqueues<Completions>, flags: Flags) -> Result {
    let mut bufs = KVec::with_capacity(EVENT_BUFS, flags)?;
    for _ in 0..EVENT_BUFS {
        bufs.push(KBox::new(EventBuf([0; wire::EVENT_SIZE]), flags)?, flags)?;
    }
    let mut vq = vqs.queues().event.lock();
    for buf in bufs.drain_all() {
        vq.add(buf).map_err(|(e, _)| e)?;
    }
    vq.kick();
    Ok(())
}
