// SPDX-License-Identifier: GPL-2.0

//! An exported device: its backing file, its address and the serving of requests.
//!
//! A [`Target`] exists while its configfs group is enabled. Frames reach it through the
//! module's one AoE packet handler ([`Receiver`]), which runs in softirq context: it only reads
//! the AoE header, finds the targets the frame is for (interface, shelf.slot, destination
//! address) and queues one work item per target on the target's own workqueue. The work item
//! does the file I/O, builds the response in a new buffer (a read's data is read straight into
//! it: one copy, from the page cache into the frame) and transmits it from process context.

use crate::proto::{
    self,
    Addr,
    AtaArgs,
    AtaCmd,
    ConfigCmd,
    ConfigInfo,
    Header,
    Request,
    ETH_ALEN,
    MAX_CONFIG,
    SECTOR, //
};
use kernel::{
    fs::kernel_file::{
        Access,
        KernelFile, //
    },
    net::{
        netdevice::NetDevice,
        skbuff::{RxSkBuff, SkBuff},
    },
    new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc, Mutex, SpinLockIrq,
    },
    workqueue::{
        OwnedQueue,
        QueueFlags, //
    },
};

/// Room left in front of a response for the link layer.
const HEADROOM: usize = 64;
/// Firmware version in config responses.
const FIRMWARE: u16 = 0x4019;

/// What a target is configured with, read when it is enabled.
pub(crate) struct Settings<'a> {
    pub(crate) addr: Addr,
    pub(crate) iface: &'a CStr,
    pub(crate) backing: &'a CStr,
    pub(crate) read_only: bool,
    pub(crate) bufcnt: u16,
}

/// Counters of one target.
pub(crate) struct Stats {
    pub(crate) reads: Atomic<u64>,
    pub(crate) writes: Atomic<u64>,
    pub(crate) identifies: Atomic<u64>,
    pub(crate) flushes: Atomic<u64>,
    pub(crate) configs: Atomic<u64>,
    /// ATA commands answered "aborted": out of range, too long, failed I/O, unknown.
    pub(crate) aborted: Atomic<u64>,
    /// Requests answered with an AoE error (unknown command, version, config already set).
    pub(crate) aoe_errors: Atomic<u64>,
    /// Frames for this target that did not parse.
    pub(crate) malformed: Atomic<u64>,
    /// Frames dropped because `bufcnt` requests were outstanding, or memory ran out.
    pub(crate) dropped: Atomic<u64>,
    /// Responses the device did not take.
    pub(crate) xmit_errors: Atomic<u64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            reads: Atomic::new(0),
            writes: Atomic::new(0),
            identifies: Atomic::new(0),
            flushes: Atomic::new(0),
            configs: Atomic::new(0),
            aborted: Atomic::new(0),
            aoe_errors: Atomic::new(0),
            malformed: Atomic::new(0),
            dropped: Atomic::new(0),
            xmit_errors: Atomic::new(0),
        }
    }
}

fn bump(c: &Atomic<u64>) {
    c.add(1, Relaxed);
}

/// The config string, set by config commands.
struct ConfigString {
    buf: [u8; MAX_CONFIG],
    len: usize,
}

/// An enabled target.
#[pin_data]
pub(crate) struct Target {
    pub(crate) addr: Addr,
    pub(crate) ifindex: i32,
    pub(crate) mac: [u8; ETH_ALEN],
    /// Most sectors per request: what the interface's MTU carries.
    pub(crate) max_sectors: u8,
    /// Size of the backing file in sectors.
    pub(crate) sectors: u64,
    pub(crate) bufcnt: u16,
    file: KernelFile,
    serial: KVec<u8>,
    #[pin]
    config: Mutex<ConfigString>,
    /// Requests queued and not yet answered.
    outstanding: Atomic<u32>,
    /// Whether requests may still be queued: cleared by [`Target::drain`] before it drains
    /// the workqueue, and held while a request is queued, so that nothing is queued once the
    /// drain has begun. A frame handler may still hold the target after the receiver let it
    /// go; a work item queued on a draining workqueue is dropped by the workqueue (with a
    /// warning) and never runs, which would leak its frame and the device reference in it.
    #[pin]
    open: SpinLockIrq<bool>,
    pub(crate) stats: Stats,
    wq: OwnedQueue,
}

