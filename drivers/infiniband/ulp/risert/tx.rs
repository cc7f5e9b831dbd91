// SPDX-License-Identifier: GPL-2.0

//! Transmission: posting responses and RDMA transfers, the backlog of a full send queue, and
//! the pool of send descriptors.

use super::*;

/// How a descriptor is posted.
#[derive(Clone, Copy)]
pub(crate) enum Post {
    /// A send of its buffer.
    Send(SendWr),
    /// Its command's RDMA transfer, then a send of its buffer if given.
    Rw(Option<SendWr>),
}

impl Post {
    pub(crate) fn sends(self) -> bool {
        matches!(self, Self::Send(_) | Self::Rw(Some(_)))
    }

    /// Whether the post asks for an unsignaled send.
    pub(crate) fn unsignaled(self) -> bool {
        matches!(
            self,
            Self::Send(SendWr {
                signaled: false,
                ..
            }) | Self::Rw(Some(SendWr {
                signaled: false,
                ..
            }))
        )
    }

    fn signal(self) -> Self {
        match self {
            Self::Send(s) => Self::Send(SendWr {
                signaled: true,
                ..s
            }),
            Self::Rw(Some(s)) => Self::Rw(Some(SendWr {
                signaled: true,
                ..s
            })),
            how => how,
        }
    }
}

/// Gives the command of a descriptor that could not be posted back to the target, which tries
/// again later (`ENOMEM`: the send queue is full) or fails it.
pub(crate) fn unposted(e: PostError<TxDesc>) -> QueueResult {
    match e.ctx.and_then(|tx| KBox::into_inner(tx).cmd) {
        Some(cmd) => Err(Refused::new(cmd, e.error)),
        // The device took part of the chain and keeps the descriptor, with the command.
        None => Ok(()),
    }
}

impl RConn {
    /// Posts `tx` as `how` says. The RDMA connection is reached under RCU: posting takes no
    /// lock of the connection's.
    pub(crate) fn post(&self, tx: KBox<TxDesc>, how: Post) -> Result<(), PostError<TxDesc>> {
        let how = self.schedule(how);
        // Counted first: its completion may come back before this returns.
        self.sends.fetch_add(1, Relaxed);
        let link = self.link.try_access();
        let posted = match link.as_deref().and_then(|l| l.as_ref()) {
            None => Err(PostError::unposted(ENOTCONN, tx)),
            Some(l) => match how {
                Post::Send(send) => l.qp().post_send(tx, send),
                Post::Rw(send) => l.qp().post_rw(tx, send),
            },
        };
        drop(link);
        if let Err(e) = posted {
            self.sends.fetch_sub(1, Relaxed);
            return Err(e);
        }
        if how.unsignaled() {
            self.unsignaled_run.fetch_add(1, Relaxed);
            self.stats.unsignaled.inc();
        } else {
            self.unsignaled_run.store(0, Relaxed);
        }
        if how.sends() {
            self.stats.pdus_tx.inc();
        }
        Ok(())
    }

    /// The transmit schedule: a send that may go unsignaled is signaled anyway when it is
    /// the `signal_every`-th in a row, so that completions, and the commands they release,
    /// come back at least that often.
    fn schedule(&self, how: Post) -> Post {
        if how.unsignaled() && self.unsignaled_run.load(Relaxed) + 1 >= self.signal_every {
            how.signal()
        } else {
            how
        }
    }

    /// Posts a signaled request that carries nothing if the last send was unsignaled (the
    /// queue pair knows), so that the unsignaled sends complete: for when the connection goes
    /// idle (its completion queue was drained and armed) or is torn down.
    pub(crate) fn signal_posted(&self) {
        match self.with_link(|l| l.qp().signal_posted()) {
            Ok(Ok(true)) => self.stats.signal_posts.inc(),
            Ok(Ok(false)) | Err(_) => {}
            Ok(Err(e)) => pr_warn!("conn {}: cannot signal posted sends: {:?}\n", self.id, e),
        }
    }

    /// Posts `tx` for the target's queue-full handling: if the send queue is full, its command
    /// goes back to the target, which calls again later. Only for the callbacks whose callers
    /// in the target check the error (`queue_data_in`, `queue_status`).
    pub(crate) fn post_or_refuse(&self, tx: KBox<TxDesc>, how: Post) -> QueueResult {
        self.post(tx, how).or_else(|e| {
            if e.error == ENOMEM {
                self.stats.sq_full.inc();
            }
            unposted(e)
        })
    }

    /// Posts `tx`; if the send queue is full, it waits in the connection's backlog, which the
    /// completion work posts, in order, as sends complete. For what the target does not retry:
    /// it takes a failed response (`response_queue`) as a failed connection, and ignores the
    /// error of most of its calls of `get_dataout`.
    pub(crate) fn post_or_queue(&self, tx: KBox<TxDesc>, how: Post) -> QueueResult {
        let tx = match self.post(tx, how) {
            Err(PostError {
                error,
                ctx: Some(tx),
            }) if error == ENOMEM => tx,
            r => return r.or_else(unposted),
        };
        self.stats.sq_full.inc();
        let mut inner = self.inner.lock();
        if inner.backlog.reserve(1, GFP_KERNEL).is_err() {
            drop(inner);
            return unposted(PostError::unposted(ENOMEM, tx));
        }
        // Cannot fail: room was reserved.
        let _ = inner.backlog.push_within_capacity((tx, how));
        self.backlogged.fetch_add(1, Relaxed);
        self.stats.backlogged.inc();
        drop(inner);
        // The requests that filled the queue may all have completed meanwhile.
        self.flush_backlog();
        Ok(())
    }

