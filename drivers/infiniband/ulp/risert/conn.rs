// SPDX-License-Identifier: GPL-2.0

//! A connection: its state, its RDMA connection's events, and its teardown.

use super::*;

/// A received message kept for later: its buffer and length.
pub(crate) type RxMsg = (KBox<DmaBuf<FromDevice>>, usize);

/// A connection's phase (`enum iser_conn_state`), with what only that phase has. Phases only
/// move forward: `Init`, `Up`, `Bound`, `FullFeature`, `Terminating` (from any of them).
pub(crate) enum Phase {
    /// Accepted; the RDMA connection is not established yet.
    Init(Waiting),
    /// Established; waiting for the portal's login thread.
    Up(Waiting),
    /// Handed to the iSCSI target: the login phase.
    Bound(LoginBufs),
    /// Logged in.
    FullFeature {
        /// A logout response was posted: teardown waits for the target's logout completion.
        logout_posted: bool,
    },
    /// Disconnecting.
    Terminating(Teardown),
}

/// A connection that waits for the portal's login thread.
pub(crate) struct Waiting {
    /// The portal whose login thread is to take the connection.
    pub(crate) portal: Arc<PortalQueue>,
    /// The first login request, if it came before the login thread.
    pub(crate) req: Option<RxMsg>,
}

/// The login phase's buffers.
#[derive(Default)]
pub(crate) struct LoginBufs {
    /// The first login request, waiting for the target's login thread.
    pub(crate) req: Option<RxMsg>,
    /// A buffer for the next login request.
    pub(crate) rx: Option<KBox<DmaBuf<FromDevice>>>,
    /// The final login response, sent once the receive buffers are posted.
    pub(crate) rsp: Option<(KBox<TxDesc>, usize)>,
}

/// What the teardown of a connection needs to know.
#[derive(Default)]
pub(crate) struct Teardown {
    /// The portal, if the connection was still waiting for its login thread: the release
    /// takes it out of the portal's queue.
    pub(crate) portal: Option<Arc<PortalQueue>>,
    /// The CM reported the connection established (before or after it began terminating).
    pub(crate) established: bool,
    /// The target knew the connection (it was bound): the target tears it down.
    pub(crate) bound: bool,
    /// A logout response was posted: teardown waits for the target's logout completion.
    pub(crate) logout_posted: bool,
    /// The connection never reached the target and is to be released by the control work.
    pub(crate) release: bool,
    /// The send queue's drain marker completed.
    pub(crate) send_drained: bool,
    /// The receive queue's drain marker completed.
    pub(crate) recv_drained: bool,
}

impl Phase {
    /// The phase's name, for debugfs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Init(_) => "Init",
            Phase::Up(_) => "Up",
            Phase::Bound(_) => "Bound",
            Phase::FullFeature { .. } => "FullFeature",
            Phase::Terminating(_) => "Terminating",
        }
    }

    pub(crate) fn is_terminating(&self) -> bool {
        matches!(self, Phase::Terminating(_))
    }

    /// The teardown's state, once terminating.
    pub(crate) fn teardown(&mut self) -> Option<&mut Teardown> {
        match self {
            Phase::Terminating(t) => Some(t),
            _ => None,
        }
    }

    /// Takes the phase out to move its data into the next one, leaving an empty
    /// `Terminating` in its place; the caller puts a phase back before it drops the lock.
    pub(crate) fn take(&mut self) -> Phase {
        core::mem::replace(self, Phase::Terminating(Teardown::default()))
    }

    /// What a teardown starting in this phase takes from it.
    fn into_teardown(self) -> Teardown {
        match self {
            Phase::Init(w) => Teardown {
                portal: Some(w.portal),
                ..Teardown::default()
            },
            Phase::Up(w) => Teardown {
                portal: Some(w.portal),
                established: true,
                ..Teardown::default()
            },
            Phase::Bound(_) => Teardown {
                established: true,
                bound: true,
                ..Teardown::default()
            },
            Phase::FullFeature { logout_posted } => Teardown {
                established: true,
                bound: true,
                logout_posted,
                ..Teardown::default()
            },
            Phase::Terminating(t) => t,
        }
    }
}

pub(crate) type Link = Connection<ConnEv, CqKick>;

/// What a connection's lock protects.
pub(crate) struct Inner {
    /// Changed through [`RConn::set_phase`] and [`RConn::set_terminating`].
    pub(crate) phase: Phase,
    /// Logouts whose response was sent, for the control work.
    pub(crate) logouts: KVec<Cmd>,
    /// Control responses that found the send queue full, in order; posted by the completion
    /// work as sends complete.
    pub(crate) backlog: KVec<(KBox<TxDesc>, Post)>,
}

