// SPDX-License-Identifier: GPL-2.0

//! RDMA read/write contexts (`struct rdma_rw_ctx`): moving a local scatter list to or from a
//! peer's registered memory with RDMA WRITE or READ work requests, registering memory regions
//! where the device needs them.
//!
//! A context is built against a queue pair's [`RwQp`] and posted with
//! [`super::verbs::Qp::post_rw`]. The queue pair is not destroyed while contexts built on it
//! exist: a [`super::cm::Connection`] dropped with live contexts leaks its queue pair instead.
//!
//! C header: [`include/rdma/rw.h`](srctree/include/rdma/rw.h)

use super::sq::SendQueue;
use crate::{
    bindings,
    dma::DataDirection,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Full, //
        },
        new_spinlock_irq,
        Arc,
        SpinLockIrq,
        SpinLockIrqGuard, //
    },
    types::Opaque,
};
use core::{
    cell::Cell,
    ptr, //
};

/// The queue pair that read/write contexts are built on, with the count of live contexts and
/// the record of its send queue.
///
/// # Invariants
///
/// While `alive` is 1, `qp` is a valid queue pair on port `port`; it is destroyed only after
/// `alive` was cleared and `live` was seen at zero (see `RwQp::retire`).
///
/// `sq` is the record of the queue pair's send queue (`SendQueue`): every request posted to
/// it is recorded there, under the lock, in posting order, by the same lock holder that posts
/// it. So a post that takes its slots first never finds the send queue full (a chain is never
/// posted in part for lack of room), and a context leaves the record only once its request or
/// a later one completed.
#[pin_data]
pub struct RwQp {
    qp: *mut bindings::ib_qp,
    port: u32,
    /// 1 while contexts may be built, then 0.
    alive: Atomic<i32>,
    live: Atomic<usize>,
    /// Taken with interrupts off: a completion queue may be polled from its interrupt.
    #[pin]
    sq: SpinLockIrq<SendQueue>,
}

// SAFETY: The pointer is only used under the protocol of the type invariant, which uses atomics
// and the lock.
unsafe impl Send for RwQp {}

// SAFETY: As for `Send`.
unsafe impl Sync for RwQp {}

impl RwQp {
    /// # Safety
    ///
    /// `qp` is a valid queue pair on port `port` until [`RwQp::retire`] returns `true`, with a
    /// send queue of `send_wr` requests, none posted yet.
    pub(crate) unsafe fn new(
        qp: *mut bindings::ib_qp,
        port: u32,
        send_wr: u32,
    ) -> Result<Arc<Self>> {
        let sq = SendQueue::new(send_wr)?;
        // INVARIANT: By the safety requirements; nothing is posted, and the record says so.
        Arc::pin_init(
            pin_init!(Self {
                qp,
                port,
                alive: Atomic::new(1),
                live: Atomic::new(0),
                sq <- new_spinlock_irq!(sq, "RwQp::sq"),
            }),
            GFP_KERNEL,
        )
    }

    /// The record of the send queue, locked.
    pub(crate) fn sq(&self) -> SpinLockIrqGuard<'_, SendQueue> {
        self.sq.lock()
    }

    /// Stops new contexts; returns whether the queue pair may be destroyed (no context is
    /// live). A context created concurrently either sees the queue pair retired or is counted
    /// here, because both sides use fully ordered atomics.
    pub(crate) fn retire(&self) -> bool {
        self.alive.xchg(0, Full);
        self.live.fetch_add(0, Full) == 0
    }

    fn enter(&self) -> Result {
        self.live.fetch_add(1, Full);
        if self.alive.fetch_add(0, Full) == 0 {
            self.live.fetch_sub(1, Full);
            return Err(ENOTCONN);
        }
        Ok(())
    }

    pub(crate) fn qp(&self) -> *mut bindings::ib_qp {
        self.qp
    }
}