impl Target {
    /// Opens the backing file and binds to the interface of `s`. May sleep.
    pub(crate) fn new(s: &Settings<'_>) -> Result<Arc<Self>> {
        let file = KernelFile::open(
            s.backing,
            if s.read_only {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            },
        )?;
        let sectors = file.size() / SECTOR as u64;
        if sectors == 0 {
            pr_err!("{}: backing store is empty\n", s.backing.to_str()?);
            return Err(EINVAL);
        }
        let dev = NetDevice::get_by_name(s.iface).ok_or(ENODEV)?;
        if !dev.is_ethernet() {
            return Err(EINVAL);
        }
        let mac = dev.ether_addr().ok_or(EINVAL)?;
        let max_sectors = proto::sectors_for_mtu(dev.mtu());
        if max_sectors == 0 {
            return Err(EINVAL);
        }
        let mut serial = KVec::new();
        serial.extend_from_slice(s.backing.to_bytes(), GFP_KERNEL)?;
        let wq = OwnedQueue::new(c"raoe_target", QueueFlags::UNBOUND, 0)?;
        Arc::pin_init(
            try_pin_init!(Self {
                addr: s.addr,
                ifindex: dev.ifindex(),
                mac,
                max_sectors,
                sectors,
                bufcnt: s.bufcnt,
                file,
                serial,
                config <- new_mutex!(
                    ConfigString {
                        buf: [0; MAX_CONFIG],
                        len: 0,
                    },
                    "raoe_target:config"
                ),
                outstanding: Atomic::new(0),
                open <- new_spinlock_irq!(true, "raoe_target:open"),
                stats: Stats::new(),
                wq,
            }),
            GFP_KERNEL,
        )
    }

    /// Whether a frame with header `hdr` arriving on `ifindex` for Ethernet address `dst` is
    /// for this target.
    fn wants(&self, ifindex: i32, dst: &[u8], hdr: &Header) -> bool {
        ifindex == self.ifindex
            && (dst == self.mac || dst == [0xff; ETH_ALEN])
            && self.addr.accepts(hdr.to)
    }

    /// Queues the frame for the work item, unless `bufcnt` requests are already outstanding
    /// or the target is being drained.
    fn queue(this: &Arc<Self>, frame: &Arc<Frame>) {
        let open = this.open.lock();
        if !*open {
            bump(&this.stats.dropped);
            return;
        }
        if this.outstanding.fetch_add(1, Relaxed) >= u32::from(this.bufcnt) {
            this.outstanding.fetch_sub(1, Relaxed);
            bump(&this.stats.dropped);
            return;
        }
        let (t, frame) = (this.clone(), frame.clone());
        let spawned = this.wq.try_spawn(GFP_ATOMIC, move || {
            t.serve(&frame);
            t.outstanding.fetch_sub(1, Relaxed);
        });
        if spawned.is_err() {
            this.outstanding.fetch_sub(1, Relaxed);
            bump(&this.stats.dropped);
        }
    }

    /// Stops queueing requests, then waits for every queued request to be answered.
    pub(crate) fn drain(&self) {
        *self.open.lock() = false;
        self.wq.drain();
    }

    /// Answers one request, in process context.
    fn serve(&self, frame: &Frame) {
        match proto::parse(&frame.bytes) {
            Ok(Request::Ata { hdr, args, data }) => self.ata(&frame.dev, &hdr, &args, data),
            Ok(Request::Config { hdr, cmd, string }) => {
                self.config_cmd(&frame.dev, &hdr, cmd, string)
            }
            Ok(Request::Unknown { hdr, error }) => {
                bump(&self.stats.aoe_errors);
                self.respond(&frame.dev, proto::ERROR_LEN, |f| {
                    proto::build_error(f, &hdr, &self.mac, self.addr, error);
                    Ok(())
                });
            }
            Err(_) => bump(&self.stats.malformed),
        }
    }

