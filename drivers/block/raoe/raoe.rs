// SPDX-License-Identifier: GPL-2.0

//! ATA over Ethernet block driver.
//!
//! A Rust counterpart of `drivers/block/aoe`: it finds AoE targets with config
//! queries, identifies them with ATA IDENTIFY, and serves their data as
//! `/dev/etherd/eX.Y` block devices, speaking LBA48 ATA reads and writes split
//! into frames that fit the link's MTU.
//!
//! Threads (see `Documentation/rstorage/raoe.rst`):
//!
//! - The packet handler runs in softirq context. It matches a response to its
//!   frame and queues it, unprocessed, to the completion kthread of the
//!   target.
//! - One completion kthread per online CPU, spawned lazily; all of a target's
//!   completions go to one thread (seed 001), which drains its queue through
//!   the completion-batching helper, copies read data into the request and
//!   ends requests. `single_thread=1` uses one thread for every target.
//! - One transmit kthread builds and sends frames, retransmits, ages targets
//!   and creates devices. `queue_rq` only queues the request and wakes it, so
//!   a transmission blocked on memory never holds up completions (seed 003);
//!   frames, request slots and completion-queue slots are reserved up front.

use kernel::{
    block::mq::{
        gen_disk::{DiskAttributes, GenDisk, GenDiskBuilder},
        Op, Operations, Request, SegRange, Segments, TagSet,
    },
    completion_batch::{
        Armed,
        Batcher,
        CompletionQueue,
        CompletionSource,
        Config,
        Pass, //
    },
    cpu::{self, CpuId},
    debugfs,
    fs::{File, Kiocb},
    impl_has_work,
    iov::{IovIterDest, IovIterSource},
    kthread::{Context, Kthread},
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    net::{
        netdevice::{NetDevice, NetdevEvents, NetdevNotifier, PacketHandler, PacketType},
        skbuff::{RxSkBuff, SkBuff},
    },
    new_condvar, new_mutex, new_spinlock, new_spinlock_irq, new_work,
    prelude::*,
    str::{CString, Formatter},
    sync::{
        aref::ARef,
        atomic::{Atomic, Full, Relaxed},
        Arc, ArcBorrow, CondVar, Mutex, SpinLock, SpinLockIrq, SpinLockIrqGuard,
    },
    time::{msecs_to_jiffies, Delta, Instant, Monotonic},
    workqueue::{OwnedQueue, QueueFlags, Work, WorkItem},
};

mod errlog;
mod ring;
mod wire;

use errlog::ErrLog;
use ring::Ring;
use wire::{Addr, Ata, Response};

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
            description: "Most frames in flight per target (also capped by the target's buffer count)",
        },
        aoe_maxsectors: u32 {
            default: 2560,
            description: "Most sectors per block request (the C driver's default; 0: the block \
                          layer's, 255)",
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

/// Most paths (target MAC, interface) per device.
const MAX_PATHS: usize = 8;
/// Most frames per device.
const MAX_FRAMES: usize = 64;
/// Most devices.
const MAX_DEVS: usize = 64;
/// Buckets of the device lookup by address.
const LOOKUP_BUCKETS: usize = 16;
/// Block-layer tags per device.
const QUEUE_DEPTH: u32 = 128;
/// Most interfaces in the interface list.
const MAX_IFS: usize = 8;
/// Config responses waiting for the transmit thread.
const CFG_BACKLOG: usize = 64;
/// Headroom reserved in transmitted buffers for lower layers.
const HEADROOM: usize = 64;
/// Transmit-thread tick: retransmission and aging checks.
const TICK_MS: u32 = 20;
/// Retransmission timeout bounds and initial estimate, in microseconds.
const RTO_MIN_US: i64 = 20_000;
const RTO_MAX_US: i64 = 4_000_000;
const RTT_INIT_US: i64 = 100_000;
/// Socket buffers reserved for transmission under memory pressure.
const SKB_RESERVE: usize = 32;
/// Size of a reserved socket buffer: a frame at a 1500-byte MTU.
const SKB_RESERVE_LEN: usize = 1536;

/// An event counter for debugfs.
struct Counter(Atomic<u64>);

impl Default for Counter {
    fn default() -> Self {
        Self(Atomic::new(0))
    }
}

impl Counter {
    fn bump(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One block request being carried by frames.
#[pin_data]
struct IoReq {
    /// The request's data, until the request is ended: each frame copies its
    /// piece ([`SegRange`]) through it. IRQ-safe because it is handed over
    /// under the (softirq-safe) device lock.
    #[pin]
    data: SpinLockIrq<Option<Segments<Raoe>>>,
    /// Bytes not yet accounted for by a completed or failed frame.
    left: Atomic<u32>,
    /// Whether a frame failed.
    failed: Atomic<bool>,
}

impl IoReq {
    /// Allocates the carrier; [`IoReq::start`] gives it its request.
    fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(IoReq {
                data <- new_spinlock_irq!(None),
                left: Atomic::new(0),
                failed: Atomic::new(false),
            }),
            GFP_NOIO,
        )
    }

    fn start(&self, data: Segments<Raoe>) {
        self.left.store(data.left(), Relaxed);
        *self.data.lock() = Some(data);
    }

    /// Cuts the request's next `len` bytes off for a frame.
    fn next(&self, len: u32) -> Option<SegRange> {
        Option::as_mut(&mut *self.data.lock())?.next(len)
    }

    /// Accounts for `len` bytes, done or failed; ends the request after the
    /// last byte.
    fn finish(&self, len: u32, ok: bool) {
        if !ok {
            self.failed.store(true, Relaxed);
        }
        if self.left.fetch_sub(len, Full) == len {
            let data = self.data.lock().take();
            if let Some(data) = data {
                let rq = data.into_request();
                let status = if self.failed.load(Relaxed) {
                    Err(EIO)
                } else {
                    Ok(())
                };
                if Request::end(rq, status).is_err() {
                    pr_err!("request still referenced at completion\n");
                }
            }
        }
    }

    /// Copies read data from a response frame, `offset` bytes in, into the
    /// request's piece `range`.
    fn copy_in(&self, range: &SegRange, skb: &RxSkBuff, offset: usize) -> Result {
        match self.data.lock().as_ref() {
            Some(data) => data.copy_to(range, skb, offset),
            None => Err(EINVAL),
        }
    }

    /// Copies the request's piece `range` of write data into `buf`.
    fn copy_out(&self, range: &SegRange, buf: &mut [u8]) -> Result {
        match self.data.lock().as_ref() {
            Some(data) => data.copy_from(range, buf),
            None => Err(EINVAL),
        }
    }
}

/// What a frame carries.
enum Kind {
    Free,
    Identify,
    Io { req: Arc<IoReq>, range: SegRange },
}

/// One frame slot of a device: a command in flight.
struct Frame {
    kind: Kind,
    cmd: Ata,
    tag: u32,
    sent: Instant<Monotonic>,
    retries: u32,
    path: usize,
    /// The response arrived and waits in a completion queue.
    answered: bool,
}

/// A way to reach a target: its MAC through one of our interfaces.
struct Path {
    mac: [u8; wire::ETH_ALEN],
    ifp: ARef<NetDevice>,
    /// Most data bytes per frame on this path.
    payload: usize,
    /// When a response last came back over this path (creation time at first).
    last_ok: Instant<Monotonic>,
}

/// `Frame::path` of a frame whose path was dropped (its interface went away).
const NO_PATH: usize = usize::MAX;

/// A path that has not answered for this long gets new frames only when no
/// other path answers either (a dead or bogus path must not stall I/O).
const PATH_TRUST: Delta = Delta::from_secs(3);

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Found, IDENTIFY outstanding.
    Identifying,
    /// Serving I/O.
    Up,
    /// Silent past `aoe_deadsecs`, or removed: I/O fails until rediscovered.
    Down,
}

