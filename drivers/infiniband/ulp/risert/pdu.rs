// SPDX-License-Identifier: GPL-2.0

//! Received PDUs and completed sends: dispatch to the iSCSI target.

use super::*;

/// Every command tag of the session is in use.
pub(crate) struct NoCmd;

/// What became of a SCSI command handed over with its receive buffer.
enum InPlace {
    /// The target has it (and the buffer, or it was posted again).
    Done,
    /// No command tag: the message waits.
    NoCmd(RxBuf, usize),
    /// Not for this path (a discovery session, or the connection is gone).
    NotHere(RxBuf, usize),
}

impl RConn {
    /// Handles a received message, or keeps it, behind those already kept, until the target
    /// has a command for it.
    pub(crate) fn on_recv(self: &Arc<Self>, buf: KBox<DmaBuf<FromDevice>>, len: usize) {
        self.stats.pdus_rx.inc();
        let back = if self.parked.load(Relaxed) != 0 {
            Some((buf, len))
        } else {
            self.process_rx(buf, len)
        };
        if let Some((buf, len)) = back {
            self.park(buf, len);
        }
    }

    /// Keeps a received message that waits for a command tag; its buffer is not posted again
    /// meanwhile, so a flooding initiator runs out of receive credits.
    fn park(&self, buf: KBox<DmaBuf<FromDevice>>, len: usize) {
        self.stats.tag_waits.inc();
        let mut parked = self.rx_parked.lock();
        if parked.reserve(1, GFP_KERNEL).is_err() {
            pr_warn!(
                "conn {}: a PDU waiting for a command was dropped\n",
                self.id
            );
            drop(parked);
            let _ = self.post_recv(buf);
            return;
        }
        // Room for it: reserved above.
        let _ = parked.push_within_capacity((buf, len));
        self.parked.fetch_add(1, Relaxed);
    }

    /// Hands the kept messages to the target, in order, while it has commands for them;
    /// returns whether some still wait. A connection being torn down drops them.
    pub(crate) fn retry_parked(self: &Arc<Self>) -> bool {
        if self.parked.load(Relaxed) == 0 {
            return false;
        }
        let mut parked = self.rx_parked.lock();
        if self.inner.lock().phase.is_terminating() {
            parked.clear();
            self.parked.store(0, Relaxed);
            return false;
        }
        while let Ok((buf, len)) = parked.remove(0) {
            if let Some(back) = self.process_rx(buf, len) {
                // Room for it: it was just removed.
                let _ = parked.insert_within_capacity(0, back);
                return true;
            }
            self.parked.fetch_sub(1, Relaxed);
        }
        false
    }

    /// Handles a received message; gives it back when the target has no command for it.
    fn process_rx(
        self: &Arc<Self>,
        buf: KBox<DmaBuf<FromDevice>>,
        len: usize,
    ) -> Option<(KBox<DmaBuf<FromDevice>>, usize)> {
        let past_login = self.past_login.load(Relaxed);
        let msg = &buf.as_slice()[..len.min(buf.len())];
        if msg.len() < HEADERS_LEN {
            STATS.bad_pdus.inc();
            pr_warn!("conn {}: short message ({} bytes)\n", self.id, msg.len());
            self.terminate("malformed PDU");
            return None;
        }
        // At least `HEADERS_LEN` bytes (checked above): the header is there.
        let Some((bhs, rest)) = Bhs::from_bytes_copy_prefix(&msg[ISER_HDR_LEN..]) else {
            self.terminate("malformed PDU");
            return None;
        };
        let dlen = bhs.dlength();
        if rest.len() < dlen {
            STATS.bad_pdus.inc();
            pr_warn!(
                "conn {}: PDU declares {} data bytes but {} arrived\n",
                self.id,
                dlen,
                rest.len()
            );
            self.terminate("malformed PDU");
            return None;
        }
        let iser = match parse_iser(msg) {
            Some(h) if Kind::of(&h) == Kind::Control => h,
            h => {
                STATS.bad_pdus.inc();
                let k = h.as_ref().map(Kind::of);
                pr_warn!("conn {}: unexpected iSER message {:?}\n", self.id, k);
                let _ = self.post_recv(buf);
                return None;
            }
        };
        if !past_login {
            self.on_login_pdu(buf, len);
            return None;
        }
        let (buf, len) = if bhs.opcode() == wire::OP_SCSI_CMD && dlen > 0 {
            match self.scsi_cmd_in_place(buf, len, &iser, &bhs, HEADERS_LEN..HEADERS_LEN + dlen) {
                InPlace::Done => return None,
                InPlace::NoCmd(b, l) => return Some((b, l)),
                InPlace::NotHere(b, l) => (b, l),
            }
        } else {
            (buf, len)
        };
        let data = &buf.as_slice()[HEADERS_LEN..HEADERS_LEN + dlen];
        match self.iconn.with(|c| self.dispatch(c, &iser, &bhs, data)) {
            Some(Err(NoCmd)) => return Some((buf, len)),
            Some(Ok(Err(e))) => pr_warn!(
                "conn {}: opcode {:#x} failed: {:?}\n",
                self.id,
                bhs.opcode(),
                e
            ),
            _ => {}
        }
        // The data was copied out: the buffer can take the next PDU.
        let _ = self.post_recv(buf);
        None
    }

