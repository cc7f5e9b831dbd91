// SPDX-License-Identifier: GPL-2.0

//! The `IB/iSER` transport's callbacks (`struct iscsit_transport`).

use super::*;

/// The `IB/iSER` transport.
pub(crate) struct Risert;

impl Transport for Risert {
    const NAME: &'static CStr = c"IB/iSER";
    const NETWORK: NetworkType = NetworkType::Infiniband;
    type Portal = KBox<Portal>;
    type ConnData = RConn;

    fn conn_slot(data: &RConn) -> &ConnSlot {
        &data.iconn
    }

    fn setup_np(_np: &Np, addr: &SockAddr) -> Result<KBox<Portal>> {
        let queue = PortalQueue::new(addr)?;
        STATS.portals_up.inc();
        pr_info!("{}: listening for iSER connections\n", addr);
        Ok(KBox::new(Portal { queue }, GFP_KERNEL)?)
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
                        match inner.phase.take() {
                            // The portal is no longer needed: the login thread has it.
                            Phase::Up(w) => {
                                let bufs = LoginBufs {
                                    req: w.req,
                                    ..LoginBufs::default()
                                };
                                conn.set_phase(&mut inner, Phase::Bound(bufs));
                            }
                            other => {
                                // Torn down while it waited; its release work frees it.
                                inner.phase = other;
                                drop(inner);
                                pending = q.pending.lock();
                                continue;
                            }
                        }
                        conn.with_link(|l| (l.peer(), l.local()))?
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
        let Portal { queue } = KBox::into_inner(portal);
        let listening = queue.close_listener();
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
                match &mut inner.phase {
                    Phase::Bound(l) => {
                        if let Some(req) = l.req.take() {
                            break req;
                        }
                    }
                    Phase::Terminating(_) => return Err(ENOTCONN),
                    _ => {}
                }
                if conn.wait.wait_interruptible(&mut inner) {
                    return Err(EINTR);
                }
            }
        };
        let ret = login.fill_request(&buf.as_slice()[ISER_HDR_LEN..len]);
        if let Phase::Bound(l) = &mut conn.inner.lock().phase {
            l.rx = Some(buf);
        }
        ret
    }

    fn put_login_tx(_c: &Conn, conn: ArcBorrow<'_, RConn>, login: &Login, len: u32) -> Result {
        let (tx, n) = conn.new_tx(&login.rsp(), login.rsp_data(len as usize))?;
        if !login.failed() {
            if login.complete() {
                // Sent by `get_rx_pdu` once the receive buffers are posted: the initiator
                // starts the full-feature phase as soon as it has the response.
                if let Phase::Bound(l) = &mut conn.inner.lock().phase {
                    l.rsp = Some((tx, n));
                }
                return Ok(());
            }
            let rx = match &mut conn.inner.lock().phase {
                Phase::Bound(l) => l.rx.take(),
                _ => None,
            };
            let rx = match rx {
                Some(b) => b,
                None => conn.new_rx()?,
            };
            conn.post_recv(rx)?;
        }
        Ok(conn.post(tx, Post::Send(SendWr::plain(n)))?)
    }

    fn get_rx_pdu(_c: &Conn, conn: ArcBorrow<'_, RConn>) {
        let rsp = match &mut conn.inner.lock().phase {
            Phase::Bound(l) => l.rsp.take(),
            _ => None,
        };
        let Some((tx, n)) = rsp else {
            // The login failed after its last response was built, or the connection is
            // terminating.
            return;
        };
        for _ in 0..RX_DESCS {
            let posted = conn.new_rx().and_then(|b| conn.post_recv(b));
            if let Err(e) = posted {
                pr_err!("conn {}: cannot post receive buffers: {:?}\n", conn.id, e);
                return;
            }
        }
        if let Err(e) = conn.fill_tx_pool() {
            // Responses then get buffers of their own.
            pr_warn!("conn {}: no send descriptor pool: {:?}\n", conn.id, e);
        }
        {
            let mut inner = conn.inner.lock();
            if !matches!(inner.phase, Phase::Bound(_)) {
                return;
            }
            conn.set_phase(
                &mut inner,
                Phase::FullFeature {
                    logout_posted: false,
                },
            );
        }
        if let Err(e) = conn.post(tx, Post::Send(SendWr::plain(n))) {
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
        while !inner.phase.is_terminating() {
            if conn.wait.wait_interruptible(&mut inner) {
                break;
            }
        }
    }

    fn response_queue(c: &Conn, conn: ArcBorrow<'_, RConn>, cmd: Cmd, state: State) -> QueueResult {
        let mut hdr = Bhs::default();
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
                // The target queues a NOP-Out that carries both an initiator task tag and a
                // target transfer tag (a protocol error) without a state. Failing the connection
                // here (as ib_isert does) stops the target's response thread with commands still
                // in its queue, and its connection close then waits for them forever. The
                // command is freed and nothing is sent instead.
                pr_warn!("conn {}: response state {:?} dropped\n", conn.id, s);
                STATS.rsp_dropped.inc();
                conn.release_cmd(cmd, true);
                return Ok(());
            }
        };
        let tx = match tx {
            Ok(tx) => tx,
            Err(e) => return Err(Refused::new(cmd, e)),
        };
        conn.send_ctrl(tx, cmd)?;
        if state == State::SendLogoutRsp {
            conn.note_logout_posted();
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
                conn.release_cmd(cmd, true);
                Ok(())
            }
            State::SendNopinWantResponse => {
                let mut hdr = Bhs::default();
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
        // A pooled descriptor when there is one; its buffer is not sent.
        let pooled = conn.pooled_tx();
        let tx = match pooled {
            Some(tx) => Ok(tx),
            None => KBox::new(
                TxDesc {
                    buf: None,
                    cmd: None,
                    read: true,
                },
                GFP_KERNEL,
            )
            .map_err(Error::from),
        };
        let mut tx =
            match tx.and_then(|tx| conn.rw_qp().and_then(|qp| cmd.rdma_setup(&qp)).map(|()| tx)) {
                Ok(tx) => tx,
                Err(e) => return Err(Refused::new(cmd, e)),
            };
        tx.read = true;
        tx.cmd = Some(cmd);
        // The target ignores the error when it asks for the data from its data-out handling.
        conn.post_or_queue(tx, Post::Rw(None))
    }

    fn wait_conn(c: &Closing, conn: ArcBorrow<'_, RConn>) {
        let conn: Arc<RConn> = conn.into();
        conn.signal_posted();
        // A failed login ends here right after its reject was posted: give the sends in flight
        // a moment to reach the initiator before the disconnect flushes them.
        for _ in 0..SEND_GRACE_MS / 10 {
            if conn.sends.load(Relaxed) == 0 {
                break;
            }
            fsleep(Delta::from_millis(10));
        }
        let logout_posted = {
            let mut inner = conn.inner.lock();
            let terminating = inner.phase.is_terminating();
            let logout_posted = conn.set_terminating(&mut inner).logout_posted;
            if !terminating {
                conn.disconnect();
            }
            logout_posted
        };
        conn.wait.notify_all();
        conn.drain();
        c.wait_for_cmds();
        // Read again: a logout response posted meanwhile counts too.
        let logout_posted = logout_posted
            || conn
                .inner
                .lock()
                .phase
                .teardown()
                .is_some_and(|t| t.logout_posted);
        if logout_posted {
            c.wait_for_logout();
        }
    }

    fn free_conn(_c: &Conn, conn: Arc<RConn>) {
        conn.release_link();
    }
}
