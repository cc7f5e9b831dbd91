// SPDX-License-Identifier: GPL-2.0

//! RDMA verbs: devices, protection domains, completion queues polled by their owner, DMA-mapped
//! buffers, and posting of send and receive work requests.
//!
//! Buffers change hands when they are posted: [`Qp::post_recv`] and [`Qp::post_send`] take a
//! boxed buffer (or send context) and keep it (a receive buffer as the `wr_id` of its work
//! request, a send context in its queue pair's record of posted sends) until [`Cq::poll`] hands
//! it back in a [`Completion`]. The CPU therefore never touches memory the
//! device may be writing, and a buffer cannot be freed while it is posted. A queue pair destroyed
//! with work requests still posted leaks their buffers instead of freeing memory the device may
//! use; owners drain a queue pair ([`Qp::start_drain`]) before they destroy it.
//!
//! Queue pairs are created by the connection manager ([`super::cm::ConnectRequest::accept`])
//! on a [`Cq`], and the type of their send contexts is tied to it, so every completion a [`Cq`]
//! returns comes from a work request posted through this module.
//!
//! C header: [`include/rdma/ib_verbs.h`](srctree/include/rdma/ib_verbs.h)

use crate::{
    bindings,
    dma::DataDirection,
    error::{
        from_err_ptr,
        to_result, //
    },
    ffi::c_void,
    fmt,
    prelude::*,
    rdma::{
        rw::{
            RwCtx,
            RwQp, //
        },
        sq::Posted,
    },
    sync::{
        Arc,
        ArcBorrow, //
    },
    types::Opaque,
};
use core::{
    marker::PhantomData,
    mem::{
        ManuallyDrop,
        MaybeUninit, //
    },
    ptr::{
        self,
        NonNull, //
    },
};

/// A registered RDMA device (`struct ib_device`), held with its registration reference
/// (`ib_device_try_get()`/`ib_device_put()`): the device stays registered, and its DMA mappings
/// valid, while a [`DeviceRef`] exists.
///
/// # Invariants
///
/// `ptr` is a device on which this object holds one registration reference.
pub struct DeviceRef {
    ptr: NonNull<bindings::ib_device>,
}

// SAFETY: The reference may be dropped from any thread; `ib_device_put()` has no thread
// affinity.
unsafe impl Send for DeviceRef {}

// SAFETY: Only thread-safe accessors take `&self`.
unsafe impl Sync for DeviceRef {}

impl DeviceRef {
    /// Takes a registration reference on `dev`; fails when it is being unregistered.
    ///
    /// # Safety
    ///
    /// `dev` points to a valid `struct ib_device` for the duration of the call.
    pub(crate) unsafe fn try_get(dev: *mut bindings::ib_device) -> Option<Self> {
        // SAFETY: By the safety requirements `dev` is valid.
        if unsafe { bindings::ib_device_try_get(dev) } {
            // INVARIANT: The reference was just taken.
            NonNull::new(dev).map(|ptr| Self { ptr })
        } else {
            None
        }
    }

    fn as_ptr(&self) -> *mut bindings::ib_device {
        self.ptr.as_ptr()
    }

    /// The device's name (`ib_device.name`, for example `rxe0`).
    pub fn name(&self) -> &CStr {
        // SAFETY: By the type invariant the device is registered; its name is NUL-terminated and
        // only changes under `rdma_dev_rename`, which keeps the array NUL-terminated.
        unsafe { CStr::from_char_ptr((*self.as_ptr()).name.as_ptr()) }
    }

    /// The most RDMA reads the device lets one queue pair have outstanding as initiator
    /// (`attrs.max_qp_init_rd_atom`).
    pub fn max_qp_init_rd_atom(&self) -> u32 {
        // SAFETY: By the type invariant the device is valid; its attributes are set before it
        // is registered and then left unchanged.
        unsafe { (*self.as_ptr()).attrs.max_qp_init_rd_atom }
    }

    /// The number of completion vectors (`num_comp_vectors`): a completion queue's `vector`
    /// is below it.
    pub fn num_comp_vectors(&self) -> u32 {
        // SAFETY: As in `max_qp_init_rd_atom`; the count is set before registration.
        let v = unsafe { (*self.as_ptr()).num_comp_vectors };
        v.try_into().unwrap_or(0)
    }

    /// Whether the device can invalidate a memory key on a received send
    /// (`IB_DEVICE_MEM_MGT_EXTENSIONS`), as send with invalidate needs.
    pub fn has_mem_mgt_extensions(&self) -> bool {
        // SAFETY: As in `max_qp_init_rd_atom`.
        let flags = unsafe { (*self.as_ptr()).attrs.device_cap_flags };
        flags & bindings::ib_device_cap_flags_IB_DEVICE_MEM_MGT_EXTENSIONS as u64 != 0
    }

    /// The most work requests one queue of a queue pair may hold (`attrs.max_qp_wr`).
    pub fn max_qp_wr(&self) -> u32 {
        // SAFETY: As in `max_qp_init_rd_atom`.
        unsafe { (*self.as_ptr()).attrs.max_qp_wr }
    }
}

impl Clone for DeviceRef {
    fn clone(&self) -> Self {
        // SAFETY: By the type invariant the device is valid, and the reference we hold keeps
        // the count above zero, so this cannot fail.
        let ok = unsafe { bindings::ib_device_try_get(self.as_ptr()) };
        debug_assert!(ok);
        // INVARIANT: A reference was just taken.
        Self { ptr: self.ptr }
    }
}

impl Drop for DeviceRef {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we hold a reference, which is given back once.
        unsafe { bindings::ib_device_put(self.as_ptr()) };
    }
}

