// SPDX-License-Identifier: GPL-2.0

//! An AoE device (one shelf.slot): its life, its paths to the target, its
//! frames, and the retransmission timer and congestion window that govern
//! them.

use kernel::{
    block::mq::{
        gen_disk::BlockMajor,
        gen_disk::GenDisk,
        Op,
        Request,
        Segments, //
    },
    net::netdevice::NetDevice,
    new_mutex, new_spinlock_irq, new_work,
    prelude::*,
    sync::{aref::ARef, Arc, Mutex, SpinLockIrq},
    time::{Delta, Instant, Monotonic},
    workqueue::Work,
};

use crate::{
    frame::{new_tag, Cmd, Frame, IoReq, Job, Piece},
    module_parameters,
    ring::Ring,
    stats::DevStats,
    tx::{Alloc, Outgoing, Tx, WriteData},
    wire::{self, Addr, Ata},
    Raoe, //
};

/// Retransmission timeout bounds and initial estimate, in microseconds.
const RTO_MIN_US: i64 = 20_000;
const RTO_MAX_US: i64 = 4_000_000;
const RTT_INIT_US: i64 = 100_000;

/// A path that has not answered for this long gets new frames only when no
/// other path answers either (a dead or bogus path must not stall I/O).
const PATH_TRUST: Delta = Delta::from_secs(3);

/// A path's identity within its device, stable while paths come and go: a
/// frame remembers the path it was sent on by identity, so that dropping
/// another path never makes it point at the wrong one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathId(u32);

impl PathId {
    /// No path (a command not transmitted yet); never given to a path.
    pub(crate) const NONE: PathId = PathId(0);
}

/// A way to reach a target: its MAC through one of our interfaces.
pub(crate) struct Path {
    pub(crate) id: PathId,
    pub(crate) mac: [u8; wire::ETH_ALEN],
    pub(crate) ifp: ARef<NetDevice>,
    /// Most data bytes per frame on this path.
    pub(crate) payload: usize,
    /// When a response last came back over this path (creation time at first).
    pub(crate) last_ok: Instant<Monotonic>,
}

/// Where a device is in its life.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    /// Found, IDENTIFY outstanding; requests wait.
    Identifying,
    /// Serving I/O.
    Up,
    /// Silent past `aoe_deadsecs`: I/O fails until a config response
    /// rediscovers it.
    Down,
    /// Flushed, or the module is going away: I/O fails, and nothing brings
    /// it back (it is no longer in the device lists).
    Gone,
}

impl Life {
    /// Whether I/O fails at once.
    pub(crate) fn failing(self) -> bool {
        matches!(self, Life::Down | Life::Gone)
    }

    /// The word of the sysfs `state` attribute (the C driver's).
    pub(crate) fn sysfs(self) -> &'static str {
        match self {
            Life::Up => "up",
            Life::Identifying => "up,kickme",
            Life::Down | Life::Gone => "down",
        }
    }

    /// The word of the debugfs statistics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Life::Up => "up",
            Life::Identifying => "identifying",
            Life::Down => "down",
            Life::Gone => "gone",
        }
    }
}

/// The request being split into frames.
pub(crate) struct Current {
    pub(crate) req: Arc<IoReq>,
    pub(crate) write: bool,
    pub(crate) sector: u64,
    /// Bytes already put in frames.
    pub(crate) off: u32,
    pub(crate) total: u32,
}

/// A device's state, under `Dev::st`.
pub(crate) struct DevState {
    pub(crate) life: Life,
    /// An IDENTIFY is to be sent (discovery, or revalidation while up).
    pub(crate) identify_due: bool,
    pub(crate) paths: KVec<Path>,
    next_path: u32,
    rr: usize,
    pub(crate) frames: KVec<Frame>,
    /// Frames not free (waiting or answered).
    pub(crate) nout: usize,
    /// Congestion window: most frames in use.
    pub(crate) maxout: usize,
    /// Responses since the window last grew.
    acked: usize,
    pub(crate) pending: Ring<ARef<Request<Raoe>>>,
    pub(crate) cur: Option<Current>,
    pub(crate) sectors: u64,
    pub(crate) lba48: bool,
    pub(crate) fwver: u16,
    /// The last IDENTIFY data (`HDIO_GET_IDENTITY`).
    pub(crate) ident: [u8; wire::SECTOR],
    /// Cylinders, heads, sectors per track (`HDIO_GETGEO`).
    pub(crate) chs: (u16, u8, u8),
    /// Most sectors per frame the target accepts (0: no limit given).
    pub(crate) scnt: u8,
    pub(crate) rtt_avg_us: i64,
    pub(crate) rtt_dev_us: i64,
    pub(crate) last_rsp: Instant<Monotonic>,
    generation: u16,
}

