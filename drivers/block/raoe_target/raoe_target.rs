// SPDX-License-Identifier: GPL-2.0

//! raoe_target: an in-kernel ATA over Ethernet target.
//!
//! It exports block devices or files as AoE disks, answering the requests of AoE initiators
//! (the C `aoe` driver, `raoe`) on an Ethernet interface the way the user-space `vblade` does:
//! config queries and config string commands, and the ATA commands IDENTIFY DEVICE, READ and
//! WRITE SECTORS (LBA28 and LBA48) and FLUSH CACHE. Devices are made and configured in configfs
//! ([`config`]); the wire format is in [`proto`] and the serving of requests in [`target`].
//!
//! ```text
//! modprobe raoe_target
//! cd /sys/kernel/config/raoe_target && mkdir e1.1 && cd e1.1
//! echo /dev/ram0 > backing; echo eth1 > iface; echo 1 > shelf; echo 1 > slot
//! echo 1 > enable
//! ```

// All unsafe code lives in the kernel crate's abstractions.
#![forbid(unsafe_code)]

mod config;
mod proto;
mod target;

use kernel::{
    configfs,
    net::{
        netdevice::{
            NetDevice,
            PacketHandler,
            PacketType, //
        },
        skbuff::RxSkBuff,
    },
    prelude::*,
    sync::Arc,
};

module! {
    type: RaoeTarget,
    name: "raoe_target",
    authors: ["rstorage developers"],
    description: "ATA over Ethernet target",
    license: "GPL",
}

/// The module's packet handler: the receiver shared with the configfs devices.
struct Rx(Arc<target::Receiver>);

impl PacketHandler for Rx {
    fn receive(&self, dev: &NetDevice, skb: RxSkBuff) {
        self.0.receive(dev, skb);
    }
}

#[pin_data]
struct RaoeTarget {
    receiver: Arc<target::Receiver>,
    /// Dropped before the packet handler: configfs keeps the module while a device directory
    /// exists, so there is no device left by then.
    #[pin]
    config: configfs::Subsystem<config::Config>,
    #[pin]
    rx: PacketType<Rx>,
}

impl kernel::InPlaceModule for RaoeTarget {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            receiver: Arc::pin_init(target::Receiver::new(), GFP_KERNEL)?,
            config <- config::subsystem(receiver.clone()),
            rx <- PacketType::register(proto::ETH_P_AOE, Rx(receiver.clone())),
        })
    }
}
