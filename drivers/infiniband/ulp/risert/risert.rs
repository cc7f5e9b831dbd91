// SPDX-License-Identifier: GPL-2.0

//! risert: an iSER target transport for the LIO iSCSI target, over RDMA.
//!
//! The Rust counterpart of `drivers/infiniband/ulp/isert` (`ib_isert`). It registers the
//! `IB/iSER` transport with the iSCSI target; a portal whose `iser` attribute is set to 1 gets
//! an `rdma_cm` listener on its address.
//!
//! Each accepted connection has its own protection domain, completion queue and queue pair. The
//! completion queue is polled from a work item through the shared [`Batcher`] (seed 000): a
//! budgeted pass, rescheduling when the budget runs out, re-arm then re-poll.
//!
//! It serves discovery and normal sessions: the login phase, SCSI READ by RDMA WRITE, SCSI WRITE
//! by immediate data, unsolicited Data-Out and RDMA READ, text, NOP, task management and
//! logout, and a teardown that drains the queue pair. The design is in
//! `Documentation/rstorage/risert.rst`.

mod wire;

use kernel::{
    completion_batch::{
        Armed,
        Batcher,
        CompletionQueue,
        CompletionSource,
        Config,
        Pass, //
    },
    debugfs, impl_has_work,
    net::sockaddr::SockAddr,
    new_condvar, new_mutex, new_work,
    prelude::*,
    rdma::{
        cm::{
            ConnEvents,
            ConnectRequest,
            Connection,
            Handled,
            ListenId,
            Listener,
            Lost, //
        },
        rw::{
            RwCtx,
            RwQp, //
        },
        verbs::{
            Completion,
            Cq,
            CqHandler,
            DmaBuf,
            FromDevice,
            Pd,
            PostError,
            QpCaps,
            SendCtx,
            ToDevice, //
        },
    },
    revocable::Revocable,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        ArcBorrow,
        CondVar,
        Mutex,
        MutexGuard, //
    },
    target::iscsit::{
        self,
        Accepted,
        Cmd,
        Conn,
        ConnSlot,
        Login,
        NetworkType,
        Np,
        QueueResult,
        Refused,
        Registration,
        Remote,
        State,
        Transport, //
    },
    time::{
        delay::fsleep,
        msecs_to_jiffies,
        Delta,
        Instant, //
    },
    workqueue::{
        OwnedQueue,
        QueueFlags,
        Work,
        WorkItem, //
    },
};

use wire::{
    IserHdr,
    Kind,
    HEADERS_LEN,
    ISER_HDR_LEN,
    RX_SIZE, //
};

module! {
    type: RisertModule,
    name: "risert",
    authors: ["rstorage developers"],
    description: "iSER target transport for the LIO iSCSI target (RDMA)",
    license: "GPL",
    params: {
        budget: u32 {
            default: 16,
            description: "Completions handled per pass of a connection's completion work \
                          (0: no budget: drain all, then re-arm)",
        },
        poll_idle_us: u32 {
            default: 0,
            description: "Busy-poll a busy connection's completion queue instead of re-arming it; \
                          leave polling after this many microseconds without a completion \
                          (0: always interrupt-driven)",
        },
        send_queue: u32 {
            default: 0,
            description: "Send queue size of new connections, in sends and in RDMA transfers \
                          (0: 128 of each, as ib_isert); a small queue exercises the queue-full \
                          path",
        },
    },
}

/// Receive buffers posted in the full-feature phase (`ISERT_QP_MAX_RECV_DTOS`).
const RX_DESCS: u32 = 128;
/// Sends outstanding at most (`ISERT_QP_MAX_REQ_DTOS`).
const TX_DESCS: u32 = 128;
/// How long teardown lets posted sends complete before it disconnects.
const SEND_GRACE_MS: u32 = 1000;

/// A counter shown in debugfs.
struct Counter(Atomic<u64>);

impl Counter {
    const fn new() -> Self {
        Self(Atomic::new(0))
    }

    fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

macro_rules! stats {
    ($($name:ident),* $(,)?) => {
        /// Transport-wide counters (`/sys/kernel/debug/risert/stats`).
        struct Stats {
            $($name: Counter,)*
        }

        static STATS: Stats = Stats {
            $($name: Counter::new(),)*
        };

        fn write_stats(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            $(writeln!(f, "{} {}", stringify!($name), STATS.$name.get())?;)*
            write_conns(f)
        }
    };
}

stats!(
    portals_up,
    portals_down,
    listen_failed,
    connect_requests,
    rejected,
    listeners_lost,
    accepted,
    established,
    logins,
    conns_freed,
    pdus_rx,
    pdus_tx,
    text,
    logouts,
    scsi_cmds,
    unsol_data_out,
    data_in,
    data_out,
    tmfs,
    nops,
    pdus_rejected,
    bad_pdus,
    wc_errors,
    cq_events,
    sq_full,
    backlogged,
);

/// The module's state shared with portals and connections.
///
/// The iSCSI target calls `setup_np` without a transport context, so this lives in a static;
/// its small allocation stays after the module is unloaded.
#[pin_data]
struct Shared {
    /// Runs the connections' completion and control work; revoked (drained and destroyed)
    /// when the module goes.
    #[pin]
    wq: Revocable<OwnedQueue>,
    /// Live connections, for debugfs and for the module's exit.
    #[pin]
    conns: Mutex<KVec<Arc<RConn>>>,
    #[pin]
    gone: CondVar,
}

/// The module's shared state, set while the module is loaded.
static SHARED: kernel::sync::SetOnce<Arc<Shared>> = kernel::sync::SetOnce::new();

fn shared() -> &'static Arc<Shared> {
    SHARED
        .as_ref()
        .expect("set before the transport is registered")
}

fn write_conns(f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let Some(sh) = SHARED.as_ref() else {
        return Ok(());
    };
    for c in sh.conns.lock().iter() {
        let s = c.batcher.stats();
        let phase = c.inner.lock().phase;
        f.write_fmt(fmt!(
            "conn {} peer {} phase {:?} rx {} tx {} cq_events {} passes {} completions {} \
             locks {} budget_exhausted {} rearms {} post_arm_polls {} post_arm {} reruns {} \
             polling {} joins {} idle_drops {}\n",
            c.id,
            c.peer,
            phase,
            c.rx.get(),
            c.tx.get(),
            c.events.get(),
            s.passes,
            s.completions,
            s.locks,
            s.budget_exhausted,
            s.rearms,
            s.post_arm_polls,
            s.post_arm,
            s.reruns,
            c.batcher.is_polling() as u8,
            s.joins,
            s.idle_drops
        ))?;
    }
    Ok(())
}

