// SPDX-License-Identifier: GPL-2.0

//! Error handling: task management functions on the control queue.
//!
//! A timed-out command is, by default, given the time the device needs (`timeout_abort=0`, as
//! the C driver: the device answers every command). With `timeout_abort=1` the midlayer's error
//! handler runs: ABORT TASK, then LOGICAL UNIT RESET. Each sends a task management function and
//! waits for the device's answer, then drains the request queues once, because the device has
//! completed the affected commands but their interrupts may not have run yet. The SCSI
//! abstraction answers `SUCCESS` to the midlayer only if the command is no longer held by the
//! driver, so a command still in the device is never given back early.

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
    virtio::virtqueue::{
        Exchange,
        Virtqueues, //
    },
};

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
        tmf.waiter.response.store(u32::from(tmf.resp[0]), Relaxed);
        tmf.waiter.done.complete_all();
    }
}

/// Sends a task management function and waits for the device's answer.
fn tmf(host: &Shared, subtype: u32, cmd: &Command<Cmd>, tag: u64) -> EhResult {
    host.comp.tmfs.add(1, Relaxed);
    let Ok(waiter) = Arc::pin_init(
        pin_init!(TmfWaiter {
            done <- Completion::new(),
            response: Atomic::new(u32::MAX),
        }),
        GFP_NOIO,
    ) else {
        return EhResult::Failed;
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
        return EhResult::Failed;
    };
    {
        let mut vq = host.vqs.queues().control.lock();
        if vq.add(request).is_err() {
            return EhResult::Failed;
        }
        vq.kick();
    }
    waiter.done.wait_for_completion();
    let response = waiter.response.load(Relaxed);
    // The device has completed the commands the function affected, but their interrupts may
    // not have run yet: drain every request queue once.
    for q in 0..host.comp.queues.len() {
        while host.comp.drain(&host.vqs, q) {}
    }
    if response == u32::from(wire::response::OK)
        || response == u32::from(wire::response::FUNCTION_SUCCEEDED)
    {
        EhResult::Success
    } else {
        EhResult::Failed
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
    tmf(host, wire::TMF_ABORT_TASK, cmd, u64::from(cmd.unique_tag()))
}

/// `eh_device_reset_handler`: LOGICAL UNIT RESET.
pub(crate) fn device_reset(host: &Shared, cmd: &Command<Cmd>) -> EhResult {
    pr_info!("LUN reset: target {} lun {}\n", cmd.id(), cmd.lun());
    tmf(host, wire::TMF_LOGICAL_UNIT_RESET, cmd, 0)
}

/// `eh_timed_out`: wait for the device unless `timeout_abort` is set.
pub(crate) fn timed_out(timeout_abort: bool) -> TimeoutAction {
    if timeout_abort {
        TimeoutAction::NotHandled
    } else {
        TimeoutAction::ResetTimer
    }
}