/// The request being split into frames.
struct Current {
    req: Arc<IoReq>,
    write: bool,
    sector: u64,
    /// Bytes already put in frames.
    off: u32,
    total: u32,
}

struct DevState {
    state: State,
    paths: KVec<Path>,
    rr: usize,
    frames: KVec<Frame>,
    /// Frames in use (sent or answered).
    nout: usize,
    /// Congestion window: most frames in use.
    maxout: usize,
    /// Responses since the window last grew.
    acked: usize,
    pending: Ring<ARef<Request<Raoe>>>,
    cur: Option<Current>,
    sectors: u64,
    lba48: bool,
    fwver: u16,
    /// Most sectors per frame the target accepts (0: no limit given).
    scnt: u8,
    rtt_avg_us: i64,
    rtt_dev_us: i64,
    last_rsp: Instant<Monotonic>,
    identify_due: bool,
    generation: u16,
    /// The device was flushed or the module is going away.
    gone: bool,
}

#[derive(Default)]
struct DevStats {
    frames: Counter,
    retransmits: Counter,
    unexpected: Counter,
    failed: Counter,
    xmit_errors: Counter,
}

/// An AoE device (one shelf.slot).
#[pin_data]
struct Dev {
    addr: Addr,
    /// Creation index; picks the completion thread.
    index: usize,
    #[pin]
    st: SpinLockIrq<DevState>,
    #[pin]
    disk: Mutex<Option<GenDisk<Raoe>>>,
    #[pin]
    disk_work: Work<Dev>,
    tx: Arc<Tx>,
    stats: DevStats,
}

impl_has_work! {
    impl HasWork<Self> for Dev { self.disk_work }
}

/// The transmit thread's inbox.
struct TxState {
    kick: bool,
    discover: bool,
    stop: bool,
    cfg: Ring<CfgMsg>,
}

#[pin_data]
struct Tx {
    #[pin]
    st: SpinLockIrq<TxState>,
    #[pin]
    wait: CondVar,
    /// Device and thread set-up work (it sleeps, and disk creation does I/O).
    wq: OwnedQueue,
}

impl Tx {
    fn kick(&self) {
        self.st.lock().kick = true;
        self.wait.notify_one();
    }
}

/// A config response, handed from the packet handler to the transmit thread.
struct CfgMsg {
    addr: Addr,
    mac: [u8; wire::ETH_ALEN],
    ifp: ARef<NetDevice>,
    bufcnt: u16,
    fwver: u16,
    scnt: u8,
}

/// A response waiting for its completion thread.
struct Done {
    dev: Arc<Dev>,
    frame: usize,
    skb: RxSkBuff,
}

struct ComplQueue {
    items: Ring<Done>,
    stop: bool,
}

/// A completion thread's queue and counters.
#[pin_data]
struct Compl {
    cpu: CpuId,
    #[pin]
    q: SpinLockIrq<ComplQueue>,
    #[pin]
    wait: CondVar,
    batcher: Batcher,
    completed: Counter,
    running: Atomic<bool>,
    #[pin]
    thread: Mutex<Option<Kthread>>,
}

/// Interface names AoE may use; empty means every Ethernet interface.
struct IfList {
    names: [[u8; 16]; MAX_IFS],
    count: usize,
}

impl IfList {
    fn allows(&self, dev: &NetDevice) -> bool {
        if self.count == 0 {
            return true;
        }
        let name = dev.name();
        let name = name.as_bytes();
        self.names[..self.count].iter().any(|n| {
            let len = n.iter().position(|&b| b == 0).unwrap_or(n.len());
            &n[..len] == name
        })
    }
}

#[derive(Default)]
struct RxStats {
    short: Counter,
    not_response: Counter,
    aoe_error: Counter,
    bad_addr: Counter,
    unknown_dev: Counter,
    cfg: Counter,
    dropped: Counter,
}

/// Driver-wide state.
#[pin_data]
struct Aoe {
    /// Every device, in creation order (discovery, flush, stats).
    #[pin]
    devs: SpinLockIrq<KVec<Arc<Dev>>>,
    /// The same devices by address, for the packet handler: a lock per
    /// bucket, so that responses for different devices do not contend.
    lookup: KVec<Pin<KBox<SpinLockIrq<KVec<Arc<Dev>>>>>>,
    #[pin]
    ifs: SpinLockIrq<IfList>,
    #[pin]
    skb_reserve: SpinLock<KVec<SkBuff>>,
    tx: Arc<Tx>,
    compl: KVec<Pin<KBox<Compl>>>,
    #[pin]
    spawn_work: Work<Aoe>,
    rx: RxStats,
    reserve_used: Counter,
    /// `/dev/etherd/err`.
    #[pin]
    err: ErrLog,
}

impl_has_work! {
    impl HasWork<Self> for Aoe { self.spawn_work }
}