/// A connection's phase (`enum iser_conn_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Accepted; the RDMA connection is not established yet.
    Init,
    /// Established; waiting for the portal's login thread.
    Up,
    /// Handed to the iSCSI target: the login phase.
    Bound,
    /// Logged in.
    FullFeature,
    /// Disconnecting.
    Terminating,
}

type Link = Connection<ConnEv, CqKick>;

/// What a connection's lock protects.
struct Inner {
    phase: Phase,
    /// The RDMA connection; taken at teardown, which breaks the reference cycles through its
    /// completion queue and event handler.
    link: Option<Link>,
    /// The portal while the connection waits for the login thread.
    portal: Option<Arc<PortalQueue>>,
    /// The first login request, waiting for the login thread, and its length.
    login_req: Option<(KBox<DmaBuf<FromDevice>>, usize)>,
    /// A buffer for the next login request.
    login_rx: Option<KBox<DmaBuf<FromDevice>>>,
    /// The final login response, sent once the receive buffers are posted.
    login_rsp: Option<(KBox<TxDesc>, usize)>,
    /// Logouts whose response was sent, for the control work.
    logouts: KVec<Cmd>,
    /// Control responses that found the send queue full, in order; posted by the completion
    /// work as sends complete.
    backlog: KVec<(KBox<TxDesc>, Post)>,
    /// A logout response was posted: teardown waits for the target's logout completion.
    logout_posted: bool,
    /// The connection never reached the target and is to be released by the control work.
    release: bool,
    /// The CM reported the connection established.
    established: bool,
    send_drained: bool,
    recv_drained: bool,
}

/// An iSER connection.
#[pin_data]
struct RConn {
    id: u64,
    peer: SockAddr,
    #[pin]
    iconn: ConnSlot,
    #[pin]
    inner: Mutex<Inner>,
    /// Woken on login requests, drain markers and teardown.
    #[pin]
    wait: CondVar,
    batcher: Batcher,
    /// Adaptive completion mode (`poll_idle_us` is not 0): the completion queue is busy-polled
    /// while the connection is busy and re-armed once it has been idle for `poll_idle_us`.
    busy_poll: bool,
    /// Completion queue notifications.
    events: Counter,
    /// Signaled sends and RDMA READs posted and not yet completed.
    sends: Atomic<u64>,
    /// Control responses in `Inner::backlog` (read without the lock on each send completion).
    backlogged: Atomic<u32>,
    rx: Counter,
    tx: Counter,
    #[pin]
    poll_work: Work<RConn, 0>,
    #[pin]
    ctrl_work: Work<RConn, 1>,
}

impl_has_work! {
    impl HasWork<Self, 0> for RConn { self.poll_work }
    impl HasWork<Self, 1> for RConn { self.ctrl_work }
}

/// A receive buffer of `RX_SIZE` bytes on `dev`, for posting.
fn rx_buf(dev: &kernel::rdma::verbs::DeviceRef) -> Result<KBox<DmaBuf<FromDevice>>> {
    Ok(KBox::new(DmaBuf::new(dev, RX_SIZE)?, GFP_KERNEL)?)
}

/// A send (the iSER and iSCSI headers and the data segment) or an RDMA READ, and the command
/// it is for.
struct TxDesc {
    buf: Option<DmaBuf<ToDevice>>,
    cmd: Option<Cmd>,
    /// An RDMA READ of a WRITE's data, without a send.
    read: bool,
}

impl SendCtx for TxDesc {
    fn dma_buf(&self) -> Option<&DmaBuf<ToDevice>> {
        self.buf.as_ref()
    }

    fn rw(&mut self) -> Option<Pin<&mut RwCtx>> {
        self.cmd.as_mut().and_then(|c| c.rw_mut())
    }
}

/// How a descriptor is posted.
#[derive(Clone, Copy)]
enum Post {
    /// A send of this many bytes of its buffer.
    Send(usize),
    /// Its command's RDMA transfer, then a send of this many bytes if given.
    Rw(Option<usize>),
}

impl Post {
    fn sends(self) -> bool {
        matches!(self, Self::Send(_) | Self::Rw(Some(_)))
    }
}

/// Gives the command of a descriptor that could not be posted back to the target, which tries
/// again later (`ENOMEM`: the send queue is full) or fails it.
fn unposted(e: PostError<TxDesc>) -> QueueResult {
    match e.ctx.and_then(|tx| KBox::into_inner(tx).cmd) {
        Some(cmd) => Err(Refused::new(cmd, e.error)),
        // The device took part of the chain and keeps the descriptor, with the command.
        None => Ok(()),
    }
}

/// Schedules a connection's completion work when its completion queue fires.
struct CqKick {
    conn: Arc<RConn>,
}

impl CqHandler for CqKick {
    type SendCtx = TxDesc;

    fn notify(&self) {
        self.conn.events.inc();
        STATS.cq_events.inc();
        // In the adaptive mode the queue rejoins the busy-polling set; were it still in it, the
        // completion work is polling already (the event raced with its final look).
        if self.conn.busy_poll && !self.conn.batcher.join_polling(Instant::now()) {
            return;
        }
        self.conn.kick();
    }
}

/// The RDMA connection's events.
struct ConnEv {
    conn: Arc<RConn>,
}

impl ConnEvents for ConnEv {
    fn established(&self) {
        STATS.established.inc();
        let portal = {
            let mut inner = self.conn.inner.lock();
            inner.established = true;
            if inner.phase == Phase::Terminating {
                // Terminated before the CM reported the connection (a message can arrive
                // first): only now can the peer be told.
                drop(inner);
                self.conn.release_unbound();
                return;
            }
            inner.phase = Phase::Up;
            inner.portal.clone()
        };
        if let Some(p) = portal {
            p.push_pending(self.conn.clone());
        }
    }

    fn disconnected(&self) {
        self.conn.terminate("disconnected");
    }

    fn connect_error(&self) {
        self.conn.terminate("connection failed");
        // It never was established: nothing to disconnect.
        self.conn.release_unbound();
    }

    fn device_removal(&self) {
        self.conn.terminate("RDMA device removed");
        // The CM waits until the connection is dropped.
        if !self.conn.inner.lock().established {
            self.conn.release_unbound();
        }
    }
}

impl RConn {
    fn kick(self: &Arc<Self>) {
        enqueue::<0>(self.clone());
    }