/// A protection domain (`struct ib_pd`), allocated with `ib_alloc_pd()`.
///
/// # Invariants
///
/// `pd` was allocated on `dev` and is deallocated by `drop`.
pub struct Pd {
    pd: NonNull<bindings::ib_pd>,
    dev: DeviceRef,
}

// SAFETY: A protection domain may be used and deallocated from any thread.
unsafe impl Send for Pd {}

// SAFETY: `&Pd` only reads fields set at allocation.
unsafe impl Sync for Pd {}

impl Pd {
    /// Allocates a protection domain on `dev`; `name` is recorded by the resource tracker.
    pub fn alloc(dev: &DeviceRef, name: &'static CStr) -> Result<Self> {
        // SAFETY: `dev` is a registered device; `name` is `'static` as the tracker keeps it.
        let pd =
            from_err_ptr(unsafe { bindings::__ib_alloc_pd(dev.as_ptr(), 0, name.as_char_ptr()) })?;
        // INVARIANT: `pd` was just allocated on `dev`.
        Ok(Self {
            pd: NonNull::new(pd).ok_or(ENOMEM)?,
            dev: dev.clone(),
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::ib_pd {
        self.pd.as_ptr()
    }

    /// The device the domain belongs to.
    pub fn device(&self) -> &DeviceRef {
        &self.dev
    }

    /// The key that gives work requests access to any DMA-mapped memory of the device
    /// (`local_dma_lkey`).
    pub fn local_dma_lkey(&self) -> u32 {
        // SAFETY: By the type invariant `pd` is valid; the key is set at allocation.
        unsafe { (*self.as_ptr()).local_dma_lkey }
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `pd` is ours. `ib_dealloc_pd_user` frees it whatever
        // uses it, so nothing may: the only objects made with a domain are the queue pairs of
        // `ConnectRequest::accept`, which moves the `Pd` into the `Connection`, and the
        // connection destroys its queue pair before it drops the domain (or leaks both, while
        // RDMA read/write contexts are alive).
        unsafe { bindings::ib_dealloc_pd_user(self.as_ptr(), ptr::null_mut()) };
    }
}

mod private {
    pub trait Sealed {}
}

/// What the device does with a [`DmaBuf`]: the direction it is mapped for, fixed by its type.
///
/// Only [`ToDevice`] buffers can be sent ([`SendCtx::dma_buf`]) and only [`FromDevice`]
/// buffers can be posted for receiving ([`Qp::post_recv`]), so a buffer is never used against
/// the direction of its mapping.
pub trait Direction: private::Sealed + Send + Sync + 'static {
    /// The direction of the mapping.
    const DIR: DataDirection;
}

/// The device reads the buffer: the message of a send.
pub enum ToDevice {}

/// The device writes the buffer: a posted receive.
pub enum FromDevice {}

impl private::Sealed for ToDevice {}
impl private::Sealed for FromDevice {}

impl Direction for ToDevice {
    const DIR: DataDirection = DataDirection::ToDevice;
}

impl Direction for FromDevice {
    const DIR: DataDirection = DataDirection::FromDevice;
}

/// A buffer of kernel memory mapped for DMA on a device (`ib_dma_map_single()`) in direction
/// `D`.
///
/// Its contents can be read and written through `&`/`&mut` while the buffer is owned; posting
/// it gives it to the device until its completion.
///
/// # Examples
///
/// A buffer mapped for the device to read cannot be posted for receiving:
///
/// ```ignore,compile_fail
/// use kernel::rdma::verbs::{DmaBuf, Qp, SendCtx, ToDevice};
///
/// fn receive_into<S: SendCtx>(qp: &Qp<S>, buf: KBox<DmaBuf<ToDevice>>) -> Result {
///     qp.post_recv(buf)
/// }
/// ```
///
/// # Invariants
///
/// `mem` is not empty, and `addr` is the mapping of all of `mem` on `dev` in direction
/// `D::DIR`, valid until `drop`.
pub struct DmaBuf<D: Direction> {
    mem: KVec<u8>,
    addr: u64,
    dev: DeviceRef,
    _dir: PhantomData<D>,
}

impl<D: Direction> DmaBuf<D> {
    /// Allocates `len` zeroed bytes and maps them on `dev` for `D`. An empty buffer has no
    /// memory to map and is refused with `EINVAL`.
    pub fn new(dev: &DeviceRef, len: usize) -> Result<Self> {
        if len == 0 {
            return Err(EINVAL);
        }
        let mut mem = KVec::from_elem(0u8, len, GFP_KERNEL)?;
        // SAFETY: `dev` is registered; `mem` holds `len > 0` bytes that stay allocated (and do
        // not move, since the vector is never resized again) until they are unmapped in `drop`.
        let addr = unsafe {
            bindings::ib_dma_map_single(dev.as_ptr(), mem.as_mut_ptr().cast(), len, D::DIR.into())
        };
        // SAFETY: `addr` was just returned by `ib_dma_map_single` on `dev`.
        if unsafe { bindings::ib_dma_mapping_error(dev.as_ptr(), addr) } != 0 {
            return Err(ENOMEM);
        }
        // INVARIANT: `mem` is not empty and `addr` maps it on `dev` in direction `D::DIR`.
        Ok(Self {
            mem,
            addr,
            dev: dev.clone(),
            _dir: PhantomData,
        })
    }

    /// The buffer's length.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether the buffer is empty (never: see the type invariant).
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// The buffer's contents.
    pub fn as_slice(&self) -> &[u8] {
        &self.mem
    }

    /// The buffer's contents, for writing.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.mem
    }

    fn sync_for_device(&self, len: usize) {
        // SAFETY: By the type invariant `addr` is a live mapping of at least `len` bytes.
        unsafe {
            bindings::ib_dma_sync_single_for_device(
                self.dev.as_ptr(),
                self.addr,
                len,
                D::DIR.into(),
            )
        };
    }

    fn sync_for_cpu(&self, len: usize) {
        // SAFETY: As in `sync_for_device`.
        unsafe {
            bindings::ib_dma_sync_single_for_cpu(self.dev.as_ptr(), self.addr, len, D::DIR.into())
        };
    }

    fn sge(&self, len: usize, lkey: u32) -> bindings::ib_sge {
        bindings::ib_sge {
            addr: self.addr,
            length: len.min(self.mem.len()) as u32,
            lkey,
        }
    }
}

impl<D: Direction> Drop for DmaBuf<D> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `addr` maps `mem` on `dev`, which is still registered
        // because we hold a reference. The buffer is not posted: posted buffers are owned by
        // their queue pair.
        unsafe {
            bindings::ib_dma_unmap_single(
                self.dev.as_ptr(),
                self.addr,
                self.mem.len(),
                D::DIR.into(),
            )
        };
    }
}