    /// Hands a SCSI command that carries immediate data (the bytes `imm` of `buf`) to the
    /// target together with its receive buffer: when the immediate data is all the command's
    /// data, the target executes the WRITE on the buffer (zero-copy), which comes back for
    /// posting when the command is released ([`RConn::release_cmd`]).
    fn scsi_cmd_in_place(
        self: &Arc<Self>,
        buf: RxBuf,
        len: usize,
        iser: &IserCtrl,
        bhs: &Bhs,
        imm: core::ops::Range<usize>,
    ) -> InPlace {
        let mut buf = Some(buf);
        let handled = self.iconn.with_lender(|c, lender| {
            if c.is_discovery() {
                return None;
            }
            let Some(cmd) = c.alloc_cmd() else {
                return Some(Err(NoCmd));
            };
            let rx = buf.take()?;
            self.stats.scsi_cmds.inc();
            self.scsi_pending.fetch_add(1, Relaxed);
            Some(Ok(c.handle_scsi_cmd_in_place(
                lender,
                cmd,
                bhs,
                rx,
                imm,
                iser.remote(),
            )))
        });
        match (handled.flatten(), buf) {
            (Some(Ok((result, back))), _) => {
                if let Err(e) = result {
                    pr_warn!("conn {}: SCSI command failed: {:?}\n", self.id, e);
                }
                match back {
                    Some(b) => {
                        let _ = self.post_recv(b);
                    }
                    None => self.stats.imm_in_place.inc(),
                }
                InPlace::Done
            }
            (Some(Err(NoCmd)), Some(b)) => InPlace::NoCmd(b, len),
            (_, Some(b)) => InPlace::NotHere(b, len),
            (_, None) => InPlace::Done,
        }
    }

    /// Releases a command whose response was sent (or failed), and posts again the receive
    /// buffer that was lent to it.
    pub(crate) fn release_cmd(&self, cmd: Cmd, failed: bool) {
        if let Some(buf) = cmd.release(failed) {
            let _ = self.post_recv(buf);
        }
    }

    /// A login request: the first one waits for the login thread, the others go to the
    /// target's login work.
    pub(crate) fn on_login_pdu(&self, buf: KBox<DmaBuf<FromDevice>>, len: usize) {
        let pdu = &buf.as_slice()[ISER_HDR_LEN..len];
        let delivered = matches!(self.iconn.with(|c| c.deliver_login_pdu(pdu)), Some(Ok(())));
        match &mut self.inner.lock().phase {
            Phase::Bound(l) if delivered => l.rx = Some(buf),
            // The first request: for the login thread.
            Phase::Init(w) | Phase::Up(w) if !delivered => w.req = Some((buf, len)),
            Phase::Bound(l) if !delivered => l.req = Some((buf, len)),
            // Terminating: the buffer goes.
            _ => {}
        }
        self.wait.notify_all();
    }