    fn device(&self) -> Result<kernel::rdma::verbs::DeviceRef> {
        match self.inner.lock().link.as_ref() {
            Some(l) => Ok(l.pd().device().clone()),
            None => Err(ENOTCONN),
        }
    }

    fn post_recv(&self, buf: KBox<DmaBuf<FromDevice>>) -> Result {
        match self.inner.lock().link.as_ref() {
            Some(l) => l.qp().post_recv(buf),
            None => Err(ENOTCONN),
        }
    }

    fn rw_qp(&self) -> Result<Arc<RwQp>> {
        match self.inner.lock().link.as_ref() {
            Some(l) => Ok(l.rw_qp().clone()),
            None => Err(ENOTCONN),
        }
    }

    /// Posts `tx` as `how` says, with the connection's lock held (`inner`).
    fn post_locked(
        &self,
        inner: &Inner,
        tx: KBox<TxDesc>,
        how: Post,
    ) -> Result<(), PostError<TxDesc>> {
        let Some(l) = inner.link.as_ref() else {
            return Err(PostError::unposted(ENOTCONN, tx));
        };
        match how {
            Post::Send(len) => l.qp().post_send(tx, len)?,
            Post::Rw(send_len) => l.qp().post_rw(tx, send_len)?,
        }
        self.sends.fetch_add(1, Relaxed);
        if how.sends() {
            self.tx.inc();
            STATS.pdus_tx.inc();
        }
        Ok(())
    }

    fn post(&self, tx: KBox<TxDesc>, how: Post) -> Result<(), PostError<TxDesc>> {
        self.post_locked(&self.inner.lock(), tx, how)
    }

    /// Posts `tx` for the target's queue-full handling: if the send queue is full, its command
    /// goes back to the target, which calls again later. Only for the callbacks whose callers
    /// in the target check the error (`queue_data_in`, `queue_status`).
    fn post_or_refuse(&self, tx: KBox<TxDesc>, how: Post) -> QueueResult {
        self.post(tx, how).or_else(|e| {
            if e.error == ENOMEM {
                STATS.sq_full.inc();
            }
            unposted(e)
        })
    }

    /// Posts `tx`; if the send queue is full, it waits in the connection's backlog, which the
    /// completion work posts, in order, as sends complete. For what the target does not retry:
    /// it takes a failed response (`response_queue`) as a failed connection, and ignores the
    /// error of most of its calls of `get_dataout`.
    fn post_or_queue(&self, tx: KBox<TxDesc>, how: Post) -> QueueResult {
        let tx = match self.post(tx, how) {
            Err(PostError {
                error,
                ctx: Some(tx),
            }) if error == ENOMEM => tx,
            r => return r.or_else(unposted),
        };
        STATS.sq_full.inc();
        let mut inner = self.inner.lock();
        if inner.backlog.reserve(1, GFP_KERNEL).is_err() {
            drop(inner);
            return unposted(PostError::unposted(ENOMEM, tx));
        }
        // Cannot fail: room was reserved.
        let _ = inner.backlog.push_within_capacity((tx, how));
        self.backlogged.fetch_add(1, Relaxed);
        STATS.backlogged.inc();
        drop(inner);
        // The requests that filled the queue may all have completed meanwhile.
        self.flush_backlog();
        Ok(())
    }

    /// Posts the backlog, in order, until the send queue is full again.
    fn flush_backlog(&self) {
        if self.backlogged.load(Relaxed) == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        while let Ok((tx, how)) = inner.backlog.remove(0) {
            match self.post_locked(&inner, tx, how) {
                Ok(()) => {
                    self.backlogged.fetch_sub(1, Relaxed);
                }
                Err(PostError {
                    error,
                    ctx: Some(tx),
                }) if error == ENOMEM || error == ENOTCONN => {
                    // Full again, or torn down (the drain releases what is left). Room for it:
                    // it was just removed.
                    let _ = inner.backlog.insert_within_capacity(0, (tx, how));
                    return;
                }
                Err(e) => {
                    self.backlogged.fetch_sub(1, Relaxed);
                    pr_warn!(
                        "conn {}: cannot post a queued request: {:?}\n",
                        self.id,
                        e.error
                    );
                    // Dropping it releases its command as failed.
                }
            }
        }
    }

    /// Sends `cmd`'s SCSI response, after its RDMA WRITE of read data if `data_in`; when the
    /// send queue is full, gives the command back to the target if `refuse`, else queues it.
    fn send_rsp(&self, c: &Conn, mut cmd: Cmd, data_in: bool, refuse: bool) -> QueueResult {
        let mut hdr = [0u8; iscsit::HDR_LEN];
        let sense = cmd.build_rsp(c, &mut hdr);
        let (mut tx, n) = match self.new_tx(&hdr, sense) {
            Ok(tx) => tx,
            Err(e) => return Err(Refused::new(cmd, e)),
        };
        let how = if data_in {
            if let Err(e) = self.rw_qp().and_then(|qp| cmd.rdma_setup(&qp)) {
                return Err(Refused::new(cmd, e));
            }
            STATS.data_in.inc();
            Post::Rw(Some(n))
        } else {
            Post::Send(n)
        };
        tx.cmd = Some(cmd);
        if refuse {
            self.post_or_refuse(tx, how)
        } else {
            self.post_or_queue(tx, how)
        }
    }

    fn new_rx(&self) -> Result<KBox<DmaBuf<FromDevice>>> {
        rx_buf(&self.device()?)
    }

    /// A send of the iSER control header, the iSCSI header `hdr` and `data`.
    fn new_tx(&self, hdr: &[u8; iscsit::HDR_LEN], data: &[u8]) -> Result<(KBox<TxDesc>, usize)> {
        let dev = self.device()?;
        let len = HEADERS_LEN + data.len();
        let mut buf = DmaBuf::<ToDevice>::new(&dev, len)?;
        let b = buf.as_mut_slice();
        IserHdr::control().write(&mut b[..ISER_HDR_LEN]);
        b[ISER_HDR_LEN..HEADERS_LEN].copy_from_slice(hdr);
        b[HEADERS_LEN..len].copy_from_slice(data);
        let tx = TxDesc {
            buf: Some(buf),
            cmd: None,
            read: false,
        };
        Ok((KBox::new(tx, GFP_KERNEL)?, len))
    }

    /// Posts a control response (`tx` for `cmd`), queued if the send queue is full.
    fn send_ctrl(&self, (mut tx, len): (KBox<TxDesc>, usize), cmd: Cmd) -> QueueResult {
        tx.cmd = Some(cmd);
        self.post_or_queue(tx, Post::Send(len))
    }