/// An iSER connection.
#[pin_data]
pub(crate) struct RConn {
    pub(crate) id: u64,
    pub(crate) peer: SockAddr,
    #[pin]
    pub(crate) iconn: ConnSlot,
    #[pin]
    pub(crate) inner: Mutex<Inner>,
    /// The RDMA connection: set once accepted, revoked at teardown, which breaks the reference
    /// cycles through its completion queue and event handler. The data path reaches it under
    /// RCU, without the connection's lock ([`RConn::with_link`]); operations that may sleep
    /// take a reference ([`RConn::link`]).
    #[pin]
    pub(crate) link: Revocable<SetOnce<Arc<Link>>>,
    /// The phase has reached [`Phase::FullFeature`] (or [`Phase::Terminating`]); it never goes
    /// back, so received PDUs read this instead of taking the lock.
    pub(crate) past_login: Atomic<bool>,
    /// Woken on login requests, drain markers and teardown.
    #[pin]
    pub(crate) wait: CondVar,
    pub(crate) batcher: Batcher,
    /// Adaptive completion mode (`poll_idle_us` is not 0): the completion queue is busy-polled
    /// while the connection is busy and re-armed once it has been idle for `poll_idle_us`.
    pub(crate) busy_poll: bool,
    /// Sends and RDMA READs posted whose completion has not come back.
    pub(crate) sends: Atomic<u64>,
    /// Signal one SCSI response in this many (`signal_every`; 1: all).
    pub(crate) signal_every: u32,
    /// `pdus_rx` when the keepalive thread last looked ([`RConn::keepalive_tick`]).
    pub(crate) keepalive_rx: Atomic<u64>,
    /// The keepalive probe posted at the last look, if any; only the keepalive thread uses it.
    #[pin]
    pub(crate) probe: Mutex<Option<Probe>>,
    /// Unsignaled sends posted since the last signaled one (approximate: posts run
    /// concurrently; the queue pair itself knows whether its last send was signaled).
    pub(crate) unsignaled_run: Atomic<u32>,
    /// SCSI commands received whose response is not posted yet: while there are some, a
    /// response may go unsignaled, since a later one will be posted behind it.
    pub(crate) scsi_pending: Atomic<u32>,
    /// The initiator offered send with invalidate and the device can do it: SCSI responses
    /// invalidate the command's key at the initiator (`isert_conn->snd_w_inv`).
    pub(crate) send_w_inv: bool,
    /// Control responses in `Inner::backlog` (read without the lock on each send completion).
    pub(crate) backlogged: Atomic<u32>,
    /// Send descriptors with a mapped buffer of `POOLED_TX_SIZE` bytes, allocated once at
    /// login (ib_isert keeps one in each command): a response takes one and its completion
    /// gives it back, so the data path neither allocates nor maps. `None` once the connection
    /// is released, so that nothing holds the device any more.
    #[pin]
    pub(crate) tx_pool: SpinLock<Option<KVec<KBox<TxDesc>>>>,
    /// Received full-feature PDUs waiting, in order, for a command tag of the session
    /// ([`RConn::retry_parked`]); only the completion work uses them.
    #[pin]
    pub(crate) rx_parked: Mutex<KVec<(KBox<DmaBuf<FromDevice>>, usize)>>,
    /// How many PDUs are in `rx_parked` (read without its lock for each received PDU).
    pub(crate) parked: Atomic<u32>,
    /// The connection's counters, added to the transport's totals when it is freed.
    pub(crate) stats: ConnStats,
    #[pin]
    pub(crate) poll_work: Work<RConn, POLL_WORK>,
    #[pin]
    pub(crate) ctrl_work: Work<RConn, CTRL_WORK>,
}

impl_has_work! {
    impl HasWork<Self, POLL_WORK> for RConn { self.poll_work }
    impl HasWork<Self, CTRL_WORK> for RConn { self.ctrl_work }
}

/// A receive buffer of `RX_SIZE` bytes on `dev`, for posting.
pub(crate) fn rx_buf(dev: &kernel::rdma::verbs::DeviceRef) -> Result<KBox<DmaBuf<FromDevice>>> {
    Ok(KBox::new(DmaBuf::new(dev, RX_SIZE)?, GFP_KERNEL)?)
}

/// A send (the iSER and iSCSI headers and the data segment) or an RDMA READ, and the command
/// it is for.
pub(crate) struct TxDesc {
    pub(crate) buf: Option<DmaBuf<ToDevice>>,
    pub(crate) cmd: Option<Cmd>,
    /// An RDMA READ of a WRITE's data, without a send.
    pub(crate) read: bool,
}

impl SendCtx for TxDesc {
    fn dma_buf(&self) -> Option<&DmaBuf<ToDevice>> {
        self.buf.as_ref()
    }

