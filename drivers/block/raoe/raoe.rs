// SPDX-License-Identifier: GPL-2.0

//! ATA over Ethernet block driver.
//!
//! A Rust counterpart of `drivers/block/aoe`: it finds AoE targets with config
//! queries, identifies them with ATA IDENTIFY, and serves their data as
//! `/dev/etherd/eX.Y` block devices, speaking LBA48 ATA reads and writes split
//! into frames that fit the link's MTU.
//!
//! The files, by responsibility (see `Documentation/rstorage/raoe.rst`):
//!
//! - this one: the module, its parameters, start and teardown;
//! - `aoe`: driver-wide state, device lookup, discovery, creation, flush;
//! - `dev`: a device's life, paths, RTT estimate and congestion window;
//! - `frame`: frame slots, their states and tags, and the request carrier;
//! - `tx`: the transmit thread and its socket-buffer reserve;
//! - `rx`: the packet handler (softirq);
//! - `compl`: the per-CPU completion threads;
//! - `blk`: block operations, disk attributes and disk creation;
//! - `ctl`: the `/dev/etherd` control files; `errlog`: the `err` file;
//!   `iflist`: the interface list, read without a lock;
//! - `stats`: counters and the debugfs file; `wire`: the AoE format;
//!   `ring`: the preallocated FIFO.
//!
//! Locks, outermost first (a lock is only taken while holding locks above
//! it in this list):
//!
//! 1. `Dev::disk` (mutex; disk creation and removal);
//! 2. `Aoe::devs` (the device list);
//! 3. `Dev::st` (one device's state, softirq-safe);
//! 4. `IoReq::inner`, the error log's lock.
//!
//! Leaves, never held with another lock of the driver: `Aoe::lookup`
//! buckets, `IfList::write`, `Tx::st`, `Compl::q`, the socket-buffer reserve.
//! The packet handler takes only a lookup bucket, the device's state lock
//! and its completion thread's queue lock: no driver-wide lock.
//! `Compl::thread` (mutex) is taken alone.

// All unsafe code lives in the kernel crate's abstractions.
#![forbid(unsafe_code)]

use kernel::{
    block::mq::gen_disk::BlockMajor,
    cpu, debugfs,
    kthread::Kthread,
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    net::netdevice::{NetdevNotifier, PacketType},
    prelude::*,
    sync::Arc,
};

mod aoe;
mod blk;
mod compl;
mod ctl;
mod dev;
mod errlog;
mod frame;
mod iflist;
mod ring;
mod rx;
mod stats;
mod tx;
mod wire;

use aoe::{Aoe, NetEvents};
use ctl::{Ctl, CtlKind};
use iflist::Names;
use rx::Rx;

pub(crate) use blk::Raoe;

module! {
    type: RaoeModule,
    name: "raoe",
    authors: ["rstorage developers"],
    description: "ATA over Ethernet block driver with per-CPU completion threads",
    license: "GPL",
    params: {
        aoe_deadsecs: u32 {
            default: 300,
            description: "Seconds a target may stay silent with I/O outstanding before it is \
                          declared dead and its I/O failed",
        },
        aoe_maxout: u32 {
            default: 64,
            description: "Most frames in flight per target (also capped by its buffer count)",
        },
        aoe_iflist: string {
            default: "",
            description: "aoe_iflist=dev1[,dev2...]: the only interfaces AoE uses (all Ethernet \
                          interfaces when empty)",
        },
        aoe_maxsectors: u32 {
            default: 2560,
            description: "Most sectors per block request (the C driver's default; 0: the block \
                          layer's, 255)",
        },
        aoe_dyndevs: u32 {
            default: 1,
            description: "Device numbers in the order disks appear (1, the default) or from \
                          their shelf and slot (0: minor (shelf * 16 + slot) * 16 under raoe's \
                          own major, slots 0-15)",
        },
        single_thread: bool {
            default: false,
            description: "Complete every target in one kthread instead of one per CPU",
        },
        budget: u32 {
            default: 32,
            description: "Completions per pass of a completion kthread (0 = unbounded)",
        },
    },
}

