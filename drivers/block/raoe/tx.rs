// SPDX-License-Identifier: GPL-2.0

//! Transmission: building and sending frames, the socket-buffer reserve,
//! and the transmit thread (retransmission, aging, discovery).
//!
//! New frames are sent where the window opens, without a thread hop:
//! `queue_rq` sends the first frames of a request, and a completion thread
//! refills its device's window after each response. Both only allocate
//! without sleeping; when that fails, the device's own transmit work item
//! (which may sleep) takes over, so a transmission waiting for memory never
//! holds up completions or other devices (seed 003). Frames, request slots
//! and completion-queue slots are reserved up front.

use kernel::{
    alloc::Flags,
    kthread::Context,
    net::{netdevice::NetDevice, skbuff::SkBuff},
    new_condvar, new_spinlock, new_spinlock_irq,
    prelude::*,
    sync::{aref::ARef, Arc, ArcBorrow, CondVar, SpinLock, SpinLockIrq},
    time::{msecs_to_jiffies, Delta, Instant, Monotonic},
    workqueue::{OwnedQueue, QueueFlags, WorkItem},
};

use crate::{
    aoe::Aoe,
    dev::{Dev, Life, Next, TX_WORK},
    frame::IoReq,
    module_parameters,
    ring::Ring,
    rx::CfgMsg,
    stats::Counter,
    wire::{self, Addr, Ata},
};

/// Config responses waiting for the transmit thread.
const CFG_BACKLOG: usize = 64;
/// Headroom reserved in transmitted buffers for lower layers.
pub(crate) const HEADROOM: usize = 64;
/// Transmit-thread tick: retransmission and aging checks.
const TICK_MS: u32 = 20;
/// Socket buffers reserved for transmission under memory pressure.
const SKB_RESERVE: usize = 32;
/// Size of a reserved socket buffer: a frame at a 1500-byte MTU.
const SKB_RESERVE_LEN: usize = 1536;

/// The transmit thread's inbox.
pub(crate) struct TxState {
    kick: bool,
    pub(crate) discover: bool,
    pub(crate) stop: bool,
    pub(crate) cfg: Ring<CfgMsg>,
}

/// The transmit thread's inbox and wake-up.
///
/// Lock order: `Tx::st` is a leaf.
#[pin_data]
pub(crate) struct Tx {
    #[pin]
    pub(crate) st: SpinLockIrq<TxState>,
    #[pin]
    pub(crate) wait: CondVar,
    /// Device and thread set-up work and sleeping transmissions (they
    /// sleep, and disk creation does I/O).
    pub(crate) wq: OwnedQueue,
    #[pin]
    pub(crate) skbs: SkbReserve,
}

impl Tx {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Tx {
                st <- new_spinlock_irq!(
                    TxState {
                        kick: false,
                        discover: true,
                        stop: false,
                        cfg: Ring::with_capacity(CFG_BACKLOG, GFP_KERNEL)?,
                    },
                    "raoe::Tx::st"
                ),
                wait <- new_condvar!("raoe::Tx::wait"),
                wq: OwnedQueue::new(c"raoe", QueueFlags::UNBOUND | QueueFlags::MEM_RECLAIM, 0)?,
                skbs <- SkbReserve::new()?,
            }),
            GFP_KERNEL,
        )
    }

    /// Wakes the transmit thread to look for work.
    pub(crate) fn kick(&self) {
        self.st.lock().kick = true;
        self.wait.notify_one();
    }

    /// Asks the transmit thread to broadcast config queries.
    pub(crate) fn discover(&self) {
        self.st.lock().discover = true;
        self.kick();
    }
}

/// How a transmitting context may allocate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alloc {
    /// Without sleeping: submitters, completion threads, the transmit
    /// thread.
    Atomic,
    /// May sleep for memory: a device's transmit work item only.
    Sleep,
}

impl Alloc {
    pub(crate) fn flags(self) -> Flags {
        match self {
            Alloc::Atomic => GFP_ATOMIC | __GFP_NOWARN,
            Alloc::Sleep => GFP_NOIO | __GFP_NOWARN,
        }
    }
}