    /// Starts the disconnection once (`isert_conn_terminate()`). A connection the target
    /// knows is then torn down by the target (a connection reinstatement); one it does not
    /// know is released by the control work.
    ///
    /// Before the connection is established (a message may arrive before the CM reports it),
    /// the peer cannot be told yet: `established` or `connect_error` finishes the job.
    fn terminate(self: &Arc<Self>, why: &str) {
        let (bound, established) = {
            let mut inner = self.inner.lock();
            if inner.phase == Phase::Terminating {
                return;
            }
            let bound = inner.phase >= Phase::Bound;
            inner.phase = Phase::Terminating;
            (bound, inner.established)
        };
        pr_info!("conn {} ({}): {}\n", self.id, self.peer, why);
        self.wait.notify_all();
        if bound {
            self.disconnect();
            self.iconn.with(|c| c.cause_reinstatement());
        } else if established {
            self.release_unbound();
        }
    }

    fn disconnect(&self) {
        if let Some(l) = self.inner.lock().link.as_ref() {
            let _ = l.disconnect();
        }
    }

    /// Disconnects a connection the target does not know and has the control work release
    /// it (`isert_handle_unbound_conn()`).
    fn release_unbound(self: &Arc<Self>) {
        self.disconnect();
        self.inner.lock().release = true;
        enqueue::<1>(self.clone());
    }

    /// Drains the queue pair (`ib_drain_qp()`): every posted request completes, which gives
    /// back every buffer and command. Waits for the completion work to see both markers.
    fn drain(self: &Arc<Self>) {
        {
            let inner = self.inner.lock();
            let Some(l) = inner.link.as_ref() else {
                return;
            };
            if inner.send_drained && inner.recv_drained {
                return;
            }
            if let Err(e) = l.qp().start_drain() {
                pr_warn!("conn {}: cannot drain its queue pair: {:?}\n", self.id, e);
                return;
            }
        }
        self.kick();
        // Not interruptible: the target's threads call this with a signal pending. Every
        // posted request completes once the queue pair is in the error state, the markers
        // last.
        let mut inner = self.inner.lock();
        while !(inner.send_drained && inner.recv_drained) {
            self.wait.wait(&mut inner);
        }
        // Control responses never posted: dropping them releases their commands as failed.
        let backlog = core::mem::take(&mut inner.backlog);
        self.backlogged.store(0, Relaxed);
        drop(inner);
        drop(backlog);
    }

    /// Drains and drops the RDMA connection, and forgets the connection.
    fn release_link(self: &Arc<Self>) {
        self.drain();
        let link = self.inner.lock().link.take();
        drop(link);
        let sh = shared();
        let mut conns = sh.conns.lock();
        conns.retain(|c| !Arc::ptr_eq(c, self));
        drop(conns);
        STATS.conns_freed.inc();
        sh.gone.notify_all();
    }

    /// Handles a received message.
    fn on_recv(self: &Arc<Self>, buf: KBox<DmaBuf<FromDevice>>, len: usize) {
        self.rx.inc();
        STATS.pdus_rx.inc();
        let phase = self.inner.lock().phase;
        let msg = &buf.as_slice()[..len.min(buf.len())];
        if msg.len() < HEADERS_LEN {
            STATS.bad_pdus.inc();
            pr_warn!("conn {}: short message ({} bytes)\n", self.id, msg.len());
            self.terminate("malformed PDU");
            return;
        }
        let pdu = &msg[ISER_HDR_LEN..];
        let mut bhs = [0u8; iscsit::HDR_LEN];
        bhs.copy_from_slice(&pdu[..iscsit::HDR_LEN]);
        let dlen = wire::dlength(&bhs);
        if pdu.len() < iscsit::HDR_LEN + dlen {
            STATS.bad_pdus.inc();
            pr_warn!(
                "conn {}: PDU declares {} data bytes but {} arrived\n",
                self.id,
                dlen,
                pdu.len() - iscsit::HDR_LEN
            );
            self.terminate("malformed PDU");
            return;
        }
        match IserHdr::parse(msg).map(|h| h.kind()) {
            Some(Kind::Control) => {}
            k => {
                STATS.bad_pdus.inc();
                pr_warn!("conn {}: unexpected iSER message {:?}\n", self.id, k);
                let _ = self.post_recv(buf);
                return;
            }
        }
        if phase < Phase::FullFeature {
            self.on_login_pdu(buf, len);
            return;
        }
        let data = &pdu[iscsit::HDR_LEN..iscsit::HDR_LEN + dlen];
        let iser = IserHdr::parse(msg).unwrap_or_default();
        let ret = self.iconn.with(|c| self.dispatch(c, &iser, &bhs, data));
        if let Some(Err(e)) = ret {
            pr_warn!(
                "conn {}: opcode {:#x} failed: {:?}\n",
                self.id,
                wire::opcode(&bhs),
                e
            );
        }
        // The data was copied out: the buffer can take the next PDU.
        let _ = self.post_recv(buf);
    }

    /// A login request: the first one waits for the login thread, the others go to the
    /// target's login work.
    fn on_login_pdu(&self, buf: KBox<DmaBuf<FromDevice>>, len: usize) {
        let pdu = &buf.as_slice()[ISER_HDR_LEN..len];
        if let Some(Ok(())) = self.iconn.with(|c| c.deliver_login_pdu(pdu)) {
            self.inner.lock().login_rx = Some(buf);
            return;
        }
        self.inner.lock().login_req = Some((buf, len));
        self.wait.notify_all();
    }