    fn rw(&mut self) -> Option<Pin<&mut RwCtx>> {
        self.cmd.as_mut().and_then(|c| c.rw_mut())
    }
}

/// Schedules a connection's completion work when its completion queue fires.
pub(crate) struct CqKick {
    pub(crate) conn: Arc<RConn>,
}

impl CqHandler for CqKick {
    type SendCtx = TxDesc;

    fn notify(&self) {
        self.conn.stats.cq_events.inc();
        // In the adaptive mode the queue rejoins the busy-polling set; were it still in it, the
        // completion work is polling already (the event raced with its final look).
        if self.conn.busy_poll && !self.conn.batcher.join_polling(Instant::now()) {
            return;
        }
        self.conn.kick();
    }
}

/// The RDMA connection's events.
pub(crate) struct ConnEv {
    pub(crate) conn: Arc<RConn>,
}

impl ConnEvents for ConnEv {
    fn established(&self) {
        STATS.established.inc();
        let portal = {
            let mut inner = self.conn.inner.lock();
            if let Some(t) = inner.phase.teardown() {
                t.established = true;
                // Terminated before the CM reported the connection (a message can arrive
                // first): only now can the peer be told.
                drop(inner);
                self.conn.release_unbound();
                return;
            }
            match inner.phase.take() {
                Phase::Init(w) => {
                    let portal = w.portal.clone();
                    self.conn.set_phase(&mut inner, Phase::Up(w));
                    portal
                }
                other => {
                    // Reported twice: nothing new.
                    inner.phase = other;
                    return;
                }
            }
        };
        portal.push_pending(self.conn.clone());
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
        let established = {
            let mut inner = self.conn.inner.lock();
            inner.phase.teardown().is_some_and(|t| t.established)
        };
        if !established {
            self.conn.release_unbound();
        }
    }
}

impl RConn {
    pub(crate) fn kick(self: &Arc<Self>) {
        enqueue::<POLL_WORK>(self.clone());
    }

    /// Runs `f` on the RDMA connection under RCU (`f` must not sleep); `ENOTCONN` before the
    /// connection is set or once it is revoked.
    pub(crate) fn with_link<R>(&self, f: impl FnOnce(&Link) -> R) -> Result<R> {
        self.link
            .try_access_with(|l| l.as_ref().map(|l| f(l)))
            .flatten()
            .ok_or(ENOTCONN)
    }

    /// A reference to the RDMA connection, for operations that may sleep.
    pub(crate) fn link(&self) -> Option<Arc<Link>> {
        self.link.try_access_with(|l| l.as_ref().cloned()).flatten()
    }

    /// Moves to `phase` (with the lock held: `inner`).
    pub(crate) fn set_phase(&self, inner: &mut Inner, phase: Phase) {
        if matches!(phase, Phase::FullFeature { .. } | Phase::Terminating(_)) {
            self.past_login.store(true, Relaxed);
        }
        inner.phase = phase;
    }