    /// Hands a full-feature PDU to the target (`isert_rx_opcode()`); [`NoCmd`] when the target
    /// has no free command for it (nothing was done: the PDU is to be handed again later).
    pub(crate) fn dispatch(
        &self,
        c: &Conn,
        iser: &IserCtrl,
        bhs: &Bhs,
        data: &[u8],
    ) -> Result<Result, NoCmd> {
        let op = bhs.opcode();
        if c.is_discovery() && op != wire::OP_TEXT && op != wire::OP_LOGOUT {
            STATS.pdus_rejected.inc();
            pr_warn!(
                "conn {}: opcode {:#x} in a discovery session, ignored\n",
                self.id,
                op
            );
            return Ok(Ok(()));
        }
        Ok(match op {
            wire::OP_SCSI_CMD => {
                let cmd = c.alloc_cmd().ok_or(NoCmd)?;
                self.stats.scsi_cmds.inc();
                self.scsi_pending.fetch_add(1, Relaxed);
                c.handle_scsi_cmd(cmd, bhs, data, iser.remote())
            }
            wire::OP_SCSI_DATA_OUT => match c.handle_data_out(bhs, data) {
                Err(e) if e == EMSGSIZE => {
                    let cmd = c.alloc_cmd().ok_or(NoCmd)?;
                    STATS.pdus_rejected.inc();
                    c.reject(cmd, bhs, RejectReason::ProtocolError);
                    Ok(())
                }
                r => {
                    self.stats.unsol_data_out.inc();
                    r
                }
            },
            wire::OP_SCSI_TMFUNC => {
                let cmd = c.alloc_cmd().ok_or(NoCmd)?;
                self.stats.tmfs.inc();
                c.handle_tmf(cmd, bhs)
            }
            wire::OP_TEXT => {
                let cmd = c.alloc_cmd().ok_or(NoCmd)?;
                self.stats.text.inc();
                c.handle_text(cmd, bhs, data)
            }
            wire::OP_LOGOUT => {
                let cmd = c.alloc_cmd().ok_or(NoCmd)?;
                self.stats.logouts.inc();
                c.handle_logout(cmd, bhs)
            }
            wire::OP_NOOP_OUT => {
                let cmd = c.alloc_cmd().ok_or(NoCmd)?;
                self.stats.nops.inc();
                c.handle_nop_out(cmd, bhs)
            }
            _ => {
                // SNACK needs error recovery level 1; the rest are target-to-initiator
                // opcodes.
                let cmd = c.alloc_cmd().ok_or(NoCmd)?;
                STATS.pdus_rejected.inc();
                c.reject(cmd, bhs, RejectReason::CmdNotSupported);
                Ok(())
            }
        })
    }

    /// A send completed: release the command it answered (`isert_send_done()`).
    pub(crate) fn on_send(self: &Arc<Self>, mut tx: KBox<TxDesc>, ok: bool) {
        let cmd = tx.cmd.take();
        let read = tx.read;
        let hdr = tx
            .buf
            .as_ref()
            .and_then(|b| Bhs::from_bytes_copy(&b.as_slice()[ISER_HDR_LEN..HEADERS_LEN]))
            .unwrap_or_default();
        self.recycle(tx);
        let Some(cmd) = cmd else {
            return;
        };
        if read {
            if ok {
                self.stats.data_out.inc();
                cmd.rdma_read_done();
            } else {
                self.release_cmd(cmd, true);
            }
            return;
        }
        match cmd.state() {
            State::SendLogoutRsp if ok => {
                // The target closes the connection from the post handler, and waits for it:
                // not from this work, which the teardown waits for.
                let queued = self.inner.lock().logouts.push(cmd, GFP_KERNEL);
                match queued {
                    Ok(()) => enqueue::<CTRL_WORK>(self.clone()),
                    Err(_) => pr_err!("conn {}: no memory to complete a logout\n", self.id),
                }
            }
            State::SendTextRsp if ok && Cmd::text_continues(&hdr) => {
                // The target keeps the command for the next text request.
            }
            State::SendTaskMgtRsp if ok => {
                cmd.tmr_post_handler();
                cmd.set_sent();
                self.release_cmd(cmd, false);
            }
            _ => {
                cmd.set_sent();
                self.release_cmd(cmd, !ok);
            }
        }
    }

    pub(crate) fn on_completion(self: &Arc<Self>, c: Completion<TxDesc>) {
        match c {
            Completion::Recv {
                buf,
                result: Ok(len),
            } => self.on_recv(buf, len),
            Completion::Send(batch) => {
                for done in batch {
                    match done {
                        SendDone::Sent { ctx, result } => {
                            self.sends.fetch_sub(1, Relaxed);
                            if let Err(e) = &result {
                                self.wc_error("send", e);
                            }
                            self.on_send(ctx, result.is_ok());
                        }
                        SendDone::Failed(e) => self.wc_error("empty RDMA WRITE", &e),
                        SendDone::Drained => {
                            if let Some(t) = self.inner.lock().phase.teardown() {
                                t.send_drained = true;
                            }
                            self.wait.notify_all();
                        }
                    }
                }
                self.flush_backlog();
            }
            Completion::Recv {
                buf,
                result: Err(e),
            } => {
                drop(buf);
                self.wc_error("receive", &e);
            }
            Completion::RecvDrained => {
                if let Some(t) = self.inner.lock().phase.teardown() {
                    t.recv_drained = true;
                }
                self.wait.notify_all();
            }
        }
    }

    pub(crate) fn wc_error(self: &Arc<Self>, what: &str, e: &kernel::rdma::verbs::WcError) {
        if e.is_flush() {
            return;
        }
        STATS.wc_errors.inc();
        pr_warn!("conn {}: {} failed: {}\n", self.id, what, e);
        self.terminate("work request failed");
    }
}