impl DevState {
    /// The path `id`, if it still exists.
    pub(crate) fn path(&self, id: PathId) -> Option<&Path> {
        self.paths.iter().find(|p| p.id == id)
    }

    /// Adds a path, or updates the payload of a known one.
    pub(crate) fn add_path(
        &mut self,
        mac: [u8; wire::ETH_ALEN],
        ifp: ARef<NetDevice>,
        payload: usize,
    ) {
        if let Some(p) = self
            .paths
            .iter_mut()
            .find(|p| p.mac == mac && p.ifp.ifindex() == ifp.ifindex())
        {
            p.payload = payload;
        } else if payload > 0 {
            self.next_path = self.next_path.wrapping_add(1).max(1);
            let _ = self.paths.push_within_capacity(Path {
                id: PathId(self.next_path),
                mac,
                ifp,
                payload,
                last_ok: Instant::now(),
            });
        }
    }

    /// Drops every path through `ifp`; returns how many. A frame in flight
    /// on a dropped path can no longer be answered (its path is not found):
    /// it is retransmitted on another path, or the device ages to `Down`.
    pub(crate) fn drop_paths(&mut self, ifp: &NetDevice) -> usize {
        let before = self.paths.len();
        self.paths.retain(|p| !core::ptr::eq(&*p.ifp, ifp));
        before - self.paths.len()
    }

    /// Accounts for a response to a command sent at `sent` over `path`
    /// (Jacobson's RTT estimator, as the C driver's `calc_rttavg()`, only for
    /// first transmissions; additive increase of the window).
    pub(crate) fn on_response(&mut self, path: PathId, sent: Instant<Monotonic>, first: bool) {
        let now = Instant::<Monotonic>::now();
        self.last_rsp = now;
        if let Some(p) = self.paths.iter_mut().find(|p| p.id == path) {
            p.last_ok = now;
        }
        if first {
            let err = (now - sent).as_micros_ceil() - self.rtt_avg_us;
            self.rtt_avg_us += err / 8;
            self.rtt_dev_us += (err.abs() - self.rtt_dev_us) / 4;
        }
        self.acked += 1;
        if self.acked >= self.maxout && self.maxout < self.frames.len() {
            self.maxout += 1;
            self.acked = 0;
        }
    }

    /// The retransmission timeout.
    fn rto_us(&self) -> i64 {
        (self.rtt_avg_us + 4 * self.rtt_dev_us).clamp(RTO_MIN_US, RTO_MAX_US)
    }

    /// Multiplicative decrease of the window and back-off of the timer, after
    /// a loss.
    fn on_loss(&mut self) {
        self.maxout = (self.maxout / 2).max(1);
        self.acked = 0;
        self.rtt_avg_us = (self.rtt_avg_us * 2).min(RTO_MAX_US);
    }

    /// Whether the device holds I/O (frames, a request being split, or
    /// queued requests).
    pub(crate) fn busy(&self) -> bool {
        self.nout > 0 || self.cur.is_some() || !self.pending.is_empty()
    }
}

/// What [`Dev::next_frame`] found.
pub(crate) enum Next {
    /// A frame to transmit.
    Frame(Outgoing),
    /// Nothing to send now (window full, nothing queued, not up).
    Idle,
    /// A request waits for a carrier that could not be allocated without
    /// sleeping.
    NeedMemory,
}

/// An AoE device (one shelf.slot).
///
/// Lock order: `Dev::disk` before `Dev::st`; `Aoe::devs` before `Dev::st`;
/// `Dev::st` before `IoReq::inner` and the error log's lock.
#[pin_data]
pub(crate) struct Dev {
    pub(crate) addr: Addr,
    /// Device number, the smallest no other live device has.
    pub(crate) index: usize,
    /// Index of the completion thread of every response of this device.
    pub(crate) compl: usize,
    #[pin]
    pub(crate) st: SpinLockIrq<DevState>,
    #[pin]
    pub(crate) disk: Mutex<Option<GenDisk<Raoe>>>,
    #[pin]
    pub(crate) disk_work: Work<Dev, DISK_WORK>,
    /// Transmission that may sleep for memory ([`Next::NeedMemory`]): one
    /// work item per device, so a device waiting for memory holds up no
    /// other.
    #[pin]
    pub(crate) tx_work: Work<Dev, TX_WORK>,
    pub(crate) tx: Arc<Tx>,
    pub(crate) stats: DevStats,
    /// Static device numbers (`aoe_dyndevs=0`): the major and the disk's
    /// first minor; `None` for numbers from the block layer.
    pub(crate) numbers: Option<(Arc<BlockMajor>, u32)>,
}