/// One staged frame to build and send.
pub(crate) struct Outgoing {
    pub(crate) dev_addr: Addr,
    pub(crate) mac: [u8; wire::ETH_ALEN],
    pub(crate) ifp: ARef<NetDevice>,
    pub(crate) tag: u32,
    pub(crate) cmd: Ata,
    pub(crate) lba48: bool,
    /// Write data to copy from the request: the request and the frame's piece.
    pub(crate) data: Option<(Arc<IoReq>, kernel::block::mq::SegRange)>,
}

/// Socket buffers set aside for frames when allocation fails.
///
/// Lock order: its lock is a leaf.
#[pin_data]
pub(crate) struct SkbReserve {
    #[pin]
    bufs: SpinLock<KVec<SkBuff>>,
    /// Frames that took a reserved buffer.
    pub(crate) used: Counter,
}

impl SkbReserve {
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let mut bufs = KVec::with_capacity(SKB_RESERVE, GFP_KERNEL)?;
        for _ in 0..SKB_RESERVE {
            bufs.push(
                SkBuff::alloc(HEADROOM, SKB_RESERVE_LEN, GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        Ok(try_pin_init!(SkbReserve {
            bufs <- new_spinlock!(bufs, "raoe::SkbReserve::bufs"),
            used: Counter::default(),
        }))
    }

    /// A socket buffer for a frame of `len` bytes: a fresh one, or one of the
    /// reserve when memory is short.
    pub(crate) fn get(&self, len: usize, alloc: Alloc) -> Option<SkBuff> {
        if let Ok(skb) = SkBuff::alloc(HEADROOM, len, alloc.flags()) {
            return Some(skb);
        }
        if len > SKB_RESERVE_LEN {
            return None;
        }
        let skb = self.bufs.lock().pop();
        if skb.is_some() {
            self.used.bump();
        }
        skb
    }

    /// Tops the reserve back up (transmit thread, when memory allows).
    fn refill(&self) {
        loop {
            if self.bufs.lock().len() >= SKB_RESERVE {
                return;
            }
            let Ok(skb) = SkBuff::alloc(HEADROOM, SKB_RESERVE_LEN, GFP_NOWAIT | __GFP_NOWARN)
            else {
                return;
            };
            if self.bufs.lock().push_within_capacity(skb).is_err() {
                return;
            }
        }
    }
}

/// Builds and transmits one frame.
///
/// Write data is copied into the frame, not attached as page fragments: a
/// frame can be read after its request ended (a first transmission the target
/// processes after the retransmission that completed the request), and by
/// then the request's pages may hold other data (see `raoe.rst`).
fn transmit(dev: &Dev, s: Outgoing, alloc: Alloc) {
    let len = wire::ata_len(s.data.as_ref().map_or(0, |d| d.1.len() as usize));
    let Some(src) = s.ifp.ether_addr() else {
        return;
    };
    let Some(mut skb) = dev.tx.skbs.get(len, alloc) else {
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

/// Sends new frames while the device's window allows. With
/// [`Alloc::Atomic`], a request that needs a sleeping allocation is handed to
/// the device's transmit work item.
pub(crate) fn pump(dev: ArcBorrow<'_, Dev>, alloc: Alloc) {
    loop {
        match dev.next_frame(alloc) {
            Next::Frame(s) => transmit(&dev, s, alloc),
            Next::Idle => return,
            Next::NeedMemory => {
                dev.stats.tx_deferred.bump();
                let _ = dev.tx.wq.enqueue::<_, TX_WORK>(Arc::from(dev));
                return;
            }
        }
    }
}

impl WorkItem<TX_WORK> for Dev {
    type Pointer = Arc<Dev>;

    /// Transmission that may sleep for memory.
    fn run(dev: Arc<Dev>) {
        pump(dev.as_arc_borrow(), Alloc::Sleep);
    }
}

/// The transmit thread: config responses, discovery, retransmission and
/// aging every tick, and new frames for every device.
pub(crate) fn tx_thread(aoe: &Arc<Aoe>, ctx: &Context) {
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
            aoe.tx.skbs.refill();
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
                    transmit(&dev, s, Alloc::Atomic);
                }
                let down = {
                    let st = dev.st.lock();
                    st.life == Life::Down && st.busy()
                };
                if down {
                    pr_warn!(
                        "e{}.{}: target silent for {} s, failing its I/O\n",
                        dev.addr.major,
                        dev.addr.minor,
                        module_parameters::aoe_deadsecs.value()
                    );
                    dev.fail_io();
                }
            }
            pump(dev.as_arc_borrow(), Alloc::Atomic);
        }
    }
}
