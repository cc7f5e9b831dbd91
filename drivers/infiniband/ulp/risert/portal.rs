// SPDX-License-Identifier: GPL-2.0

//! Portals: the `rdma_cm` listener, connection requests, and the queue to the login thread.

use super::*;

/// A portal: its `rdma_cm` listener, and its connections on their way to its login thread.
#[pin_data]
pub(crate) struct PortalQueue {
    pub(crate) addr: SockAddr,
    /// The listener; `None` once the portal is closing (or before it first listened).
    #[pin]
    pub(crate) listen: Mutex<Option<ListenId<PortalEvents>>>,
    /// Established connections, oldest first; `None` once the portal is closing.
    #[pin]
    pub(crate) pending: Mutex<Option<KVec<Arc<RConn>>>>,
    #[pin]
    pub(crate) wait: CondVar,
    /// Listens again after the address moved to another device ([`PortalQueue::relisten`]).
    #[pin]
    pub(crate) relisten_work: Work<PortalQueue>,
}

impl_has_work! {
    impl HasWork<Self> for PortalQueue { self.relisten_work }
}

/// How long [`PortalQueue::relisten`] waits for the address to be free again.
const RELISTEN_TRIES: u32 = 50;

impl PortalQueue {
    /// A portal for `addr`, listening.
    pub(crate) fn new(addr: &SockAddr) -> Result<Arc<Self>> {
        let queue = Arc::pin_init(
            pin_init!(PortalQueue {
                addr: *addr,
                listen <- new_mutex!(None, "risert::PortalQueue::listen"),
                pending <- new_mutex!(Some(KVec::new()), "risert::PortalQueue::pending"),
                wait <- new_condvar!("risert::PortalQueue::wait"),
                relisten_work <- new_work!("risert::relisten"),
            }),
            GFP_KERNEL,
        )?;
        let listen = queue.new_listener().inspect_err(|e| {
            STATS.listen_failed.inc();
            pr_err!("{}: cannot listen: {:?}\n", addr, e);
        })?;
        *queue.listen.lock() = Some(listen);
        Ok(queue)
    }

    fn new_listener(self: &Arc<Self>) -> Result<ListenId<PortalEvents>> {
        ListenId::listen(
            &<RisertModule as kernel::ModuleMetadata>::THIS_MODULE,
            c"risert",
            &self.addr,
            PortalEvents {
                queue: self.clone(),
            },
        )
    }

    /// Stops listening (the portal is closing); returns whether the listener was still
    /// listening. Destroying the listener waits for its handlers: no connection is accepted
    /// after.
    pub(crate) fn close_listener(&self) -> bool {
        let listen = self.listen.lock().take();
        listen.is_some_and(|l| l.is_listening())
    }

    /// Listens again on the portal's address, with a new identifier, after the CM took the
    /// old one away because the address moved to another device (`RDMA_CM_EVENT_ADDR_CHANGE`,
    /// raised on a bonding fail-over), as `ib_isert` does. The old identifier holds the
    /// address until the CM has destroyed it, after its handler returned: the address is
    /// tried again for up to a second.
    fn relisten(self: &Arc<Self>) {
        for _ in 0..RELISTEN_TRIES {
            let mut slot = self.listen.lock();
            if slot.is_none() {
                // The portal closed meanwhile.
                return;
            }
            match self.new_listener() {
                Ok(l) => {
                    let old = slot.replace(l);
                    drop(slot);
                    drop(old);
                    STATS.relistens.inc();
                    pr_info!("{}: listening again\n", self.addr);
                    return;
                }
                Err(e) if e == EADDRINUSE => {
                    drop(slot);
                    fsleep(Delta::from_millis(20));
                }
                Err(e) => {
                    STATS.listen_failed.inc();
                    pr_err!("{}: cannot listen again: {:?}\n", self.addr, e);
                    return;
                }
            }
        }
        STATS.listen_failed.inc();
        pr_err!(
            "{}: cannot listen again: the address stays in use\n",
            self.addr
        );
    }

