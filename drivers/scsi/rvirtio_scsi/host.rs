// SPDX-License-Identifier: GPL-2.0

//! The SCSI host template: the midlayer's entry points into the driver.

use crate::{
    error_handling, hotplug, module_parameters,
    submit::{
        self,
        Cmd,
        Shared, //
    },
};
use kernel::{
    prelude::*,
    scsi::{
        Command,
        EhResult,
        HostOps,
        OwnedCommand,
        QueueMaps,
        TimeoutAction, //
    },
    sync::ArcBorrow,
};

/// The operations of an rvirtio_scsi host.
pub(crate) struct RVirtioScsiOps;

#[vtable]
impl HostOps for RVirtioScsiOps {
    type HostData = Shared;
    type CmdPriv = Cmd;

    const NAME: &'static CStr = c"Virtio SCSI HBA (Rust)";
    const PROC_NAME: &'static CStr = c"rvirtio_scsi";
    // As the C driver: the device's queue-full answers lower a LUN's depth, and VPD pages
    // carry the limits of passed-through devices.
    const TRACK_QUEUE_DEPTH: bool = true;
    const TRY_VPD_PAGES: bool = true;

    fn queuecommand(
        host: ArcBorrow<'_, Shared>,
        cmd: OwnedCommand<Cmd>,
    ) -> Result<(), OwnedCommand<Cmd>> {
        submit::queuecommand(&host, cmd)
    }

    fn commit_rqs(host: ArcBorrow<'_, Shared>, hwq: u16) {
        submit::commit_rqs(&host, hwq);
    }

    fn map_queues(host: ArcBorrow<'_, Shared>, maps: &mut QueueMaps<'_>) {
        hotplug::map_queues(&host.comp, &host.vqs, host.dev.as_ref(), maps);
    }

    fn mq_poll(host: ArcBorrow<'_, Shared>, hwq: u16) -> u32 {
        host.comp.poll(&host.vqs, usize::from(hwq))
    }

    fn eh_abort_handler(host: ArcBorrow<'_, Shared>, cmd: &Command<Cmd>) -> EhResult {
        error_handling::abort(&host, cmd)
    }

    fn eh_device_reset_handler(host: ArcBorrow<'_, Shared>, cmd: &Command<Cmd>) -> EhResult {
        error_handling::device_reset(&host, cmd)
    }

    fn eh_host_reset_handler(host: ArcBorrow<'_, Shared>, _cmd: &Command<Cmd>) -> EhResult {
        error_handling::host_reset(&host)
    }

    fn eh_timed_out(host: ArcBorrow<'_, Shared>, cmd: &Command<Cmd>) -> TimeoutAction {
        error_handling::timed_out(&host, cmd, module_parameters::timeout_abort.value())
    }
}