    /// Hands a full-feature PDU to the target (`isert_rx_opcode()`).
    fn dispatch(
        &self,
        c: &Conn,
        iser: &IserHdr,
        bhs: &[u8; iscsit::HDR_LEN],
        data: &[u8],
    ) -> Result {
        let op = wire::opcode(bhs);
        if c.is_discovery() && op != wire::OP_TEXT && op != wire::OP_LOGOUT {
            STATS.pdus_rejected.inc();
            pr_warn!(
                "conn {}: opcode {:#x} in a discovery session, ignored\n",
                self.id,
                op
            );
            return Ok(());
        }
        match op {
            wire::OP_SCSI_CMD => {
                STATS.scsi_cmds.inc();
                let cmd = c.alloc_cmd().ok_or(ENOMEM)?;
                let remote = Remote {
                    read_stag: iser.read_stag,
                    read_va: iser.read_va,
                    write_stag: iser.write_stag,
                    write_va: iser.write_va,
                };
                c.handle_scsi_cmd(cmd, bhs, data, remote)
            }
            wire::OP_SCSI_DATA_OUT => {
                STATS.unsol_data_out.inc();
                c.handle_data_out(bhs, data)
            }
            wire::OP_SCSI_TMFUNC => {
                STATS.tmfs.inc();
                let cmd = c.alloc_cmd().ok_or(ENOMEM)?;
                c.handle_tmf(cmd, bhs)
            }
            wire::OP_TEXT => {
                STATS.text.inc();
                let cmd = c.alloc_cmd().ok_or(ENOMEM)?;
                c.handle_text(cmd, bhs, data)
            }
            wire::OP_LOGOUT => {
                STATS.logouts.inc();
                let cmd = c.alloc_cmd().ok_or(ENOMEM)?;
                c.handle_logout(cmd, bhs)
            }
            wire::OP_NOOP_OUT => {
                STATS.nops.inc();
                let cmd = c.alloc_cmd().ok_or(ENOMEM)?;
                c.handle_nop_out(cmd, bhs)
            }
            _ => {
                // SNACK needs error recovery level 1; the rest are target-to-initiator
                // opcodes.
                STATS.pdus_rejected.inc();
                c.reject(bhs);
                Ok(())
            }
        }
    }

    /// A send completed: release the command it answered (`isert_send_done()`).
    fn on_send(self: &Arc<Self>, tx: KBox<TxDesc>, ok: bool) {
        let TxDesc { buf, cmd, read } = KBox::into_inner(tx);
        let Some(cmd) = cmd else {
            return;
        };
        if read {
            if ok {
                STATS.data_out.inc();
                cmd.rdma_read_done();
            } else {
                cmd.release(true);
            }
            return;
        }
        let mut hdr = [0u8; iscsit::HDR_LEN];
        if let Some(b) = buf.as_ref() {
            hdr.copy_from_slice(&b.as_slice()[ISER_HDR_LEN..HEADERS_LEN]);
        }
        drop(buf);
        match cmd.state() {
            State::SendLogoutRsp if ok => {
                // The target closes the connection from the post handler, and waits for it:
                // not from this work, which the teardown waits for.
                let queued = self.inner.lock().logouts.push(cmd, GFP_KERNEL);
                match queued {
                    Ok(()) => enqueue::<1>(self.clone()),
                    Err(_) => pr_err!("conn {}: no memory to complete a logout\n", self.id),
                }
            }
            State::SendTextRsp if ok && Cmd::text_continues(&hdr) => {
                // The target keeps the command for the next text request.
            }
            State::SendTaskMgtRsp if ok => {
                cmd.tmr_post_handler();
                cmd.set_sent();
                cmd.release(false);
            }
            _ => {
                cmd.set_sent();
                cmd.release(!ok);
            }
        }
    }

    fn on_completion(self: &Arc<Self>, c: Completion<TxDesc>) {
        match c {
            Completion::Recv {
                buf,
                result: Ok(len),
            } => self.on_recv(buf, len),
            Completion::Send { ctx, result } => {
                self.sends.fetch_sub(1, Relaxed);
                if let Err(e) = &result {
                    self.wc_error("send", e);
                }
                self.on_send(ctx, result.is_ok());
                self.flush_backlog();
            }
            Completion::Recv {
                buf,
                result: Err(e),
            } => {
                drop(buf);
                self.wc_error("receive", &e);
            }
            Completion::SendDrained => {
                self.inner.lock().send_drained = true;
                self.wait.notify_all();
            }
            Completion::RecvDrained => {
                self.inner.lock().recv_drained = true;
                self.wait.notify_all();
            }
        }
    }

    fn wc_error(self: &Arc<Self>, what: &str, e: &kernel::rdma::verbs::WcError) {
        if e.is_flush() {
            return;
        }
        STATS.wc_errors.inc();
        pr_warn!("conn {}: {} failed: {}\n", self.id, what, e);
        self.terminate("work request failed");
    }
}

/// Queues a connection's work item `ID` (0: completions, 1: control) on the module's
/// workqueue, unless the module is going away.
fn enqueue<const ID: u64>(conn: Arc<RConn>)
where
    RConn: WorkItem<ID, Pointer = Arc<RConn>> + kernel::workqueue::HasWork<RConn, ID>,
{
    let not_queued = shared()
        .wq
        .try_access()
        .map(|wq| wq.enqueue::<Arc<RConn>, ID>(conn).err());
    // Dropped outside the RCU read section of `try_access`.
    drop(not_queued);
}

/// A connection's completion queue as a completion source for the [`Batcher`].
struct Source<'a> {
    conn: &'a Arc<RConn>,
}

/// A connection's completion queue with the connection's lock held, for one batcher pass.
struct LockedCq<'a> {
    inner: MutexGuard<'a, Inner>,
}

impl CompletionQueue for LockedCq<'_> {
    type Completion = Completion<TxDesc>;

    fn poll(&mut self, max: usize, sink: impl FnMut(Self::Completion)) -> usize {
        match self.inner.link.as_ref() {
            Some(l) => l.cq().poll(max, sink),
            None => 0,
        }
    }

    fn arm(&mut self) -> Armed {
        // `IB_CQ_REPORT_MISSED_EVENTS`: a positive answer means completions may be queued that
        // raise no event.
        match self.inner.link.as_ref() {
            Some(l) if l.cq().arm() => Armed::MaybeMissed,
            _ => Armed::Quiet,
        }
    }
}

impl CompletionSource for Source<'_> {
    type Completion = Completion<TxDesc>;
    type Queue<'b>
        = LockedCq<'b>
    where
        Self: 'b;

    fn lock(&self) -> LockedCq<'_> {
        LockedCq {
            inner: self.conn.inner.lock(),
        }
    }

    /// Called after the connection's lock is dropped: handling a completion takes it.
    fn complete(&self, c: Self::Completion) {
        self.conn.on_completion(c);
    }
}

/// The completion work: one budgeted pass, requeued while completions remain (the stgt iSER
/// technique). In the adaptive mode, one busy-polling pass, requeued while the connection stays
/// in the polling set.
impl WorkItem<0> for RConn {
    type Pointer = Arc<RConn>;

    fn run(this: Arc<RConn>) {
        let src = Source { conn: &this };
        let pass = if this.busy_poll && this.batcher.is_polling() {
            this.batcher.poll(&src, Instant::now())
        } else {
            this.batcher.run(&src)
        };
        match pass {
            Pass::Reschedule | Pass::Polling => this.kick(),
            Pass::Armed | Pass::Deferred => {}
        }
    }
}