impl Aoe {
    fn new() -> Result<Arc<Self>> {
        let ncpu = cpu::nr_cpu_ids() as usize;
        let mut compl = KVec::with_capacity(ncpu, GFP_KERNEL)?;
        for i in 0..ncpu {
            let c = KBox::pin_init(
                try_pin_init!(Compl {
                    cpu: CpuId::from_u32(i as u32).ok_or(EINVAL)?,
                    q <- new_spinlock_irq!(ComplQueue { items: Ring::new(), stop: false }),
                    wait <- new_condvar!("raoe::compl"),
                    batcher: Batcher::new(Config::from_param(module_parameters::budget.value())),
                    completed: Counter::default(),
                    running: Atomic::new(false),
                    thread <- new_mutex!(None),
                }),
                GFP_KERNEL,
            )?;
            compl.push(c, GFP_KERNEL)?;
        }
        let tx = Arc::pin_init(
            try_pin_init!(Tx {
                st <- new_spinlock_irq!(TxState {
                    kick: false,
                    discover: true,
                    stop: false,
                    cfg: Ring::with_capacity(CFG_BACKLOG, GFP_KERNEL)?,
                }),
                wait <- new_condvar!("raoe::tx"),
                wq: OwnedQueue::new(c"raoe", QueueFlags::UNBOUND | QueueFlags::MEM_RECLAIM, 0)?,
            }),
            GFP_KERNEL,
        )?;
        let mut reserve = KVec::with_capacity(SKB_RESERVE, GFP_KERNEL)?;
        for _ in 0..SKB_RESERVE {
            reserve.push(
                SkBuff::alloc(HEADROOM, SKB_RESERVE_LEN, GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        let mut lookup = KVec::with_capacity(LOOKUP_BUCKETS, GFP_KERNEL)?;
        for _ in 0..LOOKUP_BUCKETS {
            lookup.push(
                KBox::pin_init(
                    new_spinlock_irq!(KVec::with_capacity(MAX_DEVS, GFP_KERNEL)?),
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        Arc::pin_init(
            try_pin_init!(Aoe {
                devs <- new_spinlock_irq!(KVec::with_capacity(MAX_DEVS, GFP_KERNEL)?),
                lookup,
                ifs <- new_spinlock_irq!(IfList { names: [[0; 16]; MAX_IFS], count: 0 }),
                skb_reserve <- new_spinlock!(reserve),
                tx,
                compl,
                spawn_work <- new_work!("raoe::spawn"),
                rx: RxStats::default(),
                reserve_used: Counter::default(),
                err <- ErrLog::new(),
            }),
            GFP_KERNEL,
        )
    }

    fn find(&self, addr: Addr) -> Option<Arc<Dev>> {
        self.bucket(addr)
            .lock()
            .iter()
            .find(|d| d.addr == addr)
            .cloned()
    }

    /// The lookup bucket of `addr`.
    fn bucket(&self, addr: Addr) -> &SpinLockIrq<KVec<Arc<Dev>>> {
        let h = usize::from(addr.major) * 31 + usize::from(addr.minor);
        &self.lookup[h % LOOKUP_BUCKETS]
    }

    /// The completion queue of device number `index`: the `index % n`-th
    /// online CPU's thread (seed 001's `minor % ncpus`), or the first thread
    /// while that one is not running yet.
    fn compl_for(&self, index: usize) -> &Compl {
        let first = &self.compl[0];
        if module_parameters::single_thread.value() {
            return first;
        }
        let n = cpu::num_online() as usize;
        if n == 0 {
            return first;
        }
        let mut k = index % n;
        for c in self.compl.iter() {
            if cpu::online(c.cpu) {
                if k == 0 {
                    return if c.running.load(Relaxed) { c } else { first };
                }
                k -= 1;
            }
        }
        first
    }

    /// Starts completion threads for online CPUs that have none (work item).
    fn spawn_threads(this: &Arc<Self>) {
        let all = !module_parameters::single_thread.value();
        for (i, c) in this.compl.iter().enumerate() {
            if (i > 0 && !all) || !cpu::online(c.cpu) || c.running.load(Relaxed) {
                continue;
            }
            let mut slot = c.thread.lock();
            if slot.is_some() {
                continue;
            }
            let aoe = this.clone();
            match Kthread::spawn(fmt!("raoe_compl/{}", i), Some(c.cpu), move |ctx| {
                compl_thread(&aoe, i, ctx)
            }) {
                Ok(t) => {
                    *slot = Some(t);
                    c.running.store(true, Relaxed);
                }
                Err(e) => pr_warn!("cannot start completion thread {}: {:?}\n", i, e),
            }
        }
    }

    fn missing_threads(&self) -> bool {
        let all = !module_parameters::single_thread.value();
        self.compl
            .iter()
            .enumerate()
            .any(|(i, c)| (i == 0 || all) && cpu::online(c.cpu) && !c.running.load(Relaxed))
    }

    /// A socket buffer for a frame of `len` bytes: a fresh one, or one of the
    /// reserve when memory is short.
    fn skb(&self, len: usize) -> Option<SkBuff> {
        if let Ok(skb) = SkBuff::alloc(HEADROOM, len, GFP_NOIO | __GFP_NOWARN) {
            return Some(skb);
        }
        if len > SKB_RESERVE_LEN {
            return None;
        }
        let skb = self.skb_reserve.lock().pop();
        if skb.is_some() {
            self.reserve_used.bump();
        }
        skb
    }

    /// Tops the reserve back up (transmit thread, when memory allows).
    fn refill_reserve(&self) {
        loop {
            if self.skb_reserve.lock().len() >= SKB_RESERVE {
                return;
            }
            let Ok(skb) = SkBuff::alloc(HEADROOM, SKB_RESERVE_LEN, GFP_NOWAIT | __GFP_NOWARN)
            else {
                return;
            };
            let mut r = self.skb_reserve.lock();
            if r.push_within_capacity(skb).is_err() {
                return;
            }
        }
    }

    /// Broadcasts config queries on every allowed, running interface.
    fn discover(&self) {
        let mut ifps: KVec<ARef<NetDevice>> = KVec::new();
        {
            let ifs = self.ifs.lock();
            NetDevice::for_each(|d| {
                if d.is_ethernet() && d.is_running() && ifs.allows(d) {
                    let _ = ifps.push(d.into(), GFP_ATOMIC);
                }
            });
        }
        for ifp in ifps.iter() {
            let (Some(src), Some(mut skb)) = (ifp.ether_addr(), self.skb(wire::CFG_QUERY_LEN))
            else {
                continue;
            };
            if let Ok(f) = skb.put(wire::CFG_QUERY_LEN) {
                wire::build_cfg_query(f, &src, Addr::ANY);
                skb.set_protocol(wire::ETH_P_AOE);
                let _ = ifp.queue_xmit(skb);
            }
        }
    }

    /// Drops every path through `ifp`, which is being unregistered, and so
    /// the references to it. Returns how many paths were dropped.
    ///
    /// A frame in flight on a dropped path cannot be answered any more; it is
    /// retransmitted on another path, or the device ages to `down` when none
    /// is left, as when a target stops answering.
    fn forget_interface(&self, ifp: &NetDevice) -> usize {
        let mut dropped = 0;
        let devs = self.devs.lock();
        for d in devs.iter() {
            let mut st = d.st.lock();
            while let Some(r) = st.paths.iter().position(|p| core::ptr::eq(&*p.ifp, ifp)) {
                if st.paths.remove(r).is_err() {
                    break;
                }
                dropped += 1;
                for f in st.frames.iter_mut() {
                    if f.path == r {
                        f.path = NO_PATH;
                    } else if f.path > r && f.path != NO_PATH {
                        f.path -= 1;
                    }
                }
            }
        }
        dropped
    }

    /// Handles a config response: creates the device or adds a path.
    fn handle_cfg(self: &Arc<Self>, m: CfgMsg) {
        let dev = match self.find(m.addr) {
            Some(d) => d,
            None => match self.create_dev(&m) {
                Ok(d) => d,
                Err(e) => {
                    pr_warn!(
                        "e{}.{}: cannot add device: {:?}\n",
                        m.addr.major,
                        m.addr.minor,
                        e
                    );
                    return;
                }
            },
        };
        let payload = wire::sectors_for_mtu(m.ifp.mtu());
        let payload = if m.scnt != 0 {
            payload.min(m.scnt as usize)
        } else {
            payload
        } * wire::SECTOR;
        let mut st = dev.st.lock();
        if let Some(p) = st
            .paths
            .iter_mut()
            .find(|p| p.mac == m.mac && p.ifp.ifindex() == m.ifp.ifindex())
        {
            p.payload = payload;
        } else if payload > 0 {
            let _ = st.paths.push_within_capacity(Path {
                mac: m.mac,
                ifp: m.ifp,
                payload,
                last_ok: Instant::now(),
            });
        }
        st.fwver = m.fwver;
        st.scnt = m.scnt;
        if st.state == State::Down && !st.gone {
            st.state = State::Identifying;
            st.identify_due = true;
            st.last_rsp = Instant::now();
        }
        let _ = m.bufcnt;
    }

    fn create_dev(self: &Arc<Self>, m: &CfgMsg) -> Result<Arc<Dev>> {
        let nframes = (m.bufcnt as usize)
            .min(module_parameters::aoe_maxout.value() as usize)
            .clamp(1, MAX_FRAMES);
        let mut frames = KVec::with_capacity(nframes, GFP_NOIO)?;
        for _ in 0..nframes {
            frames.push(
                Frame {
                    kind: Kind::Free,
                    cmd: Ata::Identify,
                    tag: 0,
                    sent: Instant::now(),
                    retries: 0,
                    path: 0,
                    answered: false,
                },
                GFP_NOIO,
            )?;
        }
        // Every frame may sit answered in any completion queue.
        for c in self.compl.iter() {
            c.q.lock().items.reserve(nframes, GFP_ATOMIC)?;
        }
        let devs = self.devs.lock();
        if devs.len() >= MAX_DEVS {
            return Err(ENOSPC);
        }
        // The smallest number no live device has: it picks the completion
        // thread, and two live devices never share one by accident of a
        // removal (devices are only created by the transmit thread, so the
        // number is still free when the device is added below).
        let index = (0..MAX_DEVS)
            .find(|&i| !devs.iter().any(|d| d.index == i))
            .ok_or(ENOSPC)?;
        drop(devs);
        let dev = Arc::pin_init(
            try_pin_init!(Dev {
                addr: m.addr,
                index,
                st <- new_spinlock_irq!(DevState {
                    state: State::Down,
                    paths: KVec::with_capacity(MAX_PATHS, GFP_NOIO)?,
                    rr: 0,
                    frames,
                    nout: 0,
                    maxout: nframes,
                    acked: 0,
                    pending: Ring::with_capacity(QUEUE_DEPTH as usize, GFP_NOIO)?,
                    cur: None,
                    sectors: 0,
                    lba48: true,
                    fwver: 0,
                    scnt: 0,
                    rtt_avg_us: RTT_INIT_US,
                    rtt_dev_us: RTT_INIT_US / 4,
                    last_rsp: Instant::now(),
                    identify_due: false,
                    generation: 0,
                    gone: false,
                }),
                disk <- new_mutex!(None),
                disk_work <- new_work!("raoe::disk"),
                tx: self.tx.clone(),
                stats: DevStats::default(),
            }),
            GFP_NOIO,
        )?;
        self.devs
            .lock()
            .push_within_capacity(dev.clone())
            .map_err(|_| ENOSPC)?;
        // Room for every device in each bucket; the device is in `devs`,
        // which holds at most `MAX_DEVS`.
        let _ = self.bucket(m.addr).lock().push_within_capacity(dev.clone());
        if self.missing_threads() {
            let _ = self.tx.wq.enqueue(self.clone());
        }
        Ok(dev)
    }

    /// Fails everything a device has outstanding or queued and marks it down.
    fn fail_dev(dev: &Dev) {
        dev.st.lock().state = State::Down;
        // Frames in flight that have no response yet.
        loop {
            let work = {
                let mut st = dev.st.lock();
                let Some(f) = st
                    .frames
                    .iter_mut()
                    .find(|f| !f.answered && !matches!(f.kind, Kind::Free))
                else {
                    break;
                };
                let k = core::mem::replace(&mut f.kind, Kind::Free);
                st.nout -= 1;
                k
            };
            if let Kind::Io { req, range } = work {
                dev.stats.failed.bump();
                req.finish(range.len(), false);
            }
        }
        let cur = dev.st.lock().cur.take();
        if let Some(c) = cur {
            c.req.finish(c.total - c.off, false);
        }
        loop {
            let rq = dev.st.lock().pending.pop();
            match rq {
                Some(rq) => {
                    dev.stats.failed.bump();
                    if Request::end(rq, Err(EIO)).is_err() {
                        pr_err!("request still referenced at failure\n");
                    }
                }
                None => break,
            }
        }
    }

    /// Removes the devices `which` selects, with their disks.
    fn flush(&self, which: impl Fn(&Dev) -> bool) -> usize {
        let mut removed = 0;
        loop {
            let victim = {
                let mut devs = self.devs.lock();
                let Some(i) = devs.iter().position(|d| which(d)) else {
                    break;
                };
                devs.remove(i).ok()
            };
            let Some(dev) = victim else { break };
            self.bucket(dev.addr)
                .lock()
                .retain(|d| !Arc::ptr_eq(d, &dev));
            dev.st.lock().gone = true;
            Self::fail_dev(&dev);
            drop(dev.disk.lock().take());
            removed += 1;
        }
        removed
    }
}

impl WorkItem for Aoe {
    type Pointer = Arc<Aoe>;

    fn run(this: Arc<Aoe>) {
        Aoe::spawn_threads(&this);
    }
}

impl WorkItem for Dev {
    type Pointer = Arc<Dev>;

    /// Adds the disk once the device is identified, or updates its capacity.
    fn run(dev: Arc<Dev>) {
        // `flush` marks the device gone before it takes the disk: checking
        // under the disk lock means no disk is added after it.
        let mut disk = dev.disk.lock();
        let sectors = {
            let st = dev.st.lock();
            if st.gone {
                return;
            }
            st.sectors
        };
        if let Some(d) = disk.as_ref() {
            d.set_capacity(sectors);
            return;
        }
        let timeout_ms = (module_parameters::aoe_deadsecs.value())
            .saturating_add(30)
            .saturating_mul(1000);
        let built = (|| -> Result<GenDisk<Raoe>> {
            let tagset = Arc::pin_init(
                TagSet::with_timeout(1, QUEUE_DEPTH, 1, timeout_ms),
                GFP_KERNEL,
            )?;
            GenDiskBuilder::new()
                .capacity_sectors(sectors)
                .logical_block_size(wire::SECTOR as u32)?
                .physical_block_size(wire::SECTOR as u32)?
                .max_hw_sectors(module_parameters::aoe_maxsectors.value())?
                .build_with_attributes(
                    fmt!("etherd!e{}.{}", dev.addr.major, dev.addr.minor),
                    tagset,
                    dev.clone(),
                )
        })();
        match built {
            Ok(d) => {
                pr_info!(
                    "e{}.{}: {} sectors ({} MiB)\n",
                    dev.addr.major,
                    dev.addr.minor,
                    sectors,
                    sectors >> 11
                );
                *disk = Some(d);
            }
            Err(e) => pr_err!(
                "e{}.{}: cannot add disk: {:?}\n",
                dev.addr.major,
                dev.addr.minor,
                e
            ),
        }
    }
}

/// What the transmit thread sends for one frame.
struct Send {
    dev_addr: Addr,
    mac: [u8; wire::ETH_ALEN],
    ifp: ARef<NetDevice>,
    tag: u32,
    cmd: Ata,
    lba48: bool,
    /// Write data to copy from the request: the request and the frame's piece.
    data: Option<(Arc<IoReq>, SegRange)>,
}

impl Dev {
    /// A fresh tag for frame `frame`: generation (never 0, so tags with a
    /// zero upper half are never valid) and frame index.
    fn new_tag(st: &mut DevState, frame: usize) -> u32 {
        st.generation = st.generation.wrapping_add(1).max(1);
        (u32::from(st.generation) << 16) | frame as u32
    }

    /// Prepares frame `i` for (re)transmission on the next path.
    fn stage(&self, st: &mut DevState, i: usize) -> Option<Send> {
        if st.paths.is_empty() {
            return None;
        }
        let tag = Self::new_tag(st, i);
        // Round robin over the paths that answered lately, or over all.
        let n = st.paths.len();
        let now = Instant::now();
        let start = st.rr;
        let path = (0..n)
            .map(|k| (start + k) % n)
            .find(|&p| now - st.paths[p].last_ok <= PATH_TRUST && st.paths[p].ifp.is_running())
            .unwrap_or(start % n);
        st.rr = path.wrapping_add(1);
        let lba48 = st.lba48;
        let p = &st.paths[path];
        let (mac, ifp) = (p.mac, p.ifp.clone());
        let f = &mut st.frames[i];
        f.tag = tag;
        f.sent = Instant::now();
        f.path = path;
        let data = match (&f.kind, f.cmd) {
            (Kind::Io { req, range }, Ata::Write { .. }) => Some((req.clone(), *range)),
            _ => None,
        };
        Some(Send {
            dev_addr: self.addr,
            mac,
            ifp,
            tag,
            cmd: f.cmd,
            lba48,
            data,
        })
    }

    /// Puts new work into free frames, while the window allows. Returns the
    /// frame to send, or `None` when there is nothing (more) to do.
    fn next_frame(self: &Arc<Self>) -> Option<Send> {
        loop {
            let mut st = self.st.lock();
            if st.gone || st.state == State::Down || st.paths.is_empty() || st.nout >= st.maxout {
                return None;
            }
            let i = st
                .frames
                .iter()
                .position(|f| matches!(f.kind, Kind::Free))?;
            if st.identify_due {
                st.identify_due = false;
                let f = &mut st.frames[i];
                f.kind = Kind::Identify;
                f.cmd = Ata::Identify;
                f.retries = 0;
                f.answered = false;
                st.nout += 1;
                return self.stage(&mut st, i);
            }
            if st.state != State::Up {
                return None;
            }
            if st.cur.is_none() {
                if st.pending.is_empty() {
                    return None;
                }
                drop(st);
                // The transmit thread may sleep here (seed 003): completions
                // run in other threads and free memory meanwhile. On failure
                // the request stays queued for the next tick.
                let req = IoReq::new().ok()?;
                let mut st = self.st.lock();
                let rq = st.pending.pop()?;
                let (write, sector, total) = (rq.op() == Op::Write, rq.sector(), rq.bytes());
                match Segments::new(rq) {
                    Ok(data) => req.start(data),
                    Err(rq) => {
                        // No data (`queue_rq` only takes reads and writes,
                        // which have some).
                        drop(st);
                        self.stats.failed.bump();
                        if Request::end(rq, Err(EIO)).is_err() {
                            pr_err!("request still referenced at failure\n");
                        }
                        continue;
                    }
                }
                st.cur = Some(Current {
                    req,
                    write,
                    sector,
                    off: 0,
                    total,
                });
                continue;
            }
            let payload = st
                .paths
                .iter()
                .map(|p| p.payload)
                .min()
                .unwrap_or(wire::SECTOR);
            let (lba, n, range, write, req, done) = {
                let c = st.cur.as_mut()?;
                let n = (c.total - c.off).min(payload as u32);
                let lba = c.sector + u64::from(c.off) / wire::SECTOR as u64;
                // The frames of a request take its data in order, so each
                // segment is walked once here.
                let range = c.req.next(n)?;
                c.off += n;
                (lba, n, range, c.write, c.req.clone(), c.off == c.total)
            };
            if done {
                st.cur = None;
            }
            let sectors = (n as usize / wire::SECTOR) as u8;
            if st.nout == 0 {
                // Idle until now: silence is counted from here.
                st.last_rsp = Instant::now();
            }
            let f = &mut st.frames[i];
            f.cmd = if write {
                Ata::Write { lba, sectors }
            } else {
                Ata::Read { lba, sectors }
            };
            f.kind = Kind::Io { req, range };
            f.retries = 0;
            f.answered = false;
            st.nout += 1;
            return self.stage(&mut st, i);
        }
    }

    /// Finds a frame whose response is overdue and stages its retransmission;
    /// marks the device down when it has been silent too long.
    fn next_retransmit(&self, now: Instant<Monotonic>) -> Option<Send> {
        let mut st = self.st.lock();
        if st.state == State::Down || st.nout == 0 {
            return None;
        }
        let rto = (st.rtt_avg_us + 4 * st.rtt_dev_us).clamp(RTO_MIN_US, RTO_MAX_US);
        let dead = Delta::from_secs(i64::from(module_parameters::aoe_deadsecs.value()));
        let i = st.frames.iter().position(|f| {
            !f.answered && !matches!(f.kind, Kind::Free) && (now - f.sent).as_micros_ceil() > rto
        })?;
        if now - st.last_rsp > dead {
            st.state = State::Down;
            return None;
        }
        st.frames[i].retries += 1;
        // Multiplicative decrease of the window, back-off of the timer.
        st.maxout = (st.maxout / 2).max(1);
        st.acked = 0;
        st.rtt_avg_us = (st.rtt_avg_us * 2).min(RTO_MAX_US);
        self.stats.retransmits.bump();
        self.stage(&mut st, i)
    }
}

/// Builds and transmits one frame.
///
/// Write data is copied into the frame, not attached as page fragments: a
/// frame can be read after its request ended (a first transmission the target
/// processes after the retransmission that completed the request), and by
/// then the request's pages may hold other data (see `raoe.rst`).
fn transmit(aoe: &Aoe, dev: &Dev, s: Send) {
    let len = wire::ata_len(s.data.as_ref().map_or(0, |d| d.1.len() as usize));
    let Some(src) = s.ifp.ether_addr() else {
        return;
    };
    let Some(mut skb) = aoe.skb(len) else {
        // Retransmission will try again.
        dev.stats.xmit_errors.bump();
        return;
    };
    let Ok(f) = skb.put(len) else { return };
    wire::build_ata(f, &s.mac, &src, s.dev_addr, s.tag, s.cmd, s.lba48);
    if let Some((req, range)) = &s.data {
        let data = &mut f[wire::ata_len(0)..];
        if req.copy_out(range, data).is_err() {
            dev.stats.xmit_errors.bump();
            return;
        }
    }
    skb.set_protocol(wire::ETH_P_AOE);
    dev.stats.frames.bump();
    if s.ifp.queue_xmit(skb).is_err() {
        dev.stats.xmit_errors.bump();
    }
}

/// The transmit thread.
fn tx_thread(aoe: &Arc<Aoe>, ctx: &Context) {
    let tick = Delta::from_millis(i64::from(TICK_MS));
    let mut last_tick = Instant::<Monotonic>::now();
    loop {
        let discover = {
            let mut st = aoe.tx.st.lock();
            while !st.kick && !st.stop && !st.discover && st.cfg.is_empty() {
                if last_tick.elapsed() >= tick {
                    break;
                }
                let _ = aoe
                    .tx
                    .wait
                    .wait_interruptible_timeout(&mut st, msecs_to_jiffies(TICK_MS));
            }
            if st.stop || ctx.should_stop() {
                return;
            }
            st.kick = false;
            core::mem::replace(&mut st.discover, false)
        };
        loop {
            let m = aoe.tx.st.lock().cfg.pop();
            match m {
                Some(m) => aoe.handle_cfg(m),
                None => break,
            }
        }
        if discover {
            aoe.discover();
        }
        let now = Instant::<Monotonic>::now();
        let aging = now - last_tick >= tick;
        if aging {
            last_tick = now;
            aoe.refill_reserve();
            if aoe.missing_threads() {
                let _ = aoe.tx.wq.enqueue(aoe.clone());
            }
        }
        let mut i = 0;
        loop {
            let dev = aoe.devs.lock().get(i).cloned();
            let Some(dev) = dev else { break };
            i += 1;
            if aging {
                while let Some(s) = dev.next_retransmit(now) {
                    transmit(aoe, &dev, s);
                }
                let down = {
                    let st = dev.st.lock();
                    st.state == State::Down
                        && (st.nout > 0 || st.cur.is_some() || !st.pending.is_empty())
                };
                if down {
                    pr_warn!(
                        "e{}.{}: target silent for {} s, failing its I/O\n",
                        dev.addr.major,
                        dev.addr.minor,
                        module_parameters::aoe_deadsecs.value()
                    );
                    Aoe::fail_dev(&dev);
                }
            }
            while let Some(s) = dev.next_frame() {
                transmit(aoe, &dev, s);
            }
        }
    }
}

/// A completion thread's queue as a completion source.
struct ComplSource<'a> {
    aoe: &'a Aoe,
    c: &'a Compl,
}

/// A completion thread's queue with its lock held, for one batcher pass.
struct LockedCompl<'a> {
    q: SpinLockIrqGuard<'a, ComplQueue>,
}

impl CompletionQueue for LockedCompl<'_> {
    type Completion = Done;

    fn poll(&mut self, max: usize, mut sink: impl FnMut(Done)) -> usize {
        let mut n = 0;
        while n < max {
            match self.q.items.pop() {
                Some(d) => sink(d),
                None => break,
            }
            n += 1;
        }
        n
    }

    fn arm(&mut self) -> Armed {
        // The producer queues under this lock and then wakes us, so a completion queued after
        // this check is never missed.
        if self.q.items.is_empty() {
            Armed::Quiet
        } else {
            Armed::MaybeMissed
        }
    }

    fn pending(&mut self) -> bool {
        !self.q.items.is_empty()
    }
}

impl CompletionSource for ComplSource<'_> {
    type Completion = Done;
    type Queue<'b>
        = LockedCompl<'b>
    where
        Self: 'b;

    fn lock(&self) -> LockedCompl<'_> {
        LockedCompl { q: self.c.q.lock() }
    }

    /// Called after the queue's lock is dropped: receive handlers keep queueing meanwhile.
    fn complete(&self, d: Done) {
        complete(self.aoe, d);
        self.c.completed.bump();
    }
}

/// Reads the headers of a received frame into a buffer (the data stays in the
/// socket buffer); returns the buffer and how many bytes it holds.
fn frame_head(skb: &RxSkBuff) -> ([u8; wire::HEAD_LEN], usize) {
    let mut head = [0u8; wire::HEAD_LEN];
    let n = skb.len().min(wire::HEAD_LEN);
    // Cannot fail: the frame has `n` bytes.
    let _ = skb.read(0, &mut head[..n]);
    (head, n)
}

/// Reads and parses the IDENTIFY data of a response, `at` bytes into it.
fn read_identify(skb: &RxSkBuff, at: usize) -> Option<wire::Identity> {
    let mut id = [0u8; wire::SECTOR];
    skb.read(at, &mut id).ok()?;
    wire::parse_identify(&id)
}

/// Processes one response: data into the request, frame back to the pool.
fn complete(aoe: &Aoe, d: Done) {
    let dev = d.dev;
    let kind = {
        let mut st = dev.st.lock();
        let Some(f) = st.frames.get_mut(d.frame) else {
            return;
        };
        if !f.answered {
            // Failed meanwhile (device went down); the frame is no longer ours.
            return;
        }
        f.answered = false;
        let k = (core::mem::replace(&mut f.kind, Kind::Free), f.cmd);
        st.nout -= 1;
        k
    };
    let (kind, cmd) = kind;
    let (head, n) = frame_head(&d.skb);
    let ok = matches!(wire::parse(&head[..n]), Ok(Response::Ata { ok: true, .. }));
    // The data follows the headers; it is copied out of the buffer, wherever
    // the buffer holds it.
    let data_at = wire::ata_len(0);
    match kind {
        Kind::Io { req, range } => {
            let ok = ok
                && match cmd {
                    Ata::Read { .. } => req.copy_in(&range, &d.skb, data_at).is_ok(),
                    _ => true,
                };
            if !ok {
                dev.stats.failed.bump();
                aoe.err.post(format_args!(
                    "{:>15} e{}.{} cmd={:?}",
                    "ata error", dev.addr.major, dev.addr.minor, cmd
                ));
            }
            req.finish(range.len(), ok);
        }
        Kind::Identify => match ok.then(|| read_identify(&d.skb, data_at)).flatten() {
            Some(id) => {
                {
                    let mut st = dev.st.lock();
                    st.sectors = id.sectors;
                    st.lba48 = id.lba48;
                    if st.state == State::Identifying {
                        st.state = State::Up;
                    }
                }
                let _ = dev.tx.wq.enqueue(dev.clone());
            }
            _ => {
                pr_warn!(
                    "e{}.{}: bad IDENTIFY response\n",
                    dev.addr.major,
                    dev.addr.minor
                );
                dev.st.lock().identify_due = true;
            }
        },
        Kind::Free => {}
    }
    dev.tx.kick();
}

/// A completion thread: drains its queue in budgeted passes.
fn compl_thread(aoe: &Arc<Aoe>, index: usize, ctx: &Context) {
    let c = &aoe.compl[index];
    let src = ComplSource { aoe, c };
    let mut passes = 0u32;
    loop {
        match c.batcher.run(&src) {
            Pass::Reschedule | Pass::Deferred | Pass::Polling => {
                kernel::task::might_sleep();
                passes = passes.wrapping_add(1);
                if passes % 64 == 0 {
                    kernel::processor::cpu_relax();
                }
                continue;
            }
            Pass::Armed => {}
        }
        // Come back to our CPU after it returned from being offline.
        if CpuId::current() != c.cpu && cpu::online(c.cpu) {
            let _ = ctx.set_cpu(c.cpu);
        }
        let mut q = c.q.lock();
        while q.items.is_empty() && !q.stop {
            let _ = c
                .wait
                .wait_interruptible_timeout(&mut q, msecs_to_jiffies(1000));
            if ctx.should_stop() {
                break;
            }
        }
        if q.items.is_empty() && (q.stop || ctx.should_stop()) {
            return;
        }
    }
}

/// The packet handler.
struct Rx {
    aoe: Arc<Aoe>,
}

impl PacketHandler for Rx {
    fn receive(&self, ifp: &NetDevice, skb: RxSkBuff) {
        let aoe = &self.aoe;
        if !ifp.in_init_net() || !aoe.ifs.lock().allows(ifp) {
            return;
        }
        let (head, n) = frame_head(&skb);
        let rsp = match wire::parse(&head[..n]) {
            Ok(r) => r,
            Err(r) => {
                match r {
                    wire::Reject::Short => &aoe.rx.short,
                    wire::Reject::NotResponse => &aoe.rx.not_response,
                    wire::Reject::AoeError => &aoe.rx.aoe_error,
                    wire::Reject::BadAddr => &aoe.rx.bad_addr,
                }
                .bump();
                return;
            }
        };
        match rsp {
            Response::Cfg {
                addr,
                src,
                bufcnt,
                fwver,
                scnt,
            } => {
                aoe.rx.cfg.bump();
                let m = CfgMsg {
                    addr,
                    mac: src,
                    ifp: ifp.into(),
                    bufcnt,
                    fwver,
                    scnt,
                };
                if aoe.tx.st.lock().cfg.push(m).is_err() {
                    aoe.rx.dropped.bump();
                }
                aoe.tx.kick();
            }
            Response::Ata { addr, src, tag, .. } => {
                let Some(dev) = aoe.find(addr) else {
                    aoe.rx.unknown_dev.bump();
                    return;
                };
                let frame = (tag & 0xffff) as usize;
                {
                    let mut st = dev.st.lock();
                    let now = Instant::<Monotonic>::now();
                    let unexpected = || {
                        dev.stats.unexpected.bump();
                        aoe.err.post(format_args!(
                            "{:>15} e{}.{} tag={:08x} s={}",
                            "unexpected rsp",
                            addr.major,
                            addr.minor,
                            tag,
                            Mac(&src)
                        ));
                    };
                    let Some(f) = st.frames.get_mut(frame) else {
                        unexpected();
                        return;
                    };
                    let path = f.path;
                    if f.tag != tag
                        || f.answered
                        || matches!(f.kind, Kind::Free)
                        || st.paths.get(path).map(|p| p.mac) != Some(src)
                    {
                        unexpected();
                        return;
                    }
                    let Some(f) = st.frames.get_mut(frame) else {
                        return;
                    };
                    f.answered = true;
                    let sample = (f.retries == 0).then(|| (now - f.sent).as_micros_ceil());
                    st.last_rsp = now;
                    st.paths[path].last_ok = now;
                    if let Some(rtt) = sample {
                        // Jacobson's estimator, as the C driver's calc_rttavg().
                        let err = rtt - st.rtt_avg_us;
                        st.rtt_avg_us += err / 8;
                        st.rtt_dev_us += (err.abs() - st.rtt_dev_us) / 4;
                    }
                    // Additive increase of the window.
                    st.acked += 1;
                    if st.acked >= st.maxout && st.maxout < st.frames.len() {
                        st.maxout += 1;
                        st.acked = 0;
                    }
                }
                let c = aoe.compl_for(dev.index);
                let pushed = c.q.lock().items.push(Done { dev, frame, skb });
                match pushed {
                    Ok(()) => c.wait.notify_one(),
                    Err(d) => {
                        // Cannot happen: every frame has a reserved slot. Let
                        // retransmission recover.
                        d.dev.st.lock().frames[frame].answered = false;
                        aoe.rx.dropped.bump();
                    }
                }
            }
        }
    }
}

/// The block driver.
struct Raoe;

#[vtable]
impl Operations for Raoe {
    type QueueData = Arc<Dev>;