    /// Allocates a response of `len` bytes, fills it with `fill` and transmits it on `dev`.
    /// A fill that fails sends nothing.
    fn respond(&self, dev: &NetDevice, len: usize, fill: impl FnOnce(&mut [u8]) -> Result) {
        let Ok(mut skb) = SkBuff::alloc(HEADROOM, len, GFP_KERNEL) else {
            bump(&self.stats.dropped);
            return;
        };
        let filled = match skb.put(len) {
            Ok(f) => fill(f),
            Err(e) => Err(e),
        };
        if filled.is_err() {
            return;
        }
        skb.set_protocol(proto::ETH_P_AOE);
        if dev.queue_xmit(skb).is_err() {
            bump(&self.stats.xmit_errors);
        }
    }

    /// Sends an ATA response without data: `ok` or aborted.
    fn ata_status(&self, dev: &NetDevice, hdr: &Header, args: &AtaArgs, ok: bool) {
        if !ok {
            bump(&self.stats.aborted);
        }
        self.respond(dev, proto::ata_len(0), |f| {
            proto::build_ata(f, hdr, args, &self.mac, self.addr, ok);
            Ok(())
        });
    }

    /// Returns the byte offset of a data command's sectors if they lie within the device and
    /// fit a frame.
    fn extent(&self, args: &AtaArgs) -> Option<u64> {
        let n = u64::from(args.sectors);
        let end = args.lba.checked_add(n)?;
        (n > 0 && args.sectors <= self.max_sectors && end <= self.sectors)
            .then_some(args.lba * SECTOR as u64)
    }

    fn ata(&self, dev: &NetDevice, hdr: &Header, args: &AtaArgs, data: &[u8]) {
        let len = usize::from(args.sectors) * SECTOR;
        match args.cmd {
            AtaCmd::Read => {
                let Some(pos) = self.extent(args) else {
                    return self.ata_status(dev, hdr, args, false);
                };
                bump(&self.stats.reads);
                let mut failed = false;
                self.respond(dev, proto::ata_len(len), |f| {
                    let (h, d) = f.split_at_mut(proto::ata_len(0));
                    // The data goes straight from the backing file into the frame.
                    if self.file.read_at(d, pos) != Ok(len) {
                        failed = true;
                        return Err(EIO);
                    }
                    proto::build_ata(h, hdr, args, &self.mac, self.addr, true);
                    Ok(())
                });
                if failed {
                    self.ata_status(dev, hdr, args, false);
                }
            }
            AtaCmd::Write => {
                let ok = match self.extent(args) {
                    Some(pos) if data.len() >= len => {
                        bump(&self.stats.writes);
                        self.file.write_at(&data[..len], pos) == Ok(len)
                    }
                    _ => false,
                };
                self.ata_status(dev, hdr, args, ok);
            }
            AtaCmd::Identify => {
                bump(&self.stats.identifies);
                self.respond(dev, proto::ata_len(SECTOR), |f| {
                    let (h, d) = f.split_at_mut(proto::ata_len(0));
                    proto::build_ata(h, hdr, args, &self.mac, self.addr, true);
                    d.copy_from_slice(&proto::identify(self.sectors, &self.serial));
                    Ok(())
                });
            }
            AtaCmd::Flush => {
                bump(&self.stats.flushes);
                let ok = self.file.access() == Access::ReadOnly || self.file.sync().is_ok();
                self.ata_status(dev, hdr, args, ok);
            }
            AtaCmd::Other => self.ata_status(dev, hdr, args, false),
        }
    }

    fn config_cmd(&self, dev: &NetDevice, hdr: &Header, cmd: ConfigCmd, string: &[u8]) {
        bump(&self.stats.configs);
        let mut cfg = self.config.lock();
        let current = &cfg.buf[..cfg.len];
        let answer = match proto::config_action(cmd, current, string) {
            Ok(Some(new)) if new.len() <= MAX_CONFIG => {
                let mut copy = [0u8; MAX_CONFIG];
                copy[..new.len()].copy_from_slice(new);
                Some((copy, new.len()))
            }
            Ok(_) => None,
            Err(error) => {
                drop(cfg);
                bump(&self.stats.aoe_errors);
                return self.respond(dev, proto::ERROR_LEN, |f| {
                    proto::build_error(f, hdr, &self.mac, self.addr, error);
                    Ok(())
                });
            }
        };
        let Some((string, len)) = answer else {
            return;
        };
        cfg.buf = string;
        cfg.len = len;
        drop(cfg);
        let info = ConfigInfo {
            bufcnt: self.bufcnt,
            firmware: FIRMWARE,
            max_sectors: self.max_sectors,
            string: &string[..len],
        };
        self.respond(dev, proto::config_len(len), |f| {
            proto::build_config(f, hdr, cmd, &self.mac, self.addr, &info);
            Ok(())
        });
    }
}