/// The control work: logout post-handling, and the release of connections the target never
/// knew (`isert_do_control_comp()`, `isert_release_work()`).
impl WorkItem<1> for RConn {
    type Pointer = Arc<RConn>;

    fn run(this: Arc<RConn>) {
        let (logouts, release) = {
            let mut inner = this.inner.lock();
            let logouts = core::mem::take(&mut inner.logouts);
            let release = core::mem::take(&mut inner.release);
            (logouts, release)
        };
        for cmd in logouts {
            cmd.logout_post_handler();
        }
        if release {
            let portal = this.inner.lock().portal.take();
            if let Some(p) = portal {
                p.remove(&this);
            }
            this.release_link();
        }
    }
}

/// A portal's connections on their way to its login thread.
#[pin_data]
struct PortalQueue {
    addr: SockAddr,
    /// Established connections, oldest first; `None` once the portal is closing.
    #[pin]
    pending: Mutex<Option<KVec<Arc<RConn>>>>,
    #[pin]
    wait: CondVar,
}

impl PortalQueue {
    fn push_pending(&self, conn: Arc<RConn>) {
        let mut p = self.pending.lock();
        match &mut *p {
            Some(v) => {
                if v.push(conn.clone(), GFP_KERNEL).is_err() {
                    drop(p);
                    conn.terminate("no memory to queue the connection");
                    return;
                }
            }
            None => {
                drop(p);
                conn.terminate("portal closed");
                return;
            }
        }
        self.wait.notify_all();
    }

    fn remove(&self, conn: &Arc<RConn>) {
        if let Some(v) = &mut *self.pending.lock() {
            v.retain(|c| !Arc::ptr_eq(c, conn));
        }
    }
}

/// The events of a portal's `rdma_cm` listener.
struct PortalEvents {
    queue: Arc<PortalQueue>,
}

/// Connection numbers, for logs and debugfs.
static NEXT_ID: Atomic<u64> = Atomic::new(1);

impl PortalEvents {
    fn accept(&self, req: ConnectRequest<'_, ConnEv>) -> (Handled, Result) {
        let Some(dev) = req.device() else {
            return (req.reject(), Err(ENODEV));
        };
        let idle_us = module_parameters::poll_idle_us.value();
        let peer = req.peer();
        let conn = match Arc::pin_init(
            pin_init!(RConn {
                id: NEXT_ID.fetch_add(1, Relaxed),
                peer,
                iconn <- ConnSlot::new(),
                inner <- new_mutex!(Inner {
                    phase: Phase::Init,
                    link: None,
                    portal: Some(self.queue.clone()),
                    login_req: None,
                    login_rx: None,
                    login_rsp: None,
                    logouts: KVec::new(),
                    backlog: KVec::new(),
                    logout_posted: false,
                    release: false,
                    established: false,
                    send_drained: false,
                    recv_drained: false,
                }),
                wait <- new_condvar!(),
                batcher: Batcher::new(Config {
                    idle: Delta::from_micros(idle_us.into()),
                    ..Config::from_param(module_parameters::budget.value())
                }),
                busy_poll: idle_us != 0,
                events: Counter::new(),
                sends: Atomic::new(0),
                backlogged: Atomic::new(0),
                rx: Counter::new(),
                tx: Counter::new(),
                poll_work <- new_work!("risert::poll"),
                ctrl_work <- new_work!("risert::ctrl"),
            }),
            GFP_KERNEL,
        ) {
            Ok(c) => c,
            Err(e) => return (req.reject(), Err(e)),
        };
        let setup = || -> Result<(Pd, Cq<CqKick>, KBox<DmaBuf<FromDevice>>)> {
            let pd = Pd::alloc(&dev, c"risert")?;
            let kick = Arc::new(CqKick { conn: conn.clone() }, GFP_KERNEL)?;
            // Connections take the device's completion vectors in turn, so their
            // interrupts spread over the CPUs the vectors are bound to.
            let vector = (conn.id % u64::from(dev.num_comp_vectors().max(1))) as u32;
            let cq = Cq::new(&dev, TX_DESCS + RX_DESCS + 2, vector, kick, c"risert")?;
            Ok((pd, cq, rx_buf(&dev)?))
        };
        let (pd, cq, rx) = match setup() {
            Ok(r) => r,
            Err(e) => return (req.reject(), Err(e)),
        };
        // Take as many RDMA reads outstanding as the initiator asks for and the device allows.
        let depth = u32::from(req.initiator_depth()).min(dev.max_qp_init_rd_atom()) as u8;
        let caps = match module_parameters::send_queue.value() {
            0 => QpCaps {
                send_wr: TX_DESCS + 1,
                recv_wr: RX_DESCS + 1,
                rdma_ctxs: TX_DESCS,
            },
            n => QpCaps {
                send_wr: n,
                recv_wr: RX_DESCS + 1,
                rdma_ctxs: n,
            },
        };
        // iSER CM response header: no zero-based virtual addresses, no send with invalidate.
        let private = [wire::ZBVA_NOT_USED | wire::SEND_W_INV_NOT_USED, 0, 0, 0];
        let events = ConnEv { conn: conn.clone() };
        let (handled, link) = req.accept(pd, cq, caps, depth, &private, events, |qp| {
            // The login request may arrive as soon as the peer sees the accept.
            qp.post_recv(rx)
        });
        let link = match link {
            Ok(l) => l,
            Err(e) => return (handled, Err(e)),
        };
        conn.inner.lock().link = Some(link);
        let _ = link_arm(&conn);
        let sh = shared();
        if sh.conns.lock().push(conn.clone(), GFP_KERNEL).is_err() {
            pr_warn!("conn {}: not listed in debugfs (no memory)\n", conn.id);
        }
        (handled, Ok(()))
    }
}

/// Arms a new connection's completion queue.
fn link_arm(conn: &Arc<RConn>) -> bool {
    match conn.inner.lock().link.as_ref() {
        Some(l) => l.cq().arm(),
        None => false,
    }
}

impl Listener for PortalEvents {
    type Conn = ConnEv;

    fn connect_request(&self, req: ConnectRequest<'_, ConnEv>) -> Handled {
        STATS.connect_requests.inc();
        let peer = req.peer();
        let (handled, ret) = self.accept(req);
        match ret {
            Ok(()) => {
                STATS.accepted.inc();
                pr_info!("{}: accepted a connection from {}\n", self.queue.addr, peer);
            }
            Err(e) => {
                STATS.rejected.inc();
                pr_warn!(
                    "{}: rejected a connection from {}: {:?}\n",
                    self.queue.addr,
                    peer,
                    e
                );
            }
        }
        handled
    }