    fn queue_rq(dev: ArcBorrow<'_, Dev>, rq: ARef<Request<Self>>, _is_last: bool) -> Result {
        match rq.op() {
            Op::Read | Op::Write => {}
            _ => return Err(EOPNOTSUPP),
        }
        {
            let mut st = dev.st.lock();
            if st.state == State::Down || st.gone {
                return Err(EIO);
            }
            // Never full: the ring has a slot per tag.
            if st.pending.push(rq).is_err() {
                return Err(EBUSY);
            }
        }
        dev.tx.kick();
        Ok(())
    }

    fn commit_rqs(_dev: ArcBorrow<'_, Dev>) {}

    fn complete(rq: ARef<Request<Self>>) {
        let _ = Request::end_ok(rq);
    }

    fn timeout(dev: ArcBorrow<'_, Dev>, tag: u32) {
        // Only reached if our own aging failed to end the request.
        pr_err!(
            "e{}.{}: request (tag {tag}) outlived aoe_deadsecs\n",
            dev.addr.major,
            dev.addr.minor
        );
    }
}

impl DiskAttributes for Raoe {
    type Module = RaoeModule;
    const NAMES: &'static [&'static CStr] = &[c"state", c"mac", c"netif", c"fwver", c"payload"];

    fn show(dev: ArcBorrow<'_, Dev>, index: usize, out: &mut Formatter<'_>) -> Result {
        use core::fmt::Write;
        let st = dev.st.lock();
        let r = match index {
            0 => writeln!(
                out,
                "{}",
                match st.state {
                    State::Up => "up",
                    State::Identifying => "up,kickme",
                    State::Down => "down",
                }
            ),
            1 => match st.paths.first() {
                Some(p) => writeln!(out, "{}", Mac(&p.mac)),
                None => writeln!(out, "none"),
            },
            2 => {
                for (i, p) in st.paths.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(out, "{}{}", sep, p.ifp.name()).map_err(|_| EINVAL)?;
                }
                writeln!(out)
            }
            3 => writeln!(out, "0x{:04x}", st.fwver),
            _ => writeln!(
                out,
                "{}",
                st.paths.iter().map(|p| p.payload).min().unwrap_or(0)
            ),
        };
        r.map_err(|_| EINVAL)
    }
}