/// The context of a send work request: what [`Qp::post_send`] sends (and [`Qp::post_rw`]
/// moves) and [`Cq::poll`] gives back with the request's completion.
pub trait SendCtx: Send + 'static {
    /// The buffer whose first bytes are sent, if the context sends a message.
    fn dma_buf(&self) -> Option<&DmaBuf<ToDevice>>;

    /// The RDMA read/write context [`Qp::post_rw`] posts. Posting rewrites the context's work
    /// requests, so it takes the context exclusively.
    fn rw(&mut self) -> Option<Pin<&mut RwCtx>> {
        None
    }
}

/// Receives a [`Cq`]'s notifications.
pub trait CqHandler: Send + Sync + 'static {
    /// The send contexts of the queue pairs that complete on the queue.
    type SendCtx: SendCtx;

    /// The queue has a new completion after it was armed ([`Cq::arm`]). Called from any
    /// context, including hard interrupts: must not sleep.
    fn notify(&self);
}

/// Why a work request failed (`enum ib_wc_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WcError {
    status: u32,
    vendor_err: u32,
}

impl WcError {
    /// Whether the request was flushed because its queue pair entered the error state
    /// (`IB_WC_WR_FLUSH_ERR`), as happens to every request still queued at disconnection.
    pub fn is_flush(&self) -> bool {
        self.status == bindings::ib_wc_status_IB_WC_WR_FLUSH_ERR
    }

    /// The status code.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The device-specific error code.
    pub fn vendor_err(&self) -> u32 {
        self.vendor_err
    }
}

impl fmt::Display for WcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: `ib_wc_status_msg` returns a static string for any value.
        let msg = unsafe { CStr::from_char_ptr(bindings::ib_wc_status_msg(self.status)) };
        write!(f, "{} ({})", msg.to_str().unwrap_or("?"), self.status)
    }
}

/// A work completion, as taken from a [`Cq`].
pub enum Completion<S: SendCtx> {
    /// A receive completed; on success with the number of bytes received.
    Recv {
        /// The buffer that was posted.
        buf: KBox<DmaBuf<FromDevice>>,
        /// The received length, or why the receive failed.
        result: Result<usize, WcError>,
    },
    /// A send request completed, and with it the unsignaled ones posted before it: iterate
    /// the batch to take their contexts back, oldest first.
    Send(SendBatch<S>),
    /// The receive queue's drain marker completed: every receive posted before it has
    /// completed.
    RecvDrained,
}

/// The send requests that one work completion reports: the request it is for and the
/// unsignaled ones posted before it (at most the queue pair's send queue). The contexts stay
/// in the queue pair's record until the iteration takes them, so that a completion takes one
/// slot of a poll whatever it reports, and they are handed out after the poller's locks are
/// dropped.
///
/// Dropping a batch before the end drops the contexts it did not hand out.
pub struct SendBatch<S: SendCtx> {
    qp: Arc<RwQp>,
    /// The sequence number of the request the work completion is for.
    through: u64,
    result: Result<(), WcError>,
    _ctx: PhantomData<S>,
}

/// A request posted by [`Qp::probe`]: its sequence number in the queue pair's send record.
pub struct Probe(u64);

/// One send request of a [`SendBatch`].
pub enum SendDone<S> {
    /// A send (or RDMA transfer) completed.
    Sent {
        /// The context that was posted.
        ctx: KBox<S>,
        /// Whether it was delivered.
        result: Result<(), WcError>,
    },
    /// The send queue's drain marker completed: every send posted before it has completed.
    Drained,
    /// A request that carries nothing ([`Qp::signal_posted`], [`Qp::probe`]) failed: the
    /// connection is broken (or, with a flush status, being torn down).
    Failed(WcError),
}

impl<S: SendCtx> Iterator for SendBatch<S> {
    type Item = SendDone<S>;

    fn next(&mut self) -> Option<SendDone<S>> {
        loop {
            let e = self.qp.sq().pop_through(self.through)?;
            let result = match e.what {
                _ if e.seq == self.through => self.result,
                // Its chain was posted in part; the part that was posted is done.
                Posted::Partial(_) => Err(WcError {
                    status: bindings::ib_wc_status_IB_WC_GENERAL_ERR,
                    vendor_err: 0,
                }),
                // Unsignaled and done: a failure would have completed it on its own before.
                _ => Ok(()),
            };
            match e.what {
                Posted::Ctx(raw) | Posted::Partial(raw) => {
                    // SAFETY: By the type invariant of `Qp`, every entry of the record of a
                    // queue pair whose completions are `S`'s was recorded by a post that leaked
                    // a `KBox<S>` into it; the entry left the record once, so the box is taken
                    // back once, and the device is done with it (its requests or later ones
                    // completed).
                    let ctx = unsafe { KBox::from_raw(raw.cast::<S>()) };
                    return Some(SendDone::Sent { ctx, result });
                }
                Posted::Drain => return Some(SendDone::Drained),
                Posted::Signal => {
                    if let Err(e) = result {
                        return Some(SendDone::Failed(e));
                    }
                }
            }
        }
    }
}