    pub(crate) fn push_pending(&self, conn: Arc<RConn>) {
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

    pub(crate) fn remove(&self, conn: &Arc<RConn>) {
        if let Some(v) = &mut *self.pending.lock() {
            v.retain(|c| !Arc::ptr_eq(c, conn));
        }
    }
}

/// The events of a portal's `rdma_cm` listener.
pub(crate) struct PortalEvents {
    pub(crate) queue: Arc<PortalQueue>,
}

/// Connection numbers, for logs and debugfs.
pub(crate) static NEXT_ID: Atomic<u64> = Atomic::new(1);

impl PortalEvents {
    pub(crate) fn accept(&self, req: ConnectRequest<'_, ConnEv>) -> (Handled, Result) {
        let Some(dev) = req.device() else {
            return (req.reject(), Err(ENODEV));
        };
        let idle_us = module_parameters::poll_idle_us.value();
        let peer = req.peer();
        // Send with invalidate when the initiator accepts it and the device can do it (as
        // `isert_set_nego_params()`).
        let send_w_inv =
            wire::peer_takes_send_w_inv(req.private_data()) && dev.has_mem_mgt_extensions();
        let conn = match Arc::pin_init(
            pin_init!(RConn {
                id: NEXT_ID.fetch_add(1, Relaxed),
                peer,
                send_w_inv,
                iconn <- ConnSlot::new(),
                inner <- new_mutex!(Inner {
                    phase: Phase::Init(Waiting {
                        portal: self.queue.clone(),
                        req: None,
                    }),
                    logouts: KVec::new(),
                    backlog: KVec::new(),
                }),
                link <- Revocable::new(SetOnce::new()),
                past_login: Atomic::new(false),
                wait <- new_condvar!(),
                batcher: Batcher::new(Config {
                    idle: Delta::from_micros(idle_us.into()),
                    ..Config::from_param(module_parameters::budget.value())
                }),
                busy_poll: idle_us != 0,
                sends: Atomic::new(0),
                signal_every: module_parameters::signal_every.value().max(1),
                keepalive_rx: Atomic::new(0),
                probe <- new_mutex!(None),
                unsignaled_run: Atomic::new(0),
                scsi_pending: Atomic::new(0),
                backlogged: Atomic::new(0),
                tx_pool <- new_spinlock!(Some(KVec::new()), "risert::RConn::tx_pool"),
                rx_parked <- new_mutex!(KVec::new(), "risert::RConn::rx_parked"),
                parked: Atomic::new(0),
                stats: ConnStats::new(),
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
        // iSER CM response header: no zero-based virtual addresses; send with invalidate when
        // it was negotiated.
        let mut flags = wire::ZBVA_NOT_USED;
        if !send_w_inv {
            flags |= wire::SEND_W_INV_NOT_USED;
        }
        let private = [flags, 0, 0, 0];
        let events = ConnEv { conn: conn.clone() };
        let param = AcceptParam {
            initiator_depth: depth,
            private_data: &private,
        };
        let (handled, link) = req.accept(pd, cq, caps, param, events, |qp| {
            // The login request may arrive as soon as the peer sees the accept.
            qp.post_recv(rx)
        });
        let link = match link {
            Ok(l) => l,
            Err(e) => return (handled, Err(e)),
        };
        let link = match Arc::new(link, GFP_KERNEL) {
            Ok(l) => l,
            // Dropped in its own handler: the CM destroys the identifier.
            Err(e) => return (handled, Err(e.into())),
        };
        if conn.link.try_access_with(|l| l.populate(link)) != Some(true) {
            return (handled, Err(EINVAL));
        }
        let _ = link_arm(&conn);
        let sh = shared();
        if sh.conns.lock().push(conn.clone(), GFP_KERNEL).is_err() {
            pr_warn!("conn {}: not listed in debugfs (no memory)\n", conn.id);
        }
        (handled, Ok(()))
    }
}

/// Arms a new connection's completion queue.
pub(crate) fn link_arm(conn: &Arc<RConn>) -> bool {
    conn.with_link(|l| l.cq().arm()).unwrap_or(false)
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
        match why {
            Lost::DeviceRemoval => pr_warn!(
                "{}: no longer listening (RDMA device removed); disable and enable the portal \
                 to listen again\n",
                self.queue.addr
            ),
            Lost::AddrChange => {
                pr_warn!(
                    "{}: no longer listening (address moved); listening again\n",
                    self.queue.addr
                );
                // Not here: the old identifier holds the address until this handler returns.
                let not_queued = shared()
                    .wq
                    .try_access()
                    .map(|wq| wq.enqueue::<Arc<PortalQueue>, 0>(self.queue.clone()));
                // Dropped outside the RCU read section of `try_access`.
                drop(not_queued);
            }
        }
    }
}

/// Listens again: see [`PortalQueue::relisten`].
impl WorkItem for PortalQueue {
    type Pointer = Arc<PortalQueue>;

    fn run(this: Arc<PortalQueue>) {
        this.relisten();
    }
}

/// A portal with iSER enabled.
pub(crate) struct Portal {
    pub(crate) queue: Arc<PortalQueue>,
}