/// A MAC address, printed as the C driver's `%pm` (12 hex digits).
struct Mac<'a>(&'a [u8; wire::ETH_ALEN]);

impl core::fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The `/dev/etherd/` control files.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CtlKind {
    Discover,
    Interfaces,
    Revalidate,
    Flush,
    /// Read only: error messages.
    Err,
}

struct Ctl {
    aoe: Arc<Aoe>,
    kind: CtlKind,
}

#[vtable]
impl MiscDevice for Ctl {
    type Ptr = KBox<Self>;
    type RegistrationData = (Arc<Aoe>, CtlKind);

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let (aoe, kind) = misc.data();
        Ok(KBox::new(
            Ctl {
                aoe: aoe.clone(),
                kind: *kind,
            },
            GFP_KERNEL,
        )?)
    }

    fn read_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let ctl = kiocb.file();
        match ctl.kind {
            CtlKind::Err => ctl.aoe.err.read(kiocb.is_nonblocking(), iov),
            _ => Err(EINVAL),
        }
    }

    fn write_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let ctl = kiocb.file();
        let total = iov.len();
        let mut buf = [0u8; 256];
        let n = iov.copy_from_iter(&mut buf);
        let text = &buf[..n];
        let words = || {
            text.split(|&b| b.is_ascii_whitespace() || b == 0)
                .filter(|w| !w.is_empty())
        };
        let aoe = &ctl.aoe;
        match ctl.kind {
            CtlKind::Err => return Err(EINVAL),
            CtlKind::Discover => {
                aoe.tx.st.lock().discover = true;
                aoe.tx.kick();
            }
            CtlKind::Interfaces => {
                let mut ifs = aoe.ifs.lock();
                ifs.count = 0;
                for w in words().take(MAX_IFS) {
                    if w.len() >= 16 {
                        return Err(EINVAL);
                    }
                    let i = ifs.count;
                    ifs.names[i] = [0; 16];
                    for (d, s) in ifs.names[i].iter_mut().zip(w.iter()) {
                        *d = *s;
                    }
                    ifs.count += 1;
                }
                drop(ifs);
                aoe.tx.st.lock().discover = true;
                aoe.tx.kick();
            }
            CtlKind::Revalidate => {
                let name = words().next().ok_or(EINVAL)?;
                let addr = parse_name(name).ok_or(EINVAL)?;
                let dev = aoe.find(addr).ok_or(ENODEV)?;
                {
                    let mut st = dev.st.lock();
                    if st.state == State::Down {
                        st.state = State::Identifying;
                        st.last_rsp = Instant::now();
                    }
                    st.identify_due = true;
                }
                aoe.tx.st.lock().discover = true;
                aoe.tx.kick();
            }
            CtlKind::Flush => {
                // aoe-flush: "-a" for every device, device names for those,
                // nothing for the devices that are down.
                let mut n = 0;
                let mut named = false;
                for w in words() {
                    named = true;
                    n += if w == b"-a" {
                        aoe.flush(|_| true)
                    } else {
                        let addr = parse_name(w).ok_or(EINVAL)?;
                        aoe.flush(|d| d.addr == addr)
                    };
                }
                if !named {
                    n = aoe.flush(|d| d.st.lock().state == State::Down);
                }
                pr_info!("flushed {} device(s)\n", n);
            }
        }
        Ok(total)
    }
}