    /// Posts the backlog, in order, until the send queue is full again.
    pub(crate) fn flush_backlog(&self) {
        if self.backlogged.load(Relaxed) == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        while let Ok((tx, how)) = inner.backlog.remove(0) {
            match self.post(tx, how) {
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
    pub(crate) fn send_rsp(
        &self,
        c: &Conn,
        mut cmd: Cmd,
        data_in: bool,
        refuse: bool,
    ) -> QueueResult {
        let mut hdr = Bhs::default();
        let sense = cmd.build_rsp(c, &mut hdr);
        let (mut tx, n) = match self.new_tx(&hdr, sense) {
            Ok(tx) => tx,
            Err(e) => return Err(Refused::new(cmd, e)),
        };
        // Unsignaled while other commands are in flight: a later response will be posted
        // behind this one, and its completion hands this one back.
        let pending = self.response_posted();
        let send = SendWr {
            len: n,
            invalidate: self.invalidate(&cmd),
            signaled: pending == 0,
        };
        let how = if data_in {
            if let Err(e) = self.rw_qp().and_then(|qp| cmd.rdma_setup(&qp)) {
                return Err(Refused::new(cmd, e));
            }
            self.stats.data_in.inc();
            Post::Rw(Some(send))
        } else {
            Post::Send(send)
        };
        tx.cmd = Some(cmd);
        if refuse {
            self.post_or_refuse(tx, how)
        } else {
            self.post_or_queue(tx, how)
        }
    }

    /// Counts a SCSI response off `scsi_pending`; returns how many commands are still in
    /// flight.
    fn response_posted(&self) -> u32 {
        let mut p = self.scsi_pending.load(Relaxed);
        loop {
            if p == 0 {
                return 0;
            }
            match self.scsi_pending.cmpxchg(p, p - 1, Relaxed) {
                Ok(_) => return p - 1,
                Err(now) => p = now,
            }
        }
    }

    pub(crate) fn new_rx(&self) -> Result<KBox<DmaBuf<FromDevice>>> {
        rx_buf(&self.device()?)
    }

    /// A send of the iSER control header, the iSCSI header `hdr` and `data`: a pooled
    /// descriptor when the message fits one and the pool has one, else a new one.
    pub(crate) fn new_tx(&self, hdr: &Bhs, data: &[u8]) -> Result<(KBox<TxDesc>, usize)> {
        let len = HEADERS_LEN + data.len();
        let pooled = if len <= POOLED_TX_SIZE {
            self.pooled_tx()
        } else {
            None
        };
        let mut tx = match pooled {
            Some(tx) => tx,
            None => {
                self.stats.tx_allocs.inc();
                let buf = DmaBuf::<ToDevice>::new(&self.device()?, len)?;
                KBox::new(
                    TxDesc {
                        buf: Some(buf),
                        cmd: None,
                        read: false,
                    },
                    GFP_KERNEL,
                )?
            }
        };
        let Some(buf) = tx.buf.as_mut() else {
            return Err(EINVAL);
        };
        let b = buf.as_mut_slice();
        write_control_hdr(b);
        b[ISER_HDR_LEN..HEADERS_LEN].copy_from_slice(hdr.as_bytes());
        b[HEADERS_LEN..len].copy_from_slice(data);
        Ok((tx, len))
    }

    /// A descriptor from the pool, if it has one.
    pub(crate) fn pooled_tx(&self) -> Option<KBox<TxDesc>> {
        (*self.tx_pool.lock()).as_mut().and_then(|p| p.pop())
    }

    /// Fills the descriptor pool (at login, with the receive buffers).
    pub(crate) fn fill_tx_pool(&self) -> Result {
        let dev = self.device()?;
        let mut fresh = KVec::with_capacity(TX_DESCS as usize, GFP_KERNEL)?;
        for _ in 0..TX_DESCS {
            let tx = TxDesc {
                buf: Some(DmaBuf::new(&dev, POOLED_TX_SIZE)?),
                cmd: None,
                read: false,
            };
            fresh.push(KBox::new(tx, GFP_KERNEL)?, GFP_KERNEL)?;
        }
        if let Some(pool) = (*self.tx_pool.lock()).as_mut() {
            // Room for all of them is kept, so that `recycle` never allocates.
            core::mem::swap(pool, &mut fresh);
        }
        Ok(())
    }

    /// Gives a completed descriptor (whose command was taken out) back to the pool, if it is
    /// a pooled one and the pool has room; else frees it.
    pub(crate) fn recycle(&self, mut tx: KBox<TxDesc>) {
        if tx.buf.as_ref().map(|b| b.len()) != Some(POOLED_TX_SIZE) {
            return;
        }
        tx.read = false;
        let mut pool = self.tx_pool.lock();
        let left = match (*pool).as_mut() {
            Some(p) => p.push_within_capacity(tx).err().map(|e| e.0),
            None => Some(tx),
        };
        drop(pool);
        // Not pooled (the pool is full or gone): freed outside the lock.
        drop(left);
    }

    /// Posts a control response (`tx` for `cmd`), queued if the send queue is full.
    pub(crate) fn send_ctrl(&self, (mut tx, len): (KBox<TxDesc>, usize), cmd: Cmd) -> QueueResult {
        tx.cmd = Some(cmd);
        self.post_or_queue(tx, Post::Send(SendWr::plain(len)))
    }

    /// The initiator's key that a SCSI response invalidates (`isert_cmd->inv_rkey`): the read
    /// buffer's, else the write buffer's; none if the initiator did not offer send with
    /// invalidate or the command has no buffer.
    pub(crate) fn invalidate(&self, cmd: &Cmd) -> Option<u32> {
        if !self.send_w_inv {
            return None;
        }
        let r = cmd.remote();
        let key = [r.read_stag, r.write_stag].into_iter().find(|&k| k != 0);
        if key.is_some() {
            self.stats.send_inv.inc();
        }
        key
    }
}