kernel::impl_has_work! {
    impl HasWork<Self, DISK_WORK> for Dev { self.disk_work }
}

kernel::impl_has_work! {
    impl HasWork<Self, TX_WORK> for Dev { self.tx_work }
}

/// Work item of a device that adds its disk ([`Dev`]'s `WorkItem<DISK_WORK>`).
pub(crate) const DISK_WORK: u64 = 0;
/// Work item of a device that transmits with sleeping allocations.
pub(crate) const TX_WORK: u64 = 1;

/// What a new device allocates up front, so that I/O does not allocate.
pub(crate) struct DevCapacity {
    /// Frames: the most commands outstanding at the target.
    pub(crate) nframes: usize,
    /// The most paths to the target.
    pub(crate) max_paths: usize,
    /// The most requests waiting for frames.
    pub(crate) queue_depth: usize,
}

impl Dev {
    /// A new device, down until a config response gives it a path and
    /// IDENTIFY succeeds.
    pub(crate) fn new(
        addr: Addr,
        index: usize,
        compl: usize,
        cap: DevCapacity,
        tx: Arc<Tx>,
        numbers: Option<(Arc<BlockMajor>, u32)>,
    ) -> Result<Arc<Self>> {
        let DevCapacity {
            nframes,
            max_paths,
            queue_depth,
        } = cap;
        let mut frames = KVec::with_capacity(nframes, GFP_NOIO)?;
        for _ in 0..nframes {
            frames.push(Frame::Free, GFP_NOIO)?;
        }
        Arc::pin_init(
            try_pin_init!(Dev {
                addr,
                index,
                compl,
                st <- new_spinlock_irq!(
                    DevState {
                        life: Life::Down,
                        identify_due: false,
                        paths: KVec::with_capacity(max_paths, GFP_NOIO)?,
                        next_path: 0,
                        rr: 0,
                        frames,
                        nout: 0,
                        maxout: nframes,
                        acked: 0,
                        pending: Ring::with_capacity(queue_depth, GFP_NOIO)?,
                        cur: None,
                        sectors: 0,
                        lba48: true,
                        fwver: 0,
                        ident: [0; wire::SECTOR],
                        chs: (0, 0, 0),
                        scnt: 0,
                        rtt_avg_us: RTT_INIT_US,
                        rtt_dev_us: RTT_INIT_US / 4,
                        last_rsp: Instant::now(),
                        generation: 0,
                    },
                    "raoe::Dev::st"
                ),
                disk <- new_mutex!(None, "raoe::Dev::disk"),
                disk_work <- new_work!("raoe::Dev::disk_work"),
                tx_work <- new_work!("raoe::Dev::tx_work"),
                tx,
                stats: DevStats::default(),
                numbers,
            }),
            GFP_NOIO,
        )
    }

    /// Prepares the waiting frame `i` for (re)transmission on the next path.
    fn stage(&self, st: &mut DevState, i: usize) -> Option<Outgoing> {
        if st.paths.is_empty() {
            return None;
        }
        // Round robin over the paths that answered lately, or over all.
        let n = st.paths.len();
        let now = Instant::now();
        let start = st.rr;
        let p = (0..n)
            .map(|k| (start + k) % n)
            .find(|&p| now - st.paths[p].last_ok <= PATH_TRUST && st.paths[p].ifp.is_running())
            .unwrap_or(start % n);
        st.rr = p.wrapping_add(1);
        let tag = new_tag(&mut st.generation, i);
        let lba48 = st.lba48;
        let path = &st.paths[p];
        let (id, mac, ifp) = (path.id, path.mac, path.ifp.clone());
        let c = st.frames.get_mut(i)?.waiting()?;
        c.tag = tag;
        c.sent = now;
        c.path = id;
        let data = match (&c.job, c.ata) {
            (Job::Io(p), Ata::Write { .. }) => Some(WriteData {
                req: p.req.clone(),
                range: p.range,
                loan: p.loan.clone(),
            }),
            _ => None,
        };
        Some(Outgoing {
            dev_addr: self.addr,
            mac,
            ifp,
            tag,
            cmd: c.ata,
            lba48,
            data,
        })
    }

    /// Puts `cmd` into the free frame `i` and stages it.
    fn occupy(&self, st: &mut DevState, i: usize, cmd: Cmd) -> Next {
        if st.nout == 0 {
            // Idle until now: silence is counted from here.
            st.last_rsp = Instant::now();
        }
        st.frames[i] = Frame::Waiting(cmd);
        st.nout += 1;
        // Cannot fail: the caller checked that a path exists, and frame `i`
        // is waiting.
        self.stage(st, i).map_or(Next::Idle, Next::Frame)
    }