impl<S: SendCtx> Drop for SendBatch<S> {
    fn drop(&mut self) {
        for done in self.by_ref() {
            drop(done);
        }
    }
}

/// Tags in the low bits of a `wr_id`. A receive's `wr_id` is its buffer's address (at least
/// 8-byte aligned) and the receive tag; a send's is its sequence number in the queue pair's
/// record ([`super::sq::SendQueue`]) shifted up, and the send tag.
const TAG_BITS: u32 = 3;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const TAG_RECV: u64 = 0;
const TAG_SEND: u64 = 1;
/// `wr_id` of the receive queue's drain marker (no buffer's address is this small).
const WR_RECV_DRAIN: u64 = 8 | TAG_RECV;

/// A completion queue (`struct ib_cq`) created with `ib_create_cq()` and polled by its owner,
/// with the notification handler `H`.
///
/// # Invariants
///
/// `cq` was created on `dev` with `Cq::completion` as its handler and `Arc::as_ptr(&handler)`
/// as its context. The only queue pairs attached to it are created by
/// [`super::cm::ConnectRequest::accept`], which posts only through [`Qp`] with send contexts of
/// type `H::SendCtx`.
///
/// `handler` and `dev` are dropped only after the queue was destroyed: a queue that could not
/// be destroyed keeps them for ever, since it may still call the handler.
pub struct Cq<H: CqHandler> {
    cq: NonNull<bindings::ib_cq>,
    handler: ManuallyDrop<Arc<H>>,
    dev: ManuallyDrop<DeviceRef>,
}

// SAFETY: `ib_poll_cq()` and `ib_req_notify_cq()` may be called from any thread; the handler is
// `Send + Sync`.
unsafe impl<H: CqHandler> Send for Cq<H> {}

// SAFETY: As for `Send`; the C functions do their own locking.
unsafe impl<H: CqHandler> Sync for Cq<H> {}

