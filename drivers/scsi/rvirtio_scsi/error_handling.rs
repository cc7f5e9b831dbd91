// SPDX-License-Identifier: GPL-2.0

//! Error handling: task management functions on the control queue, and the host reset.
//!
//! A timed-out command is, by default (`timeout_abort=0`), given the time the device needs, as
//! the C driver does, but only while the device works on it: the driver asks the device about
//! the command (QUERY TASK on the control queue). If the device has it (FUNCTION SUCCEEDED), the
//! command's timer runs again. If the device does not answer within [`PROBE_TIMEOUT_MS`] it has
//! stopped (its PCI bus mastering was disabled, say); if it answers that it does not know the
//! command, the command was lost; in both cases the midlayer's error handling starts. With
//! `timeout_abort=1` it starts at the first timeout.
//!
//! Error handling goes ABORT TASK, LOGICAL UNIT RESET, then host reset. A task management
//! function waits for the device's answer for at most [`TMF_TIMEOUT_MS`] (and not at all while
//! an earlier one is still unanswered: the control queue is stuck), then drains the request
//! queues once, because the device has completed the affected commands but their interrupts
//! may not have run yet. The host reset resets the virtio device and finds its queues again
//! ([`Virtqueues::reset`]): every command the device held is given back to the midlayer with an
//! error (it retries it), the event buffers are posted again, the device is set ready. The C
//! driver has no host reset: a stopped device hangs its I/O for good.
//!
//! The SCSI abstraction answers `SUCCESS` to the midlayer only if the command is no longer held
//! by the driver, so a command still in the device is never given back early.

use crate::{
    completion::Completions,
    submit::{
        Cmd,
        Shared, //
    },
    wire,
};
use kernel::{
    alloc::flags::GFP_NOIO,
    prelude::*,
    scsi::{
        Command,
        EhResult,
        TimeoutAction, //
    },
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc, Completion,
    },
    time::msecs_to_jiffies,
    virtio::virtqueue::{
        Exchange,
        Virtqueues, //
    },
};

/// How long the liveness probe of a timed-out command waits for the device.
pub(crate) const PROBE_TIMEOUT_MS: u32 = 5_000;
/// How long an ABORT TASK or LOGICAL UNIT RESET waits for the device.
pub(crate) const TMF_TIMEOUT_MS: u32 = 10_000;

/// A task management request on the control queue.
pub(crate) struct Tmf {
    req: [u8; wire::TMF_REQ_SIZE],
    resp: [u8; 1],
    waiter: Arc<TmfWaiter>,
}

impl Exchange for Tmf {
    fn buffers(&mut self) -> (&[u8], &mut [u8]) {
        (&self.req, &mut self.resp)
    }
}

impl Drop for Tmf {
    fn drop(&mut self) {
        // Answered, or dropped unanswered by a device reset: the waiter does not wait for
        // nothing (it reads the response, still `u32::MAX` if unanswered).
        self.waiter.done.complete_all();
    }
}

/// Where the waiting error handler gets the device's answer.
#[pin_data]
struct TmfWaiter {
    #[pin]
    done: Completion,
    response: Atomic<u32>,
}

/// Takes the answered task management requests off the control queue.
pub(crate) fn control_done(vqs: &Virtqueues<Completions>) {
    let mut vq = vqs.queues().control.lock();
    while let Some((tmf, _)) = vq.get_buf() {
        vqs.handler().control_stuck.store(false, Relaxed);
        tmf.waiter.response.store(u32::from(tmf.resp[0]), Relaxed);
        tmf.waiter.done.complete_all();
    }
}

/// Sends a task management function and waits for the device's answer, at most `timeout_ms`;
/// returns the answer, `None` without one.
fn tmf(host: &Shared, subtype: u32, cmd: &Command<Cmd>, tag: u64, timeout_ms: u32) -> Option<u8> {
    if host.comp.control_stuck.load(Relaxed) {
        // An earlier function got no answer and none came since: do not wait again, so that
        // error handling reaches the host reset quickly.
        return None;
    }
    let Ok(waiter) = Arc::pin_init(
        pin_init!(TmfWaiter {
            done <- Completion::new(),
            response: Atomic::new(u32::MAX),
        }),
        GFP_NOIO,
    ) else {
        return None;
    };
    let mut req = [0u8; wire::TMF_REQ_SIZE];
    wire::tmf_req(&mut req, subtype, cmd.id(), cmd.lun(), tag);
    let Ok(request) = KBox::new(
        Tmf {
            req,
            resp: [u8::MAX],
            waiter: waiter.clone(),
        },
        GFP_NOIO,
    ) else {
        return None;
    };
    {
        let mut vq = host.vqs.queues().control.lock();
        if vq.add(request).is_err() {
            return None;
        }
        vq.kick();
    }
    if !waiter
        .done
        .wait_for_completion_timeout(msecs_to_jiffies(timeout_ms))
    {
        host.comp.control_stuck.store(true, Relaxed);
        return None;
    }
    u8::try_from(waiter.response.load(Relaxed)).ok()
}