    fn lost(&self, why: Lost) {
        STATS.listeners_lost.inc();
        pr_warn!(
            "{}: no longer listening ({}); disable and enable the portal to listen again\n",
            self.queue.addr,
            match why {
                Lost::DeviceRemoval => "RDMA device removed",
                Lost::AddrChange => "address moved",
            }
        );
    }
}

/// A portal with iSER enabled.
struct Portal {
    listen: ListenId<PortalEvents>,
    queue: Arc<PortalQueue>,
}

/// The `IB/iSER` transport.
struct Risert;

impl Transport for Risert {
    const NAME: &'static CStr = c"IB/iSER";
    const NETWORK: NetworkType = NetworkType::Infiniband;
    type Portal = KBox<Portal>;
    type ConnData = RConn;

    fn conn_slot(data: &RConn) -> &ConnSlot {
        &data.iconn
    }

    fn setup_np(_np: &Np, addr: &SockAddr) -> Result<KBox<Portal>> {
        let queue = Arc::pin_init(
            pin_init!(PortalQueue {
                addr: *addr,
                pending <- new_mutex!(Some(KVec::new())),
                wait <- new_condvar!(),
            }),
            GFP_KERNEL,
        )?;
        let events = PortalEvents {
            queue: queue.clone(),
        };
        let listen = ListenId::listen(
            &<RisertModule as kernel::ModuleMetadata>::THIS_MODULE,
            c"risert",
            addr,
            events,
        )
        .inspect_err(|e| {
            STATS.listen_failed.inc();
            pr_err!("{}: cannot listen: {:?}\n", addr, e);
        })?;
        STATS.portals_up.inc();
        pr_info!("{}: listening for iSER connections\n", addr);
        Ok(KBox::new(Portal { listen, queue }, GFP_KERNEL)?)
    }

    fn accept_np(np: &Np, portal: &Portal, _conn: &Conn) -> Result<Accepted<Arc<RConn>>> {
        let q = &portal.queue;
        let mut pending = q.pending.lock();
        loop {
            if np.thread_stopping() {
                return Err(ENODEV);
            }
            match &mut *pending {
                Some(v) if !v.is_empty() => {
                    let conn = v.remove(0)?;
                    drop(pending);
                    let (peer, local) = {
                        let mut inner = conn.inner.lock();
                        if inner.phase != Phase::Up {
                            // Torn down while it waited; its release work frees it.
                            pending = q.pending.lock();
                            continue;
                        }
                        inner.phase = Phase::Bound;
                        inner.portal = None;
                        let l = inner.link.as_ref().ok_or(ENOTCONN)?;
                        (l.peer(), l.local())
                    };
                    STATS.logins.inc();
                    return Ok(Accepted {
                        ctx: conn,
                        peer,
                        local,
                    });
                }
                Some(_) => {}
                None => return Err(ENODEV),
            }
            // The login thread is signalled (SIGINT) when the portal is reset or removed.
            if q.wait.wait_interruptible(&mut pending) {
                return Err(ENODEV);
            }
        }
    }

    fn free_np(np: &Np, portal: KBox<Portal>) {
        STATS.portals_down.inc();
        let Portal { listen, queue } = KBox::into_inner(portal);
        let listening = listen.is_listening();
        // Destroying the listener waits for its handlers: no connection is accepted after.
        drop(listen);
        let left = queue.pending.lock().take().unwrap_or_default();
        for conn in left.iter() {
            conn.terminate("portal closed");
        }
        pr_info!(
            "{}: portal closed{} ({} connections waiting for login dropped)\n",
            np.addr(),
            if listening {
                ""
            } else {
                " (its listener was already lost)"
            },
            left.len()
        );
    }

    fn get_login_rx(_c: &Conn, conn: ArcBorrow<'_, RConn>, login: &Login) -> Result {
        if !login.first_request() {
            // Delivered by the completion work with `deliver_login_pdu`.
            return Ok(());
        }
        let (buf, len) = {
            let mut inner = conn.inner.lock();
            loop {
                if let Some(req) = inner.login_req.take() {
                    break req;
                }
                if inner.phase == Phase::Terminating {
                    return Err(ENOTCONN);
                }
                if conn.wait.wait_interruptible(&mut inner) {
                    return Err(EINTR);
                }
            }
        };
        let ret = login.fill_request(&buf.as_slice()[ISER_HDR_LEN..len]);
        conn.inner.lock().login_rx = Some(buf);
        ret
    }

    fn put_login_tx(_c: &Conn, conn: ArcBorrow<'_, RConn>, login: &Login, len: u32) -> Result {
        let (tx, n) = conn.new_tx(&login.rsp(), login.rsp_data(len as usize))?;
        if !login.failed() {
            if login.complete() {
                // Sent by `get_rx_pdu` once the receive buffers are posted: the initiator
                // starts the full-feature phase as soon as it has the response.
                conn.inner.lock().login_rsp = Some((tx, n));
                return Ok(());
            }
            let rx = match conn.inner.lock().login_rx.take() {
                Some(b) => b,
                None => conn.new_rx()?,
            };
            conn.post_recv(rx)?;
        }
        Ok(conn.post(tx, Post::Send(n))?)
    }

    fn get_rx_pdu(_c: &Conn, conn: ArcBorrow<'_, RConn>) {
        let Some((tx, n)) = conn.inner.lock().login_rsp.take() else {
            // The login failed after its last response was built.
            return;
        };
        for _ in 0..RX_DESCS {
            let posted = conn.new_rx().and_then(|b| conn.post_recv(b));
            if let Err(e) = posted {
                pr_err!("conn {}: cannot post receive buffers: {:?}\n", conn.id, e);
                return;
            }
        }
        {
            let mut inner = conn.inner.lock();
            if inner.phase != Phase::Bound {
                return;
            }
            inner.phase = Phase::FullFeature;
        }
        if let Err(e) = conn.post(tx, Post::Send(n)) {
            pr_err!(
                "conn {}: cannot send the login response: {:?}\n",
                conn.id,
                e.error
            );
            return;
        }
        pr_info!("conn {} ({}): logged in\n", conn.id, conn.peer);
        // The receive thread has nothing else to do: completions arrive through the work
        // item. It is signalled when the connection closes.
        let mut inner = conn.inner.lock();
        while inner.phase != Phase::Terminating {
            if conn.wait.wait_interruptible(&mut inner) {
                break;
            }
        }
    }