/// Parses `eX.Y` (optionally with a `/dev/etherd/` prefix).
fn parse_name(name: &[u8]) -> Option<Addr> {
    let name = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    let rest = name.strip_prefix(b"e")?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let num = |s: &[u8]| -> Option<u32> {
        if s.is_empty() || s.len() > 5 {
            return None;
        }
        s.iter().try_fold(0u32, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })
    };
    Some(Addr {
        major: u16::try_from(num(&rest[..dot])?).ok()?,
        minor: u8::try_from(num(&rest[dot + 1..])?).ok()?,
    })
}

fn write_stats(aoe: &Arc<Aoe>, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let l = |a: &Counter| a.get();
    writeln!(
        f,
        "rx: cfg {} short {} not_response {} aoe_error {} bad_addr {} unknown_dev {} dropped {}",
        l(&aoe.rx.cfg),
        l(&aoe.rx.short),
        l(&aoe.rx.not_response),
        l(&aoe.rx.aoe_error),
        l(&aoe.rx.bad_addr),
        l(&aoe.rx.unknown_dev),
        l(&aoe.rx.dropped)
    )?;
    writeln!(
        f,
        "tx: reserve_used {} single_thread {}",
        l(&aoe.reserve_used),
        module_parameters::single_thread.value()
    )?;
    writeln!(f, "err: dropped {}", aoe.err.dropped())?;
    for (i, c) in aoe.compl.iter().enumerate() {
        if !c.running.load(Relaxed) {
            continue;
        }
        let s = c.batcher.stats();
        writeln!(
            f,
            "thread {}: cpu {} completions {} {}",
            i,
            c.cpu.as_u32(),
            l(&c.completed),
            s
        )?;
    }
    let devs = aoe.devs.lock();
    for d in devs.iter() {
        let st = d.st.lock();
        writeln!(
            f,
            "e{}.{}: state {} thread {} frames {} nout {} maxout {} sent {} retransmits {} \
             unexpected {} failed {} xmit_errors {} rtt_avg_us {} rtt_dev_us {} paths {}",
            d.addr.major,
            d.addr.minor,
            match st.state {
                State::Up => "up",
                State::Identifying => "identifying",
                State::Down => "down",
            },
            aoe.compl_for(d.index).cpu.as_u32(),
            st.frames.len(),
            st.nout,
            st.maxout,
            l(&d.stats.frames),
            l(&d.stats.retransmits),
            l(&d.stats.unexpected),
            l(&d.stats.failed),
            l(&d.stats.xmit_errors),
            st.rtt_avg_us,
            st.rtt_dev_us,
            st.paths.len()
        )?;
    }
    Ok(())
}