impl<H: CqHandler> Cq<H> {
    /// Creates a completion queue of at least `entries` entries on `dev`, interrupting on
    /// completion vector `vector`. It starts unarmed: call [`Cq::arm`] to get notifications.
    pub fn new(
        dev: &DeviceRef,
        entries: u32,
        vector: u32,
        handler: Arc<H>,
        name: &'static CStr,
    ) -> Result<Self> {
        let attr = bindings::ib_cq_init_attr {
            cqe: entries,
            comp_vector: vector,
            flags: 0,
        };
        // SAFETY: `dev` is registered; `attr` is valid for the call; the context stays valid
        // while the queue exists because the queue holds `handler`; `name` is `'static`.
        let cq = from_err_ptr(unsafe {
            bindings::__ib_create_cq(
                dev.as_ptr(),
                Some(Self::completion),
                None,
                Arc::as_ptr(&handler).cast_mut().cast::<c_void>(),
                &attr,
                name.as_char_ptr(),
            )
        })?;
        // INVARIANT: Created with our handler and context; no queue pair is attached yet.
        Ok(Self {
            cq: NonNull::new(cq).ok_or(ENOMEM)?,
            handler: ManuallyDrop::new(handler),
            dev: ManuallyDrop::new(dev.clone()),
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::ib_cq {
        self.cq.as_ptr()
    }

    /// The device the queue belongs to.
    pub fn device(&self) -> &DeviceRef {
        &self.dev
    }

    /// The notification handler.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// Arms the notification for the next completion (`ib_req_notify_cq()` with
    /// `IB_CQ_NEXT_COMP | IB_CQ_REPORT_MISSED_EVENTS`). Returns `true` when completions may
    /// already be queued that will not raise a notification: poll again.
    pub fn arm(&self) -> bool {
        // SAFETY: By the type invariant `cq` is valid.
        let ret = unsafe {
            bindings::ib_req_notify_cq(
                self.as_ptr(),
                bindings::ib_cq_notify_flags_IB_CQ_NEXT_COMP
                    | bindings::ib_cq_notify_flags_IB_CQ_REPORT_MISSED_EVENTS,
            )
        };
        // A failure to arm is reported as "poll again", which never loses a completion.
        ret != 0
    }

    /// Takes up to `max` work completions, oldest first, and passes each to `f`. Returns how
    /// many were taken.
    pub fn poll(&self, max: usize, mut f: impl FnMut(Completion<H::SendCtx>)) -> usize {
        const BATCH: usize = 8;
        let mut wcs = [const { MaybeUninit::<bindings::ib_wc>::uninit() }; BATCH];
        let mut done = 0;
        while done < max {
            let want = (max - done).min(BATCH);
            // SAFETY: By the type invariant `cq` is valid; `wcs` has room for `want` entries.
            let n = unsafe {
                bindings::ib_poll_cq(self.as_ptr(), want as i32, wcs.as_mut_ptr().cast())
            };
            let n = usize::try_from(n).unwrap_or(0).min(want);
            for wc in &wcs[..n] {
                // SAFETY: `ib_poll_cq` initialized the first `n` entries.
                Self::decode(unsafe { wc.assume_init_ref() }, &mut f);
            }
            done += n;
            if n < want {
                break;
            }
        }
        done
    }

    fn decode(wc: &bindings::ib_wc, f: &mut impl FnMut(Completion<H::SendCtx>)) {
        // SAFETY: Every work request on our queue pairs is posted with a `wr_id`.
        let wr_id = unsafe { wc.__bindgen_anon_1.wr_id };
        let result = if wc.status == bindings::ib_wc_status_IB_WC_SUCCESS {
            Ok(())
        } else {
            Err(WcError {
                status: wc.status,
                vendor_err: wc.vendor_err,
            })
        };
        match wr_id {
            // A request inside an RDMA read/write chain that failed or was flushed: the chain's
            // last request completes after it and stands for the chain.
            0 => {}
            WR_RECV_DRAIN => f(Completion::RecvDrained),
            id if id & TAG_MASK == TAG_SEND => {
                let qp = wc.qp;
                // SAFETY: The request came from a queue pair of this queue (type invariant),
                // which is valid while a completion of it is polled; its `qp_context` is its
                // `RwQp`, which lives in an `Arc` (type invariant of `Qp`).
                let rw = unsafe { ArcBorrow::from_raw((*qp).qp_context.cast::<RwQp>()) };
                f(Completion::Send(SendBatch {
                    qp: rw.into(),
                    through: id >> TAG_BITS,
                    result,
                    _ctx: PhantomData,
                }));
            }
            id => {
                // SAFETY: The `wr_id` of a receive came from `Qp::post_recv` on a queue pair of
                // this queue (type invariant), which leaked a `KBox<DmaBuf<FromDevice>>` into
                // it; the request completes once, so the box is taken back once.
                let buf =
                    unsafe { KBox::from_raw((id & !TAG_MASK) as usize as *mut DmaBuf<FromDevice>) };
                let result = result.map(|()| wc.byte_len as usize);
                if let Ok(len) = result {
                    buf.sync_for_cpu(len);
                }
                f(Completion::Recv { buf, result });
            }
        }
    }

    /// # Safety
    ///
    /// Called by the RDMA core with a queue created by [`Cq::new`] and its context.
    unsafe extern "C" fn completion(_cq: *mut bindings::ib_cq, ctx: *mut c_void) {
        // SAFETY: By the type invariant the context is the handler, which the queue keeps
        // alive.
        let handler = unsafe { &*ctx.cast::<H>() };
        handler.notify();
    }
}

impl<H: CqHandler> Drop for Cq<H> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `cq` is ours. The only queue pairs on it are created by
        // `ConnectRequest::accept`, which moves the `Cq` into the `Connection`, and the
        // connection destroys its queue pair before it drops the queue (or leaks both).
        let ret = unsafe { bindings::ib_destroy_cq_user(self.as_ptr(), ptr::null_mut()) };
        if ret != 0 {
            // The queue still exists and may still call the handler with its context: keep
            // the handler and the device reference for ever (the fields are `ManuallyDrop`).
            pr_warn!("ib_destroy_cq failed ({}); leaking it\n", ret);
            return;
        }
        // SAFETY: The queue is destroyed, so nothing reaches the handler through it any more;
        // the field is dropped once, here.
        unsafe { ManuallyDrop::drop(&mut self.handler) };
        // SAFETY: As above, for the device reference.
        unsafe { ManuallyDrop::drop(&mut self.dev) };
    }
}

/// The send of a post: how many bytes of the context's buffer, the peer's memory key that the
/// send invalidates on arrival (`IB_WR_SEND_WITH_INV`: the peer then need not invalidate it
/// itself), if any, and whether its success raises a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendWr {
    /// Bytes sent from the start of the context's buffer.
    pub len: usize,
    /// The peer's key to invalidate.
    pub invalidate: Option<u32>,
    /// Whether the send is signaled. An unsignaled send's context comes back with the
    /// completion of a later request of the queue pair (see [`Qp`]); a post that leaves the
    /// send queue nearly full is signaled anyway.
    pub signaled: bool,
}

impl SendWr {
    /// A plain, signaled send of `len` bytes.
    pub fn plain(len: usize) -> Self {
        Self {
            len,
            invalidate: None,
            signaled: true,
        }
    }
}

/// A send context that [`Qp::post_send`] or [`Qp::post_rw`] did not post, given back with the
/// error, so that what it carries (a command, a buffer) can be handed back to its owner rather
/// than dropped.
pub struct PostError<S> {
    /// Why the post failed (`ENOMEM` when the send queue is full).
    pub error: Error,
    /// The context, or `None` if the device took part of its chain: the context then comes
    /// back in a failed [`Completion::Send`] once that part is done.
    pub ctx: Option<KBox<S>>,
}

impl<S> PostError<S> {
    /// `ctx`, not posted because of `error`.
    pub fn unposted(error: Error, ctx: KBox<S>) -> Self {
        Self {
            error,
            ctx: Some(ctx),
        }
    }
}

impl<S> From<PostError<S>> for Error {
    fn from(e: PostError<S>) -> Self {
        e.error
    }
}

/// Sizes of a queue pair's queues (`struct ib_qp_cap`).
#[derive(Clone, Copy, Debug)]
pub struct QpCaps {
    /// Send work requests, including RDMA reads and writes.
    pub send_wr: u32,
    /// Receive work requests.
    pub recv_wr: u32,
    /// RDMA read/write contexts.
    pub rdma_ctxs: u32,
}