/// A received frame shared by the targets it is for, with the device it came in on.
///
/// Its bytes are copied out of the socket buffer on arrival, not when a work item serves it
/// (which may be seconds later): the buffer's page fragments may belong to the sender, which
/// may reuse them once it takes the request as answered. The C `aoe` initiator does: it
/// completes a write when the first copy of a retransmitted frame is answered, and the pages
/// of the write then take other data while the later copy still waits here. Serving that
/// copy from the buffer wrote the other data to the old sectors (a failed fio verify).
struct Frame {
    bytes: KVec<u8>,
    dev: ARef<NetDevice>,
}

/// Targets a received frame is handed to per pass over the list (a broadcast
/// may be for more; they are taken in further passes).
const MATCH_BATCH: usize = 8;

/// The module's AoE packet handler: hands each request to the targets it is for.
#[pin_data]
pub(crate) struct Receiver {
    #[pin]
    targets: SpinLockIrq<KVec<Arc<Target>>>,
}

impl Receiver {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            targets <- new_spinlock_irq!(KVec::new(), "raoe_target:targets"),
        })
    }

    /// Starts handing requests to `t`.
    pub(crate) fn add(&self, t: Arc<Target>) -> Result {
        let mut targets = self.targets.lock();
        if targets
            .iter()
            .any(|o| o.ifindex == t.ifindex && o.addr == t.addr)
        {
            return Err(EEXIST);
        }
        targets.push(t, GFP_ATOMIC)?;
        Ok(())
    }

    /// Stops handing requests to `t`; requests already queued are still answered.
    pub(crate) fn remove(&self, t: &Arc<Target>) {
        self.targets.lock().retain(|o| !Arc::ptr_eq(o, t));
    }
}

impl Receiver {
    /// Hands a received frame to the targets it is for (softirq context).
    pub(crate) fn receive(&self, dev: &NetDevice, skb: RxSkBuff) {
        // The headers, read out of the buffer: the frame may lie partly in page
        // fragments.
        let mut f = [0u8; proto::AOE_HDR];
        if skb.read(0, &mut f).is_err() {
            return;
        }
        let Ok(hdr) = proto::parse_header(&f) else {
            return;
        };
        let ifindex = dev.ifindex();
        let mut dst = [0; ETH_ALEN];
        dst.copy_from_slice(&f[..ETH_ALEN]);
        // The targets the frame is for, taken under the lock; everything else
        // (allocation, queueing the work) happens after it is dropped, so
        // frames arriving on several CPUs do not wait for each other.
        let mut found: [Option<Arc<Target>>; MATCH_BATCH] = Default::default();
        let mut skb = Some(skb);
        let mut frame = None;
        let mut skip = 0;
        loop {
            let mut n = 0;
            let mut more = false;
            {
                let targets = self.targets.lock();
                for t in targets
                    .iter()
                    .filter(|t| t.wants(ifindex, &dst, &hdr))
                    .skip(skip)
                {
                    if n == MATCH_BATCH {
                        more = true;
                        break;
                    }
                    found[n] = Some(t.clone());
                    n += 1;
                }
            }
            for t in found[..n].iter_mut().filter_map(Option::take) {
                // The first target the frame is for shares it with the others.
                if let Some(skb) = skb.take() {
                    let Ok(mut bytes) = KVec::from_elem(0u8, skb.len(), GFP_ATOMIC) else {
                        bump(&t.stats.dropped);
                        return;
                    };
                    if skb.read(0, &mut bytes).is_err() {
                        bump(&t.stats.malformed);
                        return;
                    }
                    drop(skb);
                    match Arc::new(
                        Frame {
                            bytes,
                            dev: dev.into(),
                        },
                        GFP_ATOMIC,
                    ) {
                        Ok(shared) => frame = Some(shared),
                        Err(_) => {
                            bump(&t.stats.dropped);
                            return;
                        }
                    }
                }
                if let Some(frame) = &frame {
                    Target::queue(&t, frame);
                }
            }
            if !more {
                return;
            }
            skip += n;
        }
    }
}