/// Sends ABORT TASK or LOGICAL UNIT RESET and drains the request queues.
fn abort_or_reset(host: &Shared, subtype: u32, cmd: &Command<Cmd>, tag: u64) -> EhResult {
    host.comp.tmfs.add(1, Relaxed);
    let response = tmf(host, subtype, cmd, tag, TMF_TIMEOUT_MS);
    // The device has completed the commands the function affected, but their interrupts may
    // not have run yet: drain every request queue once.
    for q in 0..host.comp.queues.len() {
        while host.comp.drain(&host.vqs, q) {}
    }
    match response {
        Some(wire::response::OK | wire::response::FUNCTION_SUCCEEDED) => EhResult::Success,
        _ => EhResult::Failed,
    }
}

/// `eh_abort_handler`: ABORT TASK.
pub(crate) fn abort(host: &Shared, cmd: &Command<Cmd>) -> EhResult {
    pr_info!(
        "abort: target {} lun {} tag {:#x}\n",
        cmd.id(),
        cmd.lun(),
        cmd.unique_tag()
    );
    abort_or_reset(host, wire::TMF_ABORT_TASK, cmd, u64::from(cmd.unique_tag()))
}

/// `eh_device_reset_handler`: LOGICAL UNIT RESET.
pub(crate) fn device_reset(host: &Shared, cmd: &Command<Cmd>) -> EhResult {
    pr_info!("LUN reset: target {} lun {}\n", cmd.id(), cmd.lun());
    abort_or_reset(host, wire::TMF_LOGICAL_UNIT_RESET, cmd, 0)
}

/// `eh_host_reset_handler`: resets the device and finds its queues again.
pub(crate) fn host_reset(host: &Shared) -> EhResult {
    pr_info!("host reset: resetting the virtio device\n");
    host.comp.host_resets.add(1, Relaxed);
    match host.vqs.reset() {
        Ok(()) => EhResult::Success,
        Err(e) => {
            pr_err!("host reset failed: {e:?}\n");
            EhResult::Failed
        }
    }
}

/// After a device reset: the commands in flight were given back without completion, and the
/// event buffers went with the old queues.
pub(crate) fn reset_done(comp: &Completions, vqs: &Virtqueues<Completions>) {
    comp.control_stuck.store(false, Relaxed);
    for target in comp.targets.iter() {
        target.forget();
    }
    if let Err(e) = crate::events::post_buffers(vqs, GFP_NOIO) {
        pr_err!("event buffers not posted after reset: {e:?}\n");
    }
}

/// `eh_timed_out`: wait for the device while it is alive (it answers QUERY TASK about the
/// command), unless `timeout_abort` is set.
pub(crate) fn timed_out(host: &Shared, cmd: &Command<Cmd>, timeout_abort: bool) -> TimeoutAction {
    if timeout_abort {
        return TimeoutAction::NotHandled;
    }
    let tag = u64::from(cmd.unique_tag());
    host.comp.probes.add(1, Relaxed);
    match tmf(host, wire::TMF_QUERY_TASK, cmd, tag, PROBE_TIMEOUT_MS) {
        // The device works on the command: give it the time it needs.
        Some(wire::response::FUNCTION_SUCCEEDED) => TimeoutAction::ResetTimer,
        Some(answer) => {
            // The device answers but does not know the command (it lost it while it could not
            // reach memory, say): waiting would be for ever.
            pr_info!(
                "target {} lun {} tag {:#x}: the device does not know the command (answer {}): \
                 error handling\n",
                cmd.id(),
                cmd.lun(),
                tag,
                answer
            );
            host.comp.probes_lost.add(1, Relaxed);
            TimeoutAction::NotHandled
        }
        None => {
            pr_info!(
                "target {} lun {}: no answer from the device: error handling\n",
                cmd.id(),
                cmd.lun()
            );
            TimeoutAction::NotHandled
        }
    }
}