/// A reliable-connected queue pair (`struct ib_qp`) whose sends carry contexts of type `S`.
///
/// Posts count the send queue's free slots: a post that does not fit fails with `ENOMEM` and
/// gives its context back ([`PostError`]), so the device never takes only part of a chain for
/// lack of room.
///
/// Sends may be unsignaled ([`SendWr::signaled`]): the queue pair keeps their contexts, in
/// posting order, until a later request completes, which hands them back first (a
/// reliable-connected send queue completes in order). Whoever posts unsignaled sends owes the
/// queue pair a later signaled request; when none is coming, [`Qp::signal_posted`] posts one
/// that carries nothing. A context is therefore never freed while the device may still use it,
/// whatever is signaled.
///
/// # Invariants
///
/// The queue pair was created by [`super::cm::ConnectRequest::accept`], with its send and
/// receive queues on a [`Cq`] whose handler's `SendCtx` is `S`, and with a protection domain
/// whose `local_dma_lkey` covers the DMA mappings of its device. Its `qp_context` is its
/// [`RwQp`], which lives as long as the queue pair.
#[repr(transparent)]
pub struct Qp<S>(Opaque<bindings::ib_qp>, PhantomData<S>);

// SAFETY: `ib_post_send()`/`ib_post_recv()` may be called from any thread; they take the queue
// pair's own locks.
unsafe impl<S> Sync for Qp<S> {}

impl<S: SendCtx> Qp<S> {
    /// # Safety
    ///
    /// `qp` is valid for `'a` and meets the type invariants.
    pub(crate) unsafe fn from_raw<'a>(qp: *mut bindings::ib_qp) -> &'a Self {
        // SAFETY: `Qp` is a transparent wrapper of `ib_qp`; valid for `'a` by the requirements.
        unsafe { &*qp.cast::<Self>() }
    }

    fn as_ptr(&self) -> *mut bindings::ib_qp {
        self.0.get()
    }

    fn rw_qp(&self) -> &RwQp {
        // SAFETY: By the type invariant `qp_context` is the queue pair's `RwQp`, alive while
        // the queue pair is.
        unsafe { &*(*self.as_ptr()).qp_context.cast::<RwQp>() }
    }

    fn lkey(&self) -> u32 {
        // SAFETY: By the type invariant the queue pair and its protection domain are valid.
        unsafe { (*(*self.as_ptr()).pd).local_dma_lkey }
    }

    /// Posts `buf` for receiving; it comes back in a [`Completion::Recv`].
    pub fn post_recv(&self, buf: KBox<DmaBuf<FromDevice>>) -> Result {
        let mut sge = buf.sge(buf.len(), self.lkey());
        buf.sync_for_device(buf.len());
        let raw = KBox::into_raw(buf);
        let wr = bindings::ib_recv_wr {
            next: ptr::null_mut(),
            __bindgen_anon_1: bindings::ib_recv_wr__bindgen_ty_1 {
                wr_id: raw as usize as u64 | TAG_RECV,
            },
            sg_list: &mut sge,
            num_sge: 1,
        };
        // SAFETY: The queue pair is valid; `wr` and `sge` are valid for the call (the device
        // copies them); the buffer stays mapped and allocated until its completion takes it
        // back.
        let ret = unsafe { bindings::ib_post_recv(self.as_ptr(), &wr, ptr::null_mut()) };
        if ret != 0 {
            // SAFETY: The request was not posted, so the box is still ours.
            drop(unsafe { KBox::from_raw(raw) });
        }
        to_result(ret)
    }

    /// Sends the first `send.len` bytes of `ctx`'s buffer (`IB_WR_SEND`, or
    /// `IB_WR_SEND_WITH_INV`); `ctx` comes back in a [`Completion::Send`], or in the
    /// [`PostError`] if it was not posted.
    pub fn post_send(&self, ctx: KBox<S>, send: SendWr) -> Result<(), PostError<S>> {
        let Some(buf) = ctx.dma_buf() else {
            return Err(PostError::unposted(EINVAL, ctx));
        };
        let mut sge = buf.sge(send.len, self.lkey());
        buf.sync_for_device(sge.length as usize);
        let raw = KBox::into_raw(ctx);
        let mut sq = self.rw_qp().sq();
        let Some(signaled) = sq.take(1, send.signaled) else {
            drop(sq);
            return Err(Self::unposted(raw, ENOMEM));
        };
        let mut wr = Self::send_wr(sq.next_seq(), send.invalidate, signaled);
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        // SAFETY: The queue pair is valid; `wr` and `sge` are valid for the call (the device
        // copies them); the buffer, in the context, stays mapped and allocated until a
        // completion takes the context back out of the record.
        let ret = unsafe { bindings::ib_post_send(self.as_ptr(), &wr, ptr::null_mut()) };
        if ret != 0 {
            sq.untake(1);
            drop(sq);
            return Err(Self::unposted(raw, Error::from_errno(ret)));
        }
        sq.push(1, Posted::Ctx(raw.cast()), signaled);
        Ok(())
    }

