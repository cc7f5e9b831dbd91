// SPDX-License-Identifier: GPL-2.0

//! Transmission: building and sending frames, the socket-buffer reserve,
//! and the transmit thread (retransmission, aging, discovery).
//!
//! New frames are sent where the window opens, without a thread hop:
//! `queue_rq` sends the first frames of a request, and a completion thread
//! refills its device's window after each response. Both only allocate
//! without sleeping; when that fails, the device's own transmit work item
//! (which may sleep) takes over, so a transmission waiting for memory never
//! holds up completions or other devices. Frames, request slots
//! and completion-queue slots are reserved up front.

use kernel::{
    alloc::Flags,
    block::mq::SegRange,
    kthread::Context,
    net::{netdevice::NetDevice, skbuff::SkBuff, zerocopy::PageLoan},
    new_condvar, new_spinlock, new_spinlock_irq,
    prelude::*,
    sync::{aref::ARef, Arc, ArcBorrow, CondVar, SpinLock, SpinLockIrq},
    time::{msecs_to_jiffies, Delta, Instant, Monotonic},
    workqueue::{OwnedQueue, QueueFlags, WorkItem},
};

use crate::{
    aoe::Aoe,
    dev::{Dev, Life, Next, TX_WORK},
    frame::{IoReq, Lent},
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
    /// A write's data.
    pub(crate) data: Option<WriteData>,
}

/// The data of a write frame: the request's piece, and the loan its pages
/// are sent under (if none, the data is copied into the frame).
pub(crate) struct WriteData {
    pub(crate) req: Arc<IoReq>,
    pub(crate) range: SegRange,
    pub(crate) loan: Option<PageLoan<Lent>>,
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
            self.used.inc();
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
/// A write frame carries the request's pages as fragments, lent under its
/// piece's loan (the piece is accounted for only when no frame that carries
/// them is left, see [`Lent`]); without a loan, or when the pages cannot be
/// lent (too many fragments, a page that must not be sent in place), the
/// data is copied into the frame.
fn transmit(dev: &Dev, s: Outgoing, alloc: Alloc) {
    let Some(src) = s.ifp.ether_addr() else {
        return;
    };
    let skb = match &s.data {
        Some(w) => lent_frame(dev, &s, &src, w, alloc).or_else(|| build(dev, &s, &src, alloc)),
        None => build(dev, &s, &src, alloc),
    };
    let Some(mut skb) = skb else {
        // Retransmission will try again.
        dev.stats.xmit_errors.inc();
        return;
    };
    skb.set_protocol(wire::ETH_P_AOE);
    dev.stats.frames.inc();
    if s.ifp.queue_xmit(skb).is_err() {
        dev.stats.xmit_errors.inc();
    }
}

/// A frame with its data (if any) copied after the headers.
fn build(dev: &Dev, s: &Outgoing, src: &[u8; wire::ETH_ALEN], alloc: Alloc) -> Option<SkBuff> {
    let len = wire::ata_len(s.data.as_ref().map_or(0, |d| d.range.len() as usize));
    let mut skb = dev.tx.skbs.get(len, alloc)?;
    let f = skb.put(len).ok()?;
    wire::build_ata(f, &s.mac, src, s.dev_addr, s.tag, s.cmd, s.lba48);
    if let Some(w) = &s.data {
        w.req.copy_out(&w.range, &mut f[wire::ata_len(0)..]).ok()?;
    }
    Some(skb)
}

/// A write frame whose data is the request's pages, lent under the piece's
/// loan; `None` if it has no loan or its pages cannot be lent.
fn lent_frame(
    dev: &Dev,
    s: &Outgoing,
    src: &[u8; wire::ETH_ALEN],
    w: &WriteData,
    alloc: Alloc,
) -> Option<SkBuff> {
    let loan = w.loan.as_ref()?;
    let len = wire::ata_len(0);
    let mut skb = dev.tx.skbs.get(len, alloc)?;
    let f = skb.put(len).ok()?;
    wire::build_ata(f, &s.mac, src, s.dev_addr, s.tag, s.cmd, s.lba48);
    w.req.lend(&w.range, &mut skb, loan).ok()?;
    dev.stats.lent.inc();
    Some(skb)
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
                dev.stats.tx_deferred.inc();
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