/// An RDMA read/write context (`rdma_rw_ctx_init()`), destroyed (`rdma_rw_ctx_destroy()`) on
/// drop.
///
/// # Examples
///
/// A send context that carries an RDMA WRITE of a SCSI READ's data to the peer, and the
/// response that follows it. [`Qp::post_rw`](super::verbs::Qp::post_rw) posts both as one
/// chain, signaled once:
///
/// ```
/// use kernel::rdma::{
///     rw::RwCtx,
///     verbs::{DmaBuf, Qp, SendCtx, SendWr, ToDevice},
/// };
///
/// struct DataIn {
///     /// Built on the connection's queue pair (`Connection::rw_qp`).
///     write: Pin<KBox<RwCtx>>,
///     rsp: DmaBuf<ToDevice>,
/// }
///
/// impl SendCtx for DataIn {
///     fn dma_buf(&self) -> Option<&DmaBuf<ToDevice>> {
///         Some(&self.rsp)
///     }
///
///     fn rw(&mut self) -> Option<Pin<&mut RwCtx>> {
///         Some(self.write.as_mut())
///     }
/// }
///
/// /// Posts the data, then `rsp_len` bytes of the response; the context comes back with the
/// /// completion of the response (a failed post drops it here).
/// fn post(qp: &Qp<DataIn>, ctx: KBox<DataIn>, rsp_len: usize) -> Result {
///     qp.post_rw(ctx, Some(SendWr::plain(rsp_len)))?;
///     Ok(())
/// }
/// ```
///
/// # Invariants
///
/// `ctx` was initialized on `qp` (counted in its `live`) for `nents` entries of `sg` in
/// direction `dir`; `sg` stays valid until drop. The last request of `ctx` links to nothing
/// while `chained` is false, and to `send`, whose scatter list is `sge`, once it is true.
#[pin_data(PinnedDrop)]
pub struct RwCtx {
    #[pin]
    ctx: Opaque<bindings::rdma_rw_ctx>,
    qp: Arc<RwQp>,
    sg: *mut bindings::scatterlist,
    nents: u32,
    dir: DataDirection,
    /// The send [`RwCtx::wrs_then_send`] chains behind the context's requests, and its
    /// scatter entry: kept here, so the context's last request never links to memory that
    /// is gone.
    #[pin]
    send: Opaque<bindings::ib_send_wr>,
    #[pin]
    sge: Opaque<bindings::ib_sge>,
    /// Whether `send` is linked behind the last request: `rdma_rw_ctx_wrs()` cannot unlink
    /// it, so such a context is only posted with a send again.
    chained: Cell<bool>,
}

// SAFETY: The context may be destroyed from any thread.
unsafe impl Send for RwCtx {}

// No `Sync`: building a post ([`RwCtx::wrs`]) rewrites the C context's work requests, so it
// takes `Pin<&mut RwCtx>`; `&RwCtx` only reads fields set at creation.