    /// Posts `ctx`'s RDMA read/write context ([`SendCtx::rw`]); with `send`, chains that send
    /// of its buffer after it, else signals the last read or write. `ctx` comes back in a
    /// [`Completion::Send`], or in the [`PostError`] if nothing was posted.
    ///
    /// The chained send and its scatter entry are stored in the RDMA context itself
    /// ([`RwCtx`]), so the context never links to memory that is gone. The whole chain takes
    /// its send-queue slots before it is posted; should the device still refuse part of it,
    /// the context is kept until the part it took is done, then comes back in a failed
    /// completion ([`PostError::ctx`] is `None`).
    pub fn post_rw(&self, mut ctx: KBox<S>, send: Option<SendWr>) -> Result<(), PostError<S>> {
        let Some(rw) = ctx.rw() else {
            return Err(PostError::unposted(EINVAL, ctx));
        };
        if !ptr::eq(rw.rw_qp().qp(), self.as_ptr()) {
            return Err(PostError::unposted(EINVAL, ctx));
        }
        let mut sge = None;
        if let Some(send) = send {
            let Some(buf) = ctx.dma_buf() else {
                return Err(PostError::unposted(EINVAL, ctx));
            };
            buf.sync_for_device(send.len.min(buf.len()));
            sge = Some((buf.sge(send.len, self.lkey()), send));
        }
        let want = send.is_none_or(|s| s.signaled);
        let raw = KBox::into_raw(ctx);
        // SAFETY: `raw` came from `into_raw` above; nothing else refers to the context until
        // it is posted, and this function is the only user of `raw` until then.
        let Some(mut rw) = unsafe { &mut *raw }.rw() else {
            return Err(Self::unposted(raw, EINVAL));
        };
        let mut sq = self.rw_qp().sq();
        let id = Self::wr_id(sq.next_seq());
        let first = match sge {
            Some((sge, s)) => Ok(rw
                .as_mut()
                .wrs_then_send(Self::send_wr(sq.next_seq(), s.invalidate, s.signaled), sge)),
            None => rw.as_mut().wrs(id),
        };
        let Ok(first) = first else {
            drop(sq);
            return Err(Self::unposted(raw, EINVAL));
        };
        // SAFETY: `first` starts the chain the context just linked; every request of it lives
        // in the context (or in the C context's own arrays) and ends with a null link.
        let n = unsafe { chain_len(first) };
        let Some(signaled) = sq.take(n, want) else {
            drop(sq);
            return Err(Self::unposted(raw, ENOMEM));
        };
        if signaled && !want {
            // SAFETY: As for `chain_len`; the last request is the send chained in the context,
            // which we hold exclusively until it is posted.
            unsafe { (*chain_last(first)).send_flags |= bindings::ib_send_flags_IB_SEND_SIGNALED };
        }
        let mut bad: *const bindings::ib_send_wr = ptr::null();
        // SAFETY: The queue pair is valid; the requests, the chained send and its scatter
        // entry all live in the context (in `*raw`); the context and its buffer stay allocated
        // until a completion takes the context back out of the record.
        let ret = unsafe { bindings::ib_post_send(self.as_ptr(), first, &mut bad) };
        if ret != 0 && !bad.is_null() && !ptr::eq(bad, first) {
            // Part of the chain was posted and may use the context's mappings: the record
            // keeps the context until a later completion says that part is done. The slots of
            // the part that was not posted go back.
            // SAFETY: `bad` is the first request of the chain that was not posted.
            let left = unsafe { chain_len(bad) };
            sq.untake(left);
            sq.push(n - left, Posted::Partial(raw.cast()), false);
            drop(sq);
            pr_warn!("ib_post_send posted part of an RDMA chain ({})\n", ret);
            return Err(PostError {
                error: Error::from_errno(ret),
                ctx: None,
            });
        }
        if ret != 0 {
            sq.untake(n);
            drop(sq);
            return Err(Self::unposted(raw, Error::from_errno(ret)));
        }
        sq.push(n, Posted::Ctx(raw.cast()), signaled);
        Ok(())
    }

    /// Posts a signaled request that carries nothing (a zero-length RDMA WRITE, which the peer
    /// checks no key for, IBTA C9-88), if the last request posted was unsignaled: its
    /// completion hands back the contexts of the unsignaled sends before it. Returns whether
    /// one was posted.
    pub fn signal_posted(&self) -> Result<bool> {
        self.post_empty(true).map(|_| true).or_else(
            |e| {
                if e == EALREADY {
                    Ok(false)
                } else {
                    Err(e)
                }
            },
        )
    }

    /// Posts a signaled request that carries nothing (a zero-length RDMA WRITE), whatever was
    /// posted before, and returns it. The peer's transport acknowledges it without its
    /// consumer, so [`Qp::probe_done`] soon holds; a peer that is gone (its host or network,
    /// without a disconnect) leaves it unacknowledged. The queue pair then retries it, as
    /// often as the peer asked in its connection request (which for `rdma_rxe`, taking a
    /// retry count of 7 as unlimited, can be forever), and fails it
    /// ([`SendDone::Failed`]) only once the retries run out. For keepalive probes of idle
    /// connections; `ENOMEM` when the send queue is full.
    pub fn probe(&self) -> Result<Probe> {
        self.post_empty(false).map(Probe)
    }

    /// Whether `probe` and every request posted before it have completed (and were handed
    /// back by [`Cq::poll`]'s send batches).
    pub fn probe_done(&self, probe: &Probe) -> bool {
        self.rw_qp().sq().oldest_seq() > probe.0
    }

    /// Posts a signaled zero-length RDMA WRITE and returns its sequence number; with
    /// `only_after_unsignaled`, only if the last request posted was unsignaled (else
    /// `EALREADY`).
    fn post_empty(&self, only_after_unsignaled: bool) -> Result<u64> {
        let mut sq = self.rw_qp().sq();
        if only_after_unsignaled && !sq.tail_unsignaled() {
            return Err(EALREADY);
        }
        // After an unsignaled post at least one slot is free (nothing was posted since); a
        // probe may find the queue full.
        if sq.take(1, true).is_none() {
            return Err(ENOMEM);
        }
        // SAFETY: All-zero is a valid `ib_rdma_wr`: no scatter list, address 0, key 0.
        let mut wr: bindings::ib_rdma_wr = unsafe { core::mem::zeroed() };
        wr.wr.__bindgen_anon_1.wr_id = Self::wr_id(sq.next_seq());
        wr.wr.opcode = bindings::ib_wr_opcode_IB_WR_RDMA_WRITE;
        wr.wr.send_flags = bindings::ib_send_flags_IB_SEND_SIGNALED;
        // SAFETY: The queue pair is valid; `wr` is valid for the call and carries no buffer.
        let ret = unsafe { bindings::ib_post_send(self.as_ptr(), &wr.wr, ptr::null_mut()) };
        if ret != 0 {
            sq.untake(1);
            return Err(Error::from_errno(ret));
        }
        let seq = sq.next_seq();
        sq.push(1, Posted::Signal, true);
        Ok(seq)
    }