    fn response_queue(c: &Conn, conn: ArcBorrow<'_, RConn>, cmd: Cmd, state: State) -> QueueResult {
        let mut hdr = [0u8; iscsit::HDR_LEN];
        let tx = match state {
            State::SendTextRsp => cmd
                .build_text_rsp(c, &mut hdr)
                .and_then(|data| conn.new_tx(&hdr, data)),
            State::SendLogoutRsp => cmd
                .build_logout_rsp(c, &mut hdr)
                .and_then(|()| conn.new_tx(&hdr, &[])),
            State::SendNopin => {
                let data = cmd.build_nopin(c, &mut hdr, true);
                conn.new_tx(&hdr, data)
            }
            State::SendReject => {
                let data = cmd.build_reject(c, &mut hdr);
                conn.new_tx(&hdr, data)
            }
            State::SendTaskMgtRsp => {
                cmd.build_tm_rsp(c, &mut hdr);
                conn.new_tx(&hdr, &[])
            }
            // The target's response thread takes an error as a failed connection.
            State::SendStatus => return conn.send_rsp(c, cmd, false, false),
            s => {
                pr_err!("conn {}: unexpected response state {:?}\n", conn.id, s);
                Err(EINVAL)
            }
        };
        let tx = match tx {
            Ok(tx) => tx,
            Err(e) => return Err(Refused::new(cmd, e)),
        };
        conn.send_ctrl(tx, cmd)?;
        if state == State::SendLogoutRsp {
            conn.inner.lock().logout_posted = true;
        }
        Ok(())
    }

    fn immediate_queue(
        c: &Conn,
        conn: ArcBorrow<'_, RConn>,
        cmd: Cmd,
        state: State,
    ) -> QueueResult {
        match state {
            State::Remove => {
                cmd.release(true);
                Ok(())
            }
            State::SendNopinWantResponse => {
                let mut hdr = [0u8; iscsit::HDR_LEN];
                let data = cmd.build_nopin(c, &mut hdr, false);
                match conn.new_tx(&hdr, data) {
                    Ok(tx) => conn.send_ctrl(tx, cmd),
                    Err(e) => Err(Refused::new(cmd, e)),
                }
            }
            s => {
                pr_err!("conn {}: unexpected immediate state {:?}\n", conn.id, s);
                Err(Refused::new(cmd, EINVAL))
            }
        }
    }

    fn queue_data_in(c: &Conn, conn: ArcBorrow<'_, RConn>, cmd: Cmd) -> QueueResult {
        conn.send_rsp(c, cmd, true, true)
    }

    fn queue_status(c: &Conn, conn: ArcBorrow<'_, RConn>, cmd: Cmd) -> QueueResult {
        conn.send_rsp(c, cmd, false, true)
    }

    fn get_dataout(_c: &Conn, conn: ArcBorrow<'_, RConn>, mut cmd: Cmd) -> QueueResult {
        let tx = TxDesc {
            buf: None,
            cmd: None,
            read: true,
        };
        let mut tx = match conn
            .rw_qp()
            .and_then(|qp| cmd.rdma_setup(&qp))
            .and_then(|()| Ok(KBox::new(tx, GFP_KERNEL)?))
        {
            Ok(tx) => tx,
            Err(e) => return Err(Refused::new(cmd, e)),
        };
        tx.cmd = Some(cmd);
        // The target ignores the error when it asks for the data from its data-out handling.
        conn.post_or_queue(tx, Post::Rw(None))
    }

    fn wait_conn(c: &Conn, conn: ArcBorrow<'_, RConn>) {
        let conn: Arc<RConn> = conn.into();
        // A failed login ends here right after its reject was posted: give the sends in flight
        // a moment to reach the initiator before the disconnect flushes them.
        for _ in 0..SEND_GRACE_MS / 10 {
            if conn.sends.load(Relaxed) == 0 {
                break;
            }
            fsleep(Delta::from_millis(10));
        }
        {
            let mut inner = conn.inner.lock();
            if inner.phase != Phase::Terminating {
                inner.phase = Phase::Terminating;
                if let Some(l) = inner.link.as_ref() {
                    let _ = l.disconnect();
                }
            }
        }
        conn.wait.notify_all();
        conn.drain();
        c.wait_for_cmds();
        if conn.inner.lock().logout_posted {
            c.wait_for_logout();
        }
    }

    fn free_conn(_c: &Conn, conn: Arc<RConn>) {
        conn.release_link();
    }
}

#[pin_data(PinnedDrop)]
struct RisertModule {
    #[pin]
    transport: Registration<Risert>,
    _stats: Option<Pin<KBox<debugfs::File<()>>>>,
    _debugfs: debugfs::Dir,
}

impl kernel::InPlaceModule for RisertModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let debugfs = debugfs::Dir::new(c"risert");
        let stats = KBox::pin_init(
            debugfs.read_callback_file(c"stats", (), &write_stats),
            GFP_KERNEL,
        )
        .ok();
        let sh = OwnedQueue::new(
            c"risert",
            QueueFlags::PERCPU | QueueFlags::HIGHPRI | QueueFlags::MEM_RECLAIM,
            0,
        )
        .and_then(|wq| {
            Arc::pin_init(
                pin_init!(Shared {
                    wq <- Revocable::new(wq),
                    conns <- new_mutex!(KVec::new()),
                    gone <- new_condvar!(),
                }),
                GFP_KERNEL,
            )
        })
        .map(|sh| SHARED.populate(sh));
        try_pin_init!(Self {
            transport <- {
                sh?;
                Registration::register(module)
            },
            _stats: stats,
            _debugfs: debugfs,
        })
        .pin_chain(|_| {
            pr_info!("iSER target transport registered\n");
            Ok(())
        })
    }
}

#[pinned_drop]
impl PinnedDrop for RisertModule {
    fn drop(self: Pin<&mut Self>) {
        // No portal uses the transport (each holds a module reference), so every connection
        // is being torn down; wait for them before the workqueue goes with the module.
        let sh = shared();
        let mut conns = sh.conns.lock();
        while !conns.is_empty() {
            let _ = sh
                .gone
                .wait_interruptible_timeout(&mut conns, msecs_to_jiffies(100));
        }
        drop(conns);
        // Waits for queued and running work items, then destroys the workqueue.
        sh.wq.revoke();
    }
}