pub(crate) struct RaoeModule {
    aoe: Arc<Aoe>,
    rx: Option<Pin<KBox<PacketType<Rx>>>>,
    netdev_events: Option<Pin<KBox<NetdevNotifier<NetEvents>>>>,
    ctls: KVec<Pin<KBox<MiscDeviceRegistration<Ctl>>>>,
    tx_thread: Option<Kthread>,
    _stats: Option<Pin<KBox<debugfs::File<Arc<Aoe>>>>>,
    _debugfs: debugfs::Dir,
}

/// Logs why a step of module initialization failed.
fn step<T>(what: &str, r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        pr_err!("cannot {}: {:?}\n", what, e);
    }
    r
}

impl kernel::Module for RaoeModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let ifs = step(
            "use aoe_iflist (at most 8 names of at most 15 bytes)",
            Names::parse(module_parameters::aoe_iflist.value_ref().as_bytes()),
        )?;
        // Completion threads start with the first device that uses them.
        let major = match module_parameters::aoe_dyndevs.value() {
            0 => Some(step(
                "register a block major for aoe_dyndevs=0",
                BlockMajor::register(0, c"raoe").and_then(|m| Ok(Arc::new(m, GFP_KERNEL)?)),
            )?),
            _ => None,
        };
        let aoe = step("allocate driver state", Aoe::new(ifs, major))?;
        let mut ctls = KVec::with_capacity(CtlKind::ALL.len(), GFP_KERNEL)?;
        for (name, kind) in CtlKind::ALL {
            let reg = KBox::pin_init(
                MiscDeviceRegistration::register(MiscDeviceOptions { name }, (aoe.clone(), kind)),
                GFP_KERNEL,
            );
            ctls.push(step("register a control file", reg)?, GFP_KERNEL)?;
        }
        let t = aoe.clone();
        let tx_thread = step(
            "start the transmit thread",
            Kthread::spawn(fmt!("raoe_tx"), None, move |ctx| tx::tx_thread(&t, ctx)),
        )?;
        let netdev_events = step(
            "register the network device notifier",
            KBox::pin_init(
                NetdevNotifier::register(NetEvents { aoe: aoe.clone() }),
                GFP_KERNEL,
            ),
        )?;
        let rx = step(
            "register the packet handler",
            KBox::pin_init(
                PacketType::register(wire::ETH_P_AOE, Rx { aoe: aoe.clone() }),
                GFP_KERNEL,
            ),
        )?;
        let debugfs = debugfs::Dir::new(c"raoe");
        let stats = KBox::pin_init(
            debugfs.read_callback_file(c"stats", aoe.clone(), &stats::write_stats),
            GFP_KERNEL,
        )
        .ok();
        pr_info!(
            "AoE v1 with {} completion thread(s) max, deadsecs {}\n",
            if module_parameters::single_thread.value() {
                1
            } else {
                cpu::num_online()
            },
            module_parameters::aoe_deadsecs.value()
        );
        Ok(Self {
            aoe,
            rx: Some(rx),
            netdev_events: Some(netdev_events),
            ctls,
            tx_thread: Some(tx_thread),
            _stats: stats,
            _debugfs: debugfs,
        })
    }
}

impl Drop for RaoeModule {
    fn drop(&mut self) {
        // No more responses, control writes or transmissions.
        drop(self.rx.take());
        self.ctls.clear();
        {
            self.aoe.tx.st.lock().stop = true;
            self.aoe.tx.wait.notify_all();
        }
        drop(self.tx_thread.take());
        // Fail what is outstanding, then remove the disks.
        self.aoe.flush(|_| true);
        // Unregistering the notifier reports every interface as going away
        // once more; no device, and so no path, is left by now.
        drop(self.netdev_events.take());
        self.aoe.tx.wq.flush();
        // Let the completion threads drain their queues and exit.
        for c in self.aoe.compl.iter() {
            c.stop(&self.aoe);
        }
    }
}