/// Drops raoe's references to network devices that go away.
struct NetEvents {
    aoe: Arc<Aoe>,
}

impl NetdevEvents for NetEvents {
    fn unregister(&self, dev: &NetDevice) {
        let n = self.aoe.forget_interface(dev);
        if n > 0 {
            pr_info!(
                "{}: interface going away, {} path(s) dropped\n",
                dev.name(),
                n
            );
        }
    }
}

struct RaoeModule {
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
        let aoe = step("allocate driver state", Aoe::new())?;
        Aoe::spawn_threads(&aoe);
        let mut ctls = KVec::with_capacity(5, GFP_KERNEL)?;
        for (name, kind) in [
            (c"etherd!discover", CtlKind::Discover),
            (c"etherd!interfaces", CtlKind::Interfaces),
            (c"etherd!revalidate", CtlKind::Revalidate),
            (c"etherd!flush", CtlKind::Flush),
            (c"etherd!err", CtlKind::Err),
        ] {
            let reg = KBox::pin_init(
                MiscDeviceRegistration::register(MiscDeviceOptions { name }, (aoe.clone(), kind)),
                GFP_KERNEL,
            );
            ctls.push(step("register a control file", reg)?, GFP_KERNEL)?;
        }
        let t = aoe.clone();
        let tx_thread = step(
            "start the transmit thread",
            Kthread::spawn(fmt!("raoe_tx"), None, move |ctx| tx_thread(&t, ctx)),
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
            debugfs.read_callback_file(c"stats", aoe.clone(), &write_stats),
            GFP_KERNEL,
        )
        .ok();
        let name = CString::try_from_fmt(fmt!("raoe"))?;
        pr_info!(
            "{}: AoE v{} with {} completion thread(s) max, deadsecs {}\n",
            name.to_str().unwrap_or("raoe"),
            1,
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
            c.q.lock().stop = true;
            c.wait.notify_all();
            drop(c.thread.lock().take());
            c.running.store(false, Relaxed);
            while let Some(d) = c.q.lock().items.pop() {
                complete(&self.aoe, d);
            }
        }
    }
}
