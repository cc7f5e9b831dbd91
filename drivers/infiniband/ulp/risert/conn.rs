// SPDX-License-Identifier: GPL-2.0

//! A connection: its state, its RDMA connection's events, and its teardown.

use super::*;

/// A connection's phase (`enum iser_conn_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
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

pub(crate) type Link = Connection<ConnEv, CqKick>;

/// What a connection's lock protects.
pub(crate) struct Inner {
    /// Changed through [`RConn::set_phase`].
    pub(crate) phase: Phase,
    /// The portal while the connection waits for the login thread.
    pub(crate) portal: Option<Arc<PortalQueue>>,
    /// The first login request, waiting for the login thread, and its length.
    pub(crate) login_req: Option<(KBox<DmaBuf<FromDevice>>, usize)>,
    /// A buffer for the next login request.
    pub(crate) login_rx: Option<KBox<DmaBuf<FromDevice>>>,
    /// The final login response, sent once the receive buffers are posted.
    pub(crate) login_rsp: Option<(KBox<TxDesc>, usize)>,
    /// Logouts whose response was sent, for the control work.
    pub(crate) logouts: KVec<Cmd>,
    /// Control responses that found the send queue full, in order; posted by the completion
    /// work as sends complete.
    pub(crate) backlog: KVec<(KBox<TxDesc>, Post)>,
    /// A logout response was posted: teardown waits for the target's logout completion.
    pub(crate) logout_posted: bool,
    /// The connection never reached the target and is to be released by the control work.
    pub(crate) release: bool,
    /// The CM reported the connection established.
    pub(crate) established: bool,
    pub(crate) send_drained: bool,
    pub(crate) recv_drained: bool,
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
            inner.established = true;
            if inner.phase == Phase::Terminating {
                // Terminated before the CM reported the connection (a message can arrive
                // first): only now can the peer be told.
                drop(inner);
                self.conn.release_unbound();
                return;
            }
            self.conn.set_phase(&mut inner, Phase::Up);
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
        inner.phase = phase;
        if phase >= Phase::FullFeature {
            self.past_login.store(true, Relaxed);
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
            if inner.phase == Phase::Terminating {
                return;
            }
            let bound = inner.phase >= Phase::Bound;
            self.set_phase(&mut inner, Phase::Terminating);
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

    pub(crate) fn disconnect(&self) {
        if let Some(l) = self.link() {
            let _ = l.disconnect();
        }
    }

    /// Disconnects a connection the target does not know and has the control work release
    /// it (`isert_handle_unbound_conn()`).
    pub(crate) fn release_unbound(self: &Arc<Self>) {
        self.disconnect();
        self.inner.lock().release = true;
        enqueue::<CTRL_WORK>(self.clone());
    }

    /// Drains the queue pair (`ib_drain_qp()`): every posted request completes, which gives
    /// back every buffer and command. Waits for the completion work to see both markers.
    pub(crate) fn drain(self: &Arc<Self>) {
        {
            let inner = self.inner.lock();
            let Some(l) = self.link() else {
                return;
            };
            if inner.send_drained && inner.recv_drained {
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