    /// Puts new work into a free frame, if the window allows, and stages it.
    ///
    /// Several contexts call it at once (submitters, completion threads, the
    /// transmit thread); the device lock orders them. With
    /// [`Alloc::Atomic`] it never sleeps: a request that needs its carrier
    /// allocated when memory is short is left for a caller that may sleep
    /// ([`Next::NeedMemory`]).
    pub(crate) fn next_frame(&self, alloc: Alloc) -> Next {
        loop {
            let mut st = self.st.lock();
            if st.life.failing() || st.paths.is_empty() || st.nout >= st.maxout {
                return Next::Idle;
            }
            let Some(i) = st.frames.iter().position(Frame::is_free) else {
                return Next::Idle;
            };
            if st.identify_due {
                st.identify_due = false;
                return self.occupy(&mut st, i, Cmd::new(Job::Identify, Ata::Identify));
            }
            if st.life != Life::Up {
                return Next::Idle;
            }
            if st.cur.is_none() {
                if st.pending.is_empty() {
                    return Next::Idle;
                }
                drop(st);
                // Only the transmit work may sleep here: the
                // completion threads and submitters must not wait for memory.
                let Ok(req) = IoReq::new(alloc.flags()) else {
                    return match alloc {
                        Alloc::Atomic => Next::NeedMemory,
                        // The request stays queued for the next tick.
                        Alloc::Sleep => Next::Idle,
                    };
                };
                let mut st = self.st.lock();
                if st.cur.is_some() {
                    // Another context started a request meanwhile.
                    continue;
                }
                let Some(rq) = st.pending.pop() else {
                    continue;
                };
                let (write, sector, total) = (rq.op() == Op::Write, rq.sector(), rq.bytes());
                match Segments::new(rq) {
                    Ok(data) => req.start(data),
                    Err(rq) => {
                        // No data (`queue_rq` only takes reads and writes,
                        // which have some).
                        drop(st);
                        self.stats.failed.inc();
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
            let Some(c) = st.cur.as_mut() else {
                return Next::Idle;
            };
            let n = (c.total - c.off).min(payload as u32);
            let lba = c.sector + u64::from(c.off) / wire::SECTOR as u64;
            // The frames of a request take its data in order, so each
            // segment is walked once here.
            let Some(range) = c.req.next(n) else {
                return Next::Idle;
            };
            c.off += n;
            let (write, req, done) = (c.write, c.req.clone(), c.off == c.total);
            if done {
                st.cur = None;
            }
            let sectors = (n as usize / wire::SECTOR) as u8;
            let ata = if write {
                Ata::Write { lba, sectors }
            } else {
                Ata::Read { lba, sectors }
            };
            let piece = Piece::new(req, range, write);
            return self.occupy(&mut st, i, Cmd::new(Job::Io(piece), ata));
        }
    }

    /// Finds a frame whose response is overdue and stages its retransmission;
    /// marks the device down when it has been silent too long.
    pub(crate) fn next_retransmit(&self, now: Instant<Monotonic>) -> Option<Outgoing> {
        let mut st = self.st.lock();
        if st.life.failing() || st.nout == 0 {
            return None;
        }
        let rto = st.rto_us();
        let dead = Delta::from_secs(i64::from(module_parameters::aoe_deadsecs.value()));
        let i = st.frames.iter_mut().position(|f| {
            f.waiting()
                .is_some_and(|c| (now - c.sent).as_micros_ceil() > rto)
        })?;
        if now - st.last_rsp > dead {
            st.life = Life::Down;
            return None;
        }
        st.frames[i].waiting()?.retries += 1;
        st.on_loss();
        self.stats.retransmits.inc();
        self.stage(&mut st, i)
    }

    /// Fails everything the device has outstanding or queued, and marks it
    /// down (unless it is gone).
    pub(crate) fn fail_io(&self) {
        {
            let mut st = self.st.lock();
            if st.life != Life::Gone {
                st.life = Life::Down;
            }
        }
        // Frames in flight that have no response yet; answered ones belong
        // to their completion thread.
        loop {
            let cmd = {
                let mut st = self.st.lock();
                let Some(c) = st.frames.iter_mut().find_map(Frame::take_waiting) else {
                    break;
                };
                st.nout -= 1;
                c
            };
            if let Job::Io(piece) = cmd.job {
                self.stats.failed.inc();
                piece.finish(false);
            }
        }
        let cur = self.st.lock().cur.take();
        if let Some(c) = cur {
            c.req.finish(c.off, c.total - c.off, false);
        }
        loop {
            let rq = self.st.lock().pending.pop();
            let Some(rq) = rq else { break };
            self.stats.failed.inc();
            if Request::end(rq, Err(EIO)).is_err() {
                pr_err!("request still referenced at failure\n");
            }
        }
    }
}
