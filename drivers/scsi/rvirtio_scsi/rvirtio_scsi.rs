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
//! The driver is split by job: [`probe`] (set-up and teardown order), [`submit`]
//! (`queuecommand`, steering, notification), [`completion`] (interrupts and the batched
//! drain), [`error_handling`] (task management), [`events`] (hot-plug), [`hotplug`] (CPU
//! hotplug: queues' online state and interrupt affinity), [`stats`] (counters),
//! [`host`] (the host template), [`wire`] (the virtio-scsi format).

// All unsafe code lives in the kernel crate's abstractions.
#![forbid(unsafe_code)]

use kernel::{
    device::Core,
    new_mutex,
    prelude::*,
    sync::Mutex,
    virtio, //
};

mod completion;
mod error_handling;
mod events;
mod host;
mod hotplug;
mod probe;
mod stats;
mod steering;
mod submit;
mod wire;

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
        poll_queues: u32 {
            default: 0,
            description: "Request queues used for polled I/O, without interrupts \
                          (at most the device's queues minus one)",
        },
        timeout_abort: bool {
            default: false,
            description: "On command timeout start error handling (abort, LUN reset) \
                          instead of waiting for the device",
        },
    },
}

kernel::virtio_device_table!(VIRTIO_SCSI_TABLE, [virtio::DeviceId::new(virtio::id::SCSI)]);

/// The driver's data of a device.
#[pin_data]
struct RVirtioScsi {
    /// `None` once unbound.
    #[pin]
    parts: Mutex<Option<probe::Parts>>,
}

impl virtio::Driver for RVirtioScsi {
    type Data<'bound> = Self;

    const ID_TABLE: virtio::IdTable = &VIRTIO_SCSI_TABLE;
    const FEATURES: &'static [u32] = &[wire::F_HOTPLUG, wire::F_CHANGE];

    fn probe<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pin_init::pin_init_scope(move || {
            let parts = probe::setup(vdev)?;
            parts.start()?;
            Ok(try_pin_init!(Self {
                parts <- new_mutex!(Some(parts), "rvirtio_scsi::parts"),
            }))
        })
    }

    fn unbind<'bound>(_vdev: &'bound virtio::Device<Core<'_>>, this: Pin<&Self>) {
        // Remove the host first; the bus abstraction resets the device and deletes its queues
        // when this returns.
        drop(this.parts.lock().take());
    }
}