impl RwCtx {
    /// Builds, in place, the work requests that move `sg` (`nents` entries, from byte
    /// `offset`) to (`DataDirection::ToDevice`, RDMA WRITE) or from (`FromDevice`, RDMA READ)
    /// the peer's memory at `remote_addr` with key `rkey`. `ENOTCONN` once the queue pair is
    /// retired.
    ///
    /// # Safety
    ///
    /// `sg` is a valid scatter list of at least `nents` entries that stays valid, and is not
    /// changed, until the context is dropped.
    pub unsafe fn init(
        qp: &Arc<RwQp>,
        sg: *mut bindings::scatterlist,
        nents: u32,
        offset: u32,
        remote_addr: u64,
        rkey: u32,
        dir: DataDirection,
    ) -> impl PinInit<Self, Error> + '_ {
        let init = try_pin_init!(Self {
            ctx <- Opaque::try_ffi_init(|ctx: *mut bindings::rdma_rw_ctx| {
                // SAFETY: `qp` is alive (the closure below counted us in `live`); `sg` is
                // valid by the safety requirements; `ctx` is valid for writes.
                let ret = unsafe {
                    bindings::rdma_rw_ctx_init(
                        ctx, qp.qp, qp.port, sg, nents, offset, remote_addr, rkey, dir.into(),
                    )
                };
                if ret < 0 {
                    Err(Error::from_errno(ret))
                } else {
                    Ok(())
                }
            }),
            qp: qp.clone(),
            sg,
            nents,
            dir,
            send: Opaque::uninit(),
            sge: Opaque::uninit(),
            chained: Cell::new(false),
        }? Error);
        let counted = move |slot: *mut Self| {
            qp.enter()?;
            // SAFETY: `slot` is valid for writes and pinned, by the contract of
            // `pin_init_from_closure`.
            let r = unsafe { pin_init::raw_try_init(slot, init) };
            if r.is_err() {
                qp.live.fetch_sub(1, Full);
            }
            // INVARIANT: Initialized on `qp` and counted; `sg` by the safety requirements.
            r
        };
        // SAFETY: The closure initializes `slot` through `init` or fails with it untouched (as
        // `init` leaves it), and it undoes its count in `live` on failure.
        unsafe { pin_init::pin_init_from_closure(counted) }
    }

    /// Returns the context's first work request (`rdma_rw_ctx_wrs()`), with the last one
    /// signaled with `wr_id`. A context that was posted with a send
    /// ([`RwCtx::wrs_then_send`]) still links to it and is refused (`EINVAL`).
    pub(crate) fn wrs(self: Pin<&mut Self>, wr_id: u64) -> Result<*mut bindings::ib_send_wr> {
        if self.chained.get() {
            return Err(EINVAL);
        }
        Ok(self.link(wr_id, ptr::null_mut()))
    }

    /// Returns the context's first work request, with `send` (whose scatter list becomes
    /// `sge`) chained behind the last one. Both are stored in the context, which must stay
    /// allocated until the chain completes (a posted context is owned by its queue pair).
    pub(crate) fn wrs_then_send(
        self: Pin<&mut Self>,
        mut send: bindings::ib_send_wr,
        sge: bindings::ib_sge,
    ) -> *mut bindings::ib_send_wr {
        let sge_ptr = self.sge.get();
        // SAFETY: `sge_ptr` points into the context, which we hold exclusively; nothing reads
        // the entry but a post of this context.
        unsafe { sge_ptr.write(sge) };
        send.sg_list = sge_ptr;
        send.num_sge = 1;
        let send_ptr = self.send.get();
        // SAFETY: As above, for the send request.
        unsafe { send_ptr.write(send) };
        // INVARIANT: The last request links to `send` from here on.
        self.chained.set(true);
        self.link(0, send_ptr)
    }

    /// Links the context's requests (`rdma_rw_ctx_wrs()`) in front of `chain`, or signals the
    /// last one with `wr_id` when `chain` is null.
    fn link(
        self: Pin<&mut Self>,
        wr_id: u64,
        chain: *mut bindings::ib_send_wr,
    ) -> *mut bindings::ib_send_wr {
        // SAFETY: By the type invariant the context is initialized on `qp`, which is alive.
        // The core only stores the `cqe` pointer in the last request's `wr_cqe`, which is the
        // union with `wr_id`; it is never dereferenced because the completion queue is polled
        // by its owner.
        unsafe {
            bindings::rdma_rw_ctx_wrs(
                self.ctx.get(),
                self.qp.qp,
                self.qp.port,
                wr_id as usize as *mut bindings::ib_cqe,
                chain,
            )
        }
    }

    /// The queue pair the context was built on.
    pub(crate) fn rw_qp(&self) -> &RwQp {
        &self.qp
    }
}

#[pinned_drop]
impl PinnedDrop for RwCtx {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the context was initialized on `qp`, which is alive
        // while we are counted, with these arguments; none of its work requests is posted any
        // more (posted contexts are owned by their queue pair until they complete).
        unsafe {
            bindings::rdma_rw_ctx_destroy(
                self.ctx.get(),
                self.qp.qp,
                self.qp.port,
                self.sg,
                self.nents,
                self.dir.into(),
            )
        };
        self.qp.live.fetch_sub(1, Full);
    }
}