    /// Moves to [`Phase::Terminating`], keeping what the teardown needs of the phase it
    /// leaves; returns the teardown's state. Already terminating: nothing changes.
    pub(crate) fn set_terminating<'a>(&self, inner: &'a mut Inner) -> &'a mut Teardown {
        if !inner.phase.is_terminating() {
            let old = inner.phase.take();
            self.set_phase(inner, Phase::Terminating(old.into_teardown()));
        }
        match &mut inner.phase {
            Phase::Terminating(t) => t,
            // Set just above.
            _ => unreachable!(),
        }
    }

    /// Records that a logout response was posted, for the teardown.
    pub(crate) fn note_logout_posted(&self) {
        match &mut self.inner.lock().phase {
            Phase::FullFeature { logout_posted } => *logout_posted = true,
            Phase::Terminating(t) => t.logout_posted = true,
            _ => {}
        }
    }

    /// One look of the keepalive thread (every `keepalive_s` seconds). A logged-in connection
    /// that received nothing since the last look gets a probe, a signaled empty RDMA WRITE,
    /// which the initiator's transport acknowledges by itself. A probe still not done at the
    /// next look (a whole period later) means that the initiator is gone without a disconnect:
    /// the connection is terminated. The queue pair's own retries may never give up (`rdma_rxe`
    /// takes the retry count 7 of the kernel's initiator as unlimited), so the probe's age
    /// decides, not its failure. (The target core pings iSCSI connections with NOP-In, but
    /// not iSER ones: without a probe a vanished initiator's session would stay forever.)
    pub(crate) fn keepalive_tick(self: &Arc<Self>) {
        let last = self.probe.lock().take();
        if let Some(p) = last {
            if let Ok(false) = self.with_link(|l| l.qp().probe_done(&p)) {
                STATS.keepalive_lost.inc();
                pr_warn!(
                    "conn {}: keepalive probe unanswered for a whole period\n",
                    self.id
                );
                self.terminate("initiator gone (keepalive)");
                return;
            }
        }
        let rx = self.stats.pdus_rx.get();
        if self.keepalive_rx.xchg(rx, Relaxed) != rx {
            return;
        }
        if !matches!(self.inner.lock().phase, Phase::FullFeature { .. }) {
            return;
        }
        match self.with_link(|l| l.qp().probe()) {
            Ok(Ok(p)) => {
                *self.probe.lock() = Some(p);
                self.stats.keepalives.inc();
            }
            // A full send queue: its sends will show whether the initiator is there.
            Ok(Err(ENOMEM)) | Err(_) => {}
            Ok(Err(e)) => pr_warn!("conn {}: cannot post a keepalive probe: {:?}\n", self.id, e),
        }
    }

    pub(crate) fn device(&self) -> Result<kernel::rdma::verbs::DeviceRef> {
        self.with_link(|l| l.pd().device().clone())
    }

    pub(crate) fn post_recv(&self, buf: KBox<DmaBuf<FromDevice>>) -> Result {
        self.with_link(|l| l.qp().post_recv(buf))?
    }

    pub(crate) fn rw_qp(&self) -> Result<Arc<RwQp>> {
        self.with_link(|l| l.rw_qp().clone())
    }

    /// Starts the disconnection once (`isert_conn_terminate()`). A connection the target
    /// knows is then torn down by the target (a connection reinstatement); one it does not
    /// know is released by the control work.
    ///
    /// Before the connection is established (a message may arrive before the CM reports it),
    /// the peer cannot be told yet: `established` or `connect_error` finishes the job.
    pub(crate) fn terminate(self: &Arc<Self>, why: &str) {
        let (bound, established) = {
            let mut inner = self.inner.lock();
            if inner.phase.is_terminating() {
                return;
            }
            let t = self.set_terminating(&mut inner);
            (t.bound, t.established)
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

    pub(crate) fn disconnect(&self) {
        if let Some(l) = self.link() {
            let _ = l.disconnect();
        }
    }

    /// Disconnects a connection the target does not know and has the control work release
    /// it (`isert_handle_unbound_conn()`).
    pub(crate) fn release_unbound(self: &Arc<Self>) {
        self.disconnect();
        self.set_terminating(&mut self.inner.lock()).release = true;
        enqueue::<CTRL_WORK>(self.clone());
    }

    /// Drains the queue pair (`ib_drain_qp()`): every posted request completes, which gives
    /// back every buffer and command. Waits for the completion work to see both markers.
    pub(crate) fn drain(self: &Arc<Self>) {
        {
            let mut inner = self.inner.lock();
            let Some(l) = self.link() else {
                return;
            };
            // Only a terminating connection is drained: the completion work records the
            // markers in its teardown state.
            let Some(t) = inner.phase.teardown() else {
                pr_warn!("conn {}: drain before teardown\n", self.id);
                return;
            };
            if t.send_drained && t.recv_drained {
                return;
            }
            match l.qp().start_drain() {
                // Another caller posted the markers: wait for them too.
                Ok(()) | Err(EALREADY) => {}
                Err(e) => {
                    pr_warn!("conn {}: cannot drain its queue pair: {:?}\n", self.id, e);
                    return;
                }
            }
        }
        self.kick();
        // Not interruptible: the target's threads call this with a signal pending. Every
        // posted request completes once the queue pair is in the error state, the markers
        // last.
        let mut inner = self.inner.lock();
        while !inner
            .phase
            .teardown()
            .is_some_and(|t| t.send_drained && t.recv_drained)
        {
            self.wait.wait(&mut inner);
        }
        // Control responses never posted: dropping them releases their commands as failed.
        let backlog = core::mem::take(&mut inner.backlog);
        self.backlogged.store(0, Relaxed);
        drop(inner);
        drop(backlog);
    }

    /// Drains and drops the RDMA connection, and forgets the connection.
    pub(crate) fn release_link(self: &Arc<Self>) {
        self.drain();
        // After an RCU grace period: the data path no longer uses it. The connection goes with
        // the last reference (a control operation may still hold one).
        self.link.revoke();
        // Nothing is posted any more: the pooled buffers go now, with their device
        // references, and later descriptors are freed instead of pooled.
        let pool = self.tx_pool.lock().take();
        drop(pool);
        let sh = shared();
        let mut conns = sh.conns.lock();
        conns.retain(|c| !Arc::ptr_eq(c, self));
        // Under the list's lock, so that the totals count the connection once.
        self.stats.retire();
        drop(conns);
        STATS.conns_freed.inc();
        sh.gone.notify_all();
    }
}