    fn wr_id(seq: u64) -> u64 {
        (seq << TAG_BITS) | TAG_SEND
    }

    /// The context `raw` (from `KBox::into_raw`), not posted because of `error`.
    fn unposted(raw: *mut S, error: Error) -> PostError<S> {
        // SAFETY: Nothing was posted, so the box is still ours.
        PostError::unposted(error, unsafe { KBox::from_raw(raw) })
    }

    /// A send numbered `seq`, invalidating the peer's key `invalidate` if given.
    fn send_wr(seq: u64, invalidate: Option<u32>, signaled: bool) -> bindings::ib_send_wr {
        // SAFETY: All-zero is a valid `ib_send_wr` (no next request, no scatter list).
        let mut wr: bindings::ib_send_wr = unsafe { core::mem::zeroed() };
        wr.__bindgen_anon_1.wr_id = Self::wr_id(seq);
        match invalidate {
            Some(rkey) => {
                wr.opcode = bindings::ib_wr_opcode_IB_WR_SEND_WITH_INV;
                wr.ex.invalidate_rkey = rkey;
            }
            None => wr.opcode = bindings::ib_wr_opcode_IB_WR_SEND,
        }
        if signaled {
            wr.send_flags = bindings::ib_send_flags_IB_SEND_SIGNALED;
        }
        wr
    }

    /// Moves the queue pair to the error state and posts a marker on each queue: every
    /// request posted earlier completes (flushed if it had not yet), then
    /// [`SendDone::Drained`] (in a [`Completion::Send`] batch) and [`Completion::RecvDrained`]
    /// (the `ib_drain_qp()` technique, with the wait left to the owner of the completion queue).
    pub fn start_drain(&self) -> Result {
        // SAFETY: All-zero is a valid `ib_qp_attr`.
        let mut attr: bindings::ib_qp_attr = unsafe { core::mem::zeroed() };
        attr.qp_state = bindings::ib_qp_state_IB_QPS_ERR;
        // SAFETY: The queue pair is valid; `attr` is valid for the call.
        to_result(unsafe {
            bindings::ib_modify_qp(
                self.as_ptr(),
                &mut attr,
                bindings::ib_qp_attr_mask_IB_QP_STATE as i32,
            )
        })?;
        let mut sq = self.rw_qp().sq();
        if !sq.take_drain() {
            return Err(EALREADY);
        }
        let wr = Self::send_wr(sq.next_seq(), None, true);
        // SAFETY: The queue pair is in the error state, so the marker is flushed, not sent; it
        // carries no buffer.
        let ret = unsafe { bindings::ib_post_send(self.as_ptr(), &wr, ptr::null_mut()) };
        if ret != 0 {
            sq.untake_drain();
            return Err(Error::from_errno(ret));
        }
        sq.push(1, Posted::Drain, true);
        drop(sq);
        let rwr = bindings::ib_recv_wr {
            next: ptr::null_mut(),
            __bindgen_anon_1: bindings::ib_recv_wr__bindgen_ty_1 {
                wr_id: WR_RECV_DRAIN,
            },
            sg_list: ptr::null_mut(),
            num_sge: 0,
        };
        // SAFETY: As above.
        to_result(unsafe { bindings::ib_post_recv(self.as_ptr(), &rwr, ptr::null_mut()) })
    }
}

/// The number of requests in the chain that starts at `wr`.
///
/// # Safety
///
/// `wr` and every request it links to are valid, and the last one links to nothing.
unsafe fn chain_len(mut wr: *const bindings::ib_send_wr) -> u32 {
    let mut n = 0;
    while !wr.is_null() {
        n += 1;
        // SAFETY: By the safety requirements.
        wr = unsafe { (*wr).next };
    }
    n
}

/// The last request of the chain that starts at `wr`.
///
/// # Safety
///
/// As for [`chain_len`], and the chain is not empty.
unsafe fn chain_last(mut wr: *mut bindings::ib_send_wr) -> *mut bindings::ib_send_wr {
    // SAFETY: By the safety requirements.
    while !unsafe { (*wr).next }.is_null() {
        // SAFETY: As above.
        wr = unsafe { (*wr).next };
    }
    wr
}

/// Checks at compile time that a `wr_id` tag fits below the alignment of posted objects.
const _: () = assert!(core::mem::align_of::<DmaBuf<FromDevice>>() > TAG_MASK as usize);

pub(crate) fn qp_init_attr<H: CqHandler>(
    cq: &Cq<H>,
    caps: QpCaps,
    port: u32,
) -> bindings::ib_qp_init_attr {
    // SAFETY: All-zero is a valid `ib_qp_init_attr`.
    let mut attr: bindings::ib_qp_init_attr = unsafe { core::mem::zeroed() };
    attr.send_cq = cq.as_ptr();
    attr.recv_cq = cq.as_ptr();
    attr.cap.max_send_wr = caps.send_wr;
    attr.cap.max_recv_wr = caps.recv_wr;
    // SAFETY: The queue's device is valid; its attributes do not change once registered.
    attr.cap.max_send_sge = unsafe { (*cq.dev.as_ptr()).attrs.max_send_sge }.max(1);
    attr.cap.max_recv_sge = 1;
    attr.cap.max_rdma_ctxs = caps.rdma_ctxs;
    attr.sq_sig_type = bindings::ib_sig_type_IB_SIGNAL_REQ_WR;
    attr.qp_type = bindings::ib_qp_type_IB_QPT_RC;
    attr.port_num = port;
    attr
}
