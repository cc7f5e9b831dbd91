// SPDX-License-Identifier: GPL-2.0

//! Virtqueues: the rings a virtio driver shares with its device.
//!
//! [`Virtqueues::find`] asks the transport for a device's queues (`virtio_find_vqs()`), hands
//! them to the driver as typed [`Queue`]s and routes every queue's interrupt to a [`Handler`].
//!
//! Buffers are passed to the device by handing it a *token*, a value that owns the memory the
//! device reads and writes ([`DeviceBuffers`]); the device owns the token until
//! [`QueueGuard::get_buf`] returns it.
//!
//! # Rules enforced by the types
//!
//! - **A queue holds one type of token.** A [`Queue<T>`] only accepts and returns `T`; there is no
//!   queue index to get wrong and no run-time type check: putting a token of another type in a
//!   queue does not compile (see [`Queue`]).
//! - **Exclusive access under the queue's lock.** The C API requires `virtqueue_add_sgs()`,
//!   `virtqueue_get_buf()` and the callback enabling functions to be serialised; they are
//!   methods of [`QueueGuard`], which holds the queue's IRQ-safe spinlock. Allocations made while
//!   it is held are atomic: [`QueueGuard::add`] takes no allocation flags and always uses
//!   `GFP_ATOMIC`.
//! - **One set per binding.** A device's queues are found at most once per binding:
//!   [`Virtqueues::find`] fails with `EBUSY` if the device already has a set.
//! - **Reset in place.** [`Virtqueues::reset`] resets the device and finds its queues again
//!   behind the same [`Queue`]s (for error recovery); the tokens the device held are dropped,
//!   and operations fail with `EBUSY` while it runs.
//! - **No use after unbind.** The set is tied to the binding, as device resources are
//!   (devres): the virtio bus abstraction tears it down when the driver's `unbind` returns (or
//!   when probe fails): it resets the device, gives back the tokens the device still held,
//!   deletes the queues and marks every [`Queue`] gone. References that outlive the binding
//!   (an [`Arc<Virtqueues>`] kept by a work item, say) stay memory-safe: every operation on a
//!   gone queue fails with `ENODEV` or does nothing, and the last drop of such a reference does
//!   not touch the device, so it may happen in any context.
//!
//! C header: [`include/linux/virtio.h`](srctree/include/linux/virtio.h)

use super::Device;
use crate::{
    bindings,
    cpumask::Cpumask,
    device,
    error::to_result,
    new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        Mutex,
        SpinLockIrq,
        SpinLockIrqGuard, //
    },
    types::ForeignOwnable,
};
use core::{
    marker::PhantomData,
    ptr::{
        self,
        NonNull, //
    },
};

/// Most scatter-gather entries (headers plus data chains) a token may describe.
pub const MAX_SGS: usize = 8;

/// Tries of the device lock by [`Virtqueues::reset`], 10 ms apart.
const RESET_LOCK_TRIES: u32 = 100;

/// Receives the interrupts of a device's virtqueues.
pub trait Handler: Send + Sync + Sized + 'static {
    /// The driver's typed queues, built by the `build` function of [`Virtqueues::find`].
    type Queues: Send + Sync + 'static;

    /// Called, usually in interrupt context, when the device has used buffers of the queue
    /// found at position `index` (`vq_callback_t`).
    fn callback(&self, vqs: &Virtqueues<Self>, index: usize);

    /// Called after a device reset ([`Virtqueues::reset`], or a reset by the transport) found
    /// the queues again, before the device is set ready: the queues are empty, and buffers the
    /// device must always have (event buffers, say) are posted again here. It must not reset
    /// the device.
    fn reset_done(&self, vqs: &Virtqueues<Self>) {
        let _ = vqs;
    }
}

/// How one queue is set up by [`Virtqueues::find`].
pub struct QueueInfo {
    /// The queue's name, shown in `/proc/interrupts`.
    pub name: &'static CStr,
    /// Whether the device interrupts for this queue (calls [`Handler::callback`]).
    pub callback: bool,
}

/// How queue interrupts are spread over CPUs.
#[derive(Clone, Copy)]
pub enum Affinity {
    /// The transport picks the interrupt layout; affinity may be set with
    /// [`Queue::set_affinity`] and the interrupts move when CPUs go offline.
    Unmanaged,
    /// Kernel-managed affinity (`struct irq_affinity`): the queues after the first
    /// `pre_vectors` are spread over all CPUs and a queue's interrupt is shut down when all of
    /// its CPUs are offline.
    Managed {
        /// Queues that are not spread (their interrupts keep the default affinity).
        pre_vectors: u32,
    },
}

/// The device-visible buffers of a token: scatter-gather entries the device reads, followed by
/// entries it writes.
///
/// Built by [`DeviceBuffers::describe`]; every entry points into memory that lives at least as
/// long as the borrow `'a` of the token.
pub struct SgList<'a> {
    entries: [SgEntry; MAX_SGS],
    len: usize,
    readable: usize,
    _p: PhantomData<&'a mut ()>,
}

#[derive(Clone, Copy)]
enum SgEntry {
    None,
    One(*const u8, u32),
    Chain(*mut bindings::scatterlist),
}

impl<'a> SgList<'a> {
    fn new() -> Self {
        Self {
            entries: [SgEntry::None; MAX_SGS],
            len: 0,
            readable: 0,
            _p: PhantomData,
        }
    }

    fn push(&mut self, entry: SgEntry) -> Result {
        if self.len == MAX_SGS {
            return Err(E2BIG);
        }
        self.entries[self.len] = entry;
        self.len += 1;
        Ok(())
    }

    fn one(buf: *const u8, len: usize) -> Result<SgEntry> {
        let len = u32::try_from(len).map_err(|_| EINVAL)?;
        // SAFETY: `virt_addr_valid()` only computes with the address.
        if len == 0 || !unsafe { bindings::virt_addr_valid(buf.cast()) } {
            // `sg_init_one()` needs memory in the kernel's linear map (not stack or vmalloc).
            return Err(EINVAL);
        }
        Ok(SgEntry::One(buf, len))
    }

    /// Adds a buffer the device reads. All readable buffers come before the writable ones.
    pub fn readable(&mut self, buf: &'a [u8]) -> Result {
        if self.readable != self.len {
            return Err(EINVAL);
        }
        self.push(Self::one(buf.as_ptr(), buf.len())?)?;
        self.readable += 1;
        Ok(())
    }

    /// Adds a buffer the device writes.
    pub fn writable(&mut self, buf: &'a mut [u8]) -> Result {
        self.push(Self::one(buf.as_ptr(), buf.len())?)
    }

    /// Adds a chain of scatterlist entries (terminated by `sg_mark_end()`), for abstractions
    /// whose buffers already are a scatterlist, such as a SCSI command's data.
    ///
    /// # Safety
    ///
    /// `sgl` must be a valid, terminated scatterlist whose memory stays valid, and is not
    /// otherwise accessed when `writable`, for the borrow `'a`.
    pub unsafe fn chain(&mut self, sgl: *mut bindings::scatterlist, writable: bool) -> Result {
        if !writable {
            if self.readable != self.len {
                return Err(EINVAL);
            }
            self.readable += 1;
        }
        self.push(SgEntry::Chain(sgl))
    }
}

/// A value that owns buffers the device may use while the value sits in a virtqueue.
///
/// # Safety
///
/// - Every buffer `describe` adds to the list stays valid, at the same address, from the call
///   to `describe` until [`ForeignOwnable::from_foreign`] is called on the pointer that
///   `into_foreign` returned for this value.
/// - Buffers added as writable are not accessed by anything but the device during that time
///   (in particular, no reference to them can be obtained through the foreign pointer).
pub unsafe trait DeviceBuffers: ForeignOwnable + Send + 'static {
    /// Describes the buffers: first those the device reads, then those it writes.
    fn describe<'a>(&'a mut self, sg: &mut SgList<'a>) -> Result;
}

/// Buffers of a heap object exchanged with a device: a request part the device reads and a
/// response part it writes. Either may be empty.
pub trait Exchange: Send + 'static {
    /// Returns the request (device-readable) and response (device-writable) parts.
    fn buffers(&mut self) -> (&[u8], &mut [u8]);
}

// SAFETY: The buffers are borrowed from the boxed value, which does not move while the box is in
// foreign hands, and the box is the only owner of its contents: nothing can reach them until
// `from_foreign` gives the box back.
unsafe impl<T: Exchange> DeviceBuffers for KBox<T> {
    fn describe<'a>(&'a mut self, sg: &mut SgList<'a>) -> Result {
        let (req, resp) = (**self).buffers();
        if !req.is_empty() {
            sg.readable(req)?;
        }
        if !resp.is_empty() {
            sg.writable(resp)?;
        }
        Ok(())
    }
}

/// Drops a token the device gave back or never took.
///
/// # Safety
///
/// `ptr` must come from `T::into_foreign` and must not be used again: the caller gives up the
/// token, whose buffers the device no longer accesses.
unsafe fn drop_token<T: ForeignOwnable>(ptr: *mut c_void) {
    // SAFETY: By the safety requirements, `ptr` came from `T::into_foreign` and is given up.
    drop(unsafe { T::from_foreign(ptr) });
}

/// The state of a queue behind its lock.
///
/// # Invariants
///
/// While `vq` is `Some`, it is a valid `struct virtqueue` of the device and every token in it
/// came from `into_foreign` of the token type of the [`Queue`] that owns this state. While it is
/// `None`, `resetting` tells whether the queue comes back (device reset) or not (unbound).
struct RawQueue {
    vq: Option<NonNull<bindings::virtqueue>>,
    resetting: bool,
}

impl RawQueue {
    /// The error of an operation on a queue that is not usable.
    fn unusable(&self) -> Error {
        if self.resetting {
            EBUSY
        } else {
            ENODEV
        }
    }
}

// SAFETY: A virtqueue may be used from any thread; exclusive access is given by the lock around
// it.
unsafe impl Send for RawQueue {}

/// The shared part of a queue: its lock, and a mutex for operations that may sleep.
#[pin_data]
struct QueueCore {
    #[pin]
    ring: SpinLockIrq<RawQueue>,
    /// Held by [`Queue::set_affinity`] and by the teardown, which may sleep.
    #[pin]
    config: Mutex<()>,
    index: usize,
}

/// A virtqueue whose tokens are of type `T`.
///
/// Created by [`Virtqueues::find`]; the device interrupts for it through [`Handler::callback`].
///
/// # Examples
///
/// A queue only takes its own token type; this does not compile:
///
/// ```ignore,compile_fail
/// use kernel::virtio::virtqueue::{Exchange, Queue};
/// # use kernel::prelude::*;
/// struct Request([u8; 16]);
/// struct Event([u8; 16]);
/// # impl Exchange for Request {
/// #     fn buffers(&mut self) -> (&[u8], &mut [u8]) {
/// #         (&self.0, &mut [])
/// #     }
/// # }
/// # impl Exchange for Event {
/// #     fn buffers(&mut self) -> (&[u8], &mut [u8]) {
/// #         (&[], &mut self.0)
/// #     }
/// # }
/// fn post(q: &Queue<KBox<Request>>, ev: KBox<Event>) {
///     let _ = q.lock().add(ev); // error: expected `KBox<Request>`, found `KBox<Event>`
/// }
/// ```
///
/// Adding, kicking and taking buffers back:
///
/// ```no_run
/// use kernel::virtio::virtqueue::{Exchange, Queue};
/// # use kernel::prelude::*;
/// struct Request {
///     req: [u8; 16],
///     resp: [u8; 4],
/// }
/// impl Exchange for Request {
///     fn buffers(&mut self) -> (&[u8], &mut [u8]) {
///         (&self.req, &mut self.resp)
///     }
/// }
///
/// fn submit(q: &Queue<KBox<Request>>, r: KBox<Request>) -> Result {
///     let mut vq = q.lock();
///     vq.add(r).map_err(|(e, _r)| e)?;
///     // Notifies the device after dropping the lock.
///     vq.kick();
///     Ok(())
/// }
///
/// fn complete(q: &Queue<KBox<Request>>) {
///     let mut vq = q.lock();
///     while let Some((r, _written)) = vq.get_buf() {
///         pr_info!("response {:?}\n", r.resp);
///     }
/// }
/// ```
pub struct Queue<T: DeviceBuffers> {
    core: Arc<QueueCore>,
    _p: PhantomData<fn(T) -> T>,
}

impl<T: DeviceBuffers> Queue<T> {
    /// Locks the queue for adding or taking buffers.
    pub fn lock(&self) -> QueueGuard<'_, T> {
        QueueGuard {
            ring: self.core.ring.lock(),
            _p: PhantomData,
        }
    }

    /// Returns the position of the queue among the device's queues, as passed to
    /// [`Handler::callback`].
    pub fn index(&self) -> usize {
        self.core.index
    }

    /// Hints the CPUs that should take the queue's interrupt (`virtqueue_set_affinity()`).
    /// Meaningful with [`Affinity::Unmanaged`]. May sleep.
    ///
    /// Fails with `ENODEV` once the device is unbound.
    pub fn set_affinity(&self, mask: &Cpumask) -> Result {
        let _config = self.core.config.lock();
        let vq = {
            let ring = self.core.ring.lock();
            ring.vq.ok_or_else(|| ring.unusable())?
        };
        // SAFETY: The queue is valid: the teardown, which deletes it, holds `config` while it
        // marks the queue gone, and we hold `config` and saw it live. `mask` is a valid cpumask.
        to_result(unsafe { bindings::virtqueue_set_affinity(vq.as_ptr(), mask.as_raw()) })
    }
}

/// A locked [`Queue`].
pub struct QueueGuard<'a, T: DeviceBuffers> {
    ring: SpinLockIrqGuard<'a, RawQueue>,
    _p: PhantomData<fn(T) -> T>,
}

impl<T: DeviceBuffers> QueueGuard<'_, T> {
    /// Exposes the buffers of `data` to the device (`virtqueue_add_sgs()`, `GFP_ATOMIC`).
    ///
    /// On failure `data` is given back with the error: `ENOSPC` when the ring is full, `EIO`
    /// when the device is broken, `EBUSY` while the device is being reset
    /// ([`Virtqueues::reset`]), `ENODEV` when the device is unbound, `EINVAL` or `E2BIG` when
    /// the buffers of `data` cannot be described.
    pub fn add(&mut self, mut data: T) -> Result<(), (Error, T)> {
        let Some(vq) = self.ring.vq else {
            return Err((self.ring.unusable(), data));
        };
        let mut sg = SgList::new();
        if let Err(e) = data.describe(&mut sg) {
            return Err((e, data));
        }
        let (entries, len, out) = (sg.entries, sg.len, sg.readable);
        if len == 0 {
            return Err((EINVAL, data));
        }
        // The scatterlist entries for single buffers only need to live during the call; only
        // those used are initialised (`sg_init_one()` clears its entry).
        let mut ones =
            [const { core::mem::MaybeUninit::<bindings::scatterlist>::uninit() }; MAX_SGS];
        let mut heads = [ptr::null_mut::<bindings::scatterlist>(); MAX_SGS];
        for i in 0..len {
            heads[i] = match entries[i] {
                SgEntry::One(buf, l) => {
                    let one = ones[i].as_mut_ptr();
                    // SAFETY: `one` is valid for writing a scatterlist entry, which
                    // `sg_init_one()` initialises whole; `buf` is `l` bytes in the linear map, as
                    // checked by `SgList::one()`.
                    unsafe { bindings::sg_init_one(one, buf.cast(), l) };
                    one
                }
                SgEntry::Chain(sgl) => sgl,
                SgEntry::None => return Err((EINVAL, data)),
            };
        }
        let token = data.into_foreign();
        // SAFETY: By the invariant of `RawQueue` `vq` is valid; the lock gives the exclusive
        // access the function requires; `heads[..len]` are terminated scatterlists of memory
        // owned by `token` (the `DeviceBuffers` contract) and `out` of them are readable. The
        // lock is an IRQ-disabling spinlock, hence `GFP_ATOMIC`.
        let ret = unsafe {
            bindings::virtqueue_add_sgs(
                vq.as_ptr(),
                heads.as_mut_ptr(),
                out as u32,
                (len - out) as u32,
                token,
                GFP_ATOMIC.as_raw(),
            )
        };
        if ret != 0 {
            // SAFETY: The device did not take `token`, so it is still owned here.
            return Err((Error::from_errno(ret), unsafe { T::from_foreign(token) }));
        }
        // INVARIANT: The token in the queue came from `T::into_foreign`.
        Ok(())
    }

    /// Takes back a token the device has used, with the number of bytes it wrote
    /// (`virtqueue_get_buf()`).
    ///
    /// Returns `None` when no used buffer is pending or the device is unbound.
    pub fn get_buf(&mut self) -> Option<(T, u32)> {
        let vq = self.ring.vq?;
        let mut len = 0u32;
        // SAFETY: `vq` is valid (invariant of `RawQueue`) and the lock gives exclusive access.
        let token = unsafe { bindings::virtqueue_get_buf(vq.as_ptr(), &mut len) };
        if token.is_null() {
            return None;
        }
        // SAFETY: Every token in the queue came from `T::into_foreign` (invariant of
        // `RawQueue`), and the device has given this one back.
        Some((unsafe { T::from_foreign(token) }, len))
    }

    /// Notifies the device of the buffers added since the last notification, if it wants to be
    /// notified (`virtqueue_kick_prepare()` under the lock, then `virtqueue_notify()` after
    /// dropping it, as C drivers do).
    ///
    /// Returns `false` if the device is broken, being reset or unbound.
    pub fn kick(self) -> bool {
        let Some(vq) = self.ring.vq else {
            return false;
        };
        // SAFETY: `vq` is valid and the lock gives exclusive access.
        let needed = unsafe { bindings::virtqueue_kick_prepare(vq.as_ptr()) };
        // The teardown marks the queue gone under the lock, then waits for an RCU grace period
        // before deleting it: a read-side section entered before dropping the lock keeps `vq`
        // valid until it ends.
        let rcu = crate::sync::rcu::read_lock();
        drop(self);
        let ok = if needed {
            // SAFETY: `vq` is valid until `rcu` is dropped, see above; `virtqueue_notify()`
            // needs no lock.
            unsafe { bindings::virtqueue_notify(vq.as_ptr()) }
        } else {
            true
        };
        drop(rcu);
        ok
    }

    /// Asks the device not to interrupt for used buffers (`virtqueue_disable_cb()`).
    pub fn disable_cb(&mut self) {
        if let Some(vq) = self.ring.vq {
            // SAFETY: `vq` is valid and the lock gives exclusive access.
            unsafe { bindings::virtqueue_disable_cb(vq.as_ptr()) }
        }
    }

    /// Re-enables interrupts; returns `false` if used buffers arrived meanwhile, which the
    /// caller must then process (`virtqueue_enable_cb()`). Returns `true` once the device is
    /// unbound (nothing will arrive).
    pub fn enable_cb(&mut self) -> bool {
        match self.ring.vq {
            // SAFETY: `vq` is valid and the lock gives exclusive access.
            Some(vq) => unsafe { bindings::virtqueue_enable_cb(vq.as_ptr()) },
            None => true,
        }
    }

    /// Returns the number of free descriptors (0 once the device is unbound).
    pub fn num_free(&self) -> u32 {
        match self.ring.vq {
            // SAFETY: `vq` is valid and the lock gives exclusive access.
            Some(vq) => unsafe { (*vq.as_ptr()).num_free },
            None => 0,
        }
    }

    /// Returns the number of descriptors of the ring (`virtqueue_get_vring_size()`; 0 once the
    /// device is unbound).
    pub fn vring_size(&self) -> u32 {
        match self.ring.vq {
            // SAFETY: `vq` is valid.
            Some(vq) => unsafe { bindings::virtqueue_get_vring_size(vq.as_ptr()) },
            None => 0,
        }
    }
}

/// The queues found by [`Virtqueues::find`], handed out in order as typed [`Queue`]s by the
/// driver's `build` function.
pub struct Found {
    cores: KVec<Arc<QueueCore>>,
    /// The drop function of each queue's token type, set when the queue is taken.
    drops: KVec<Option<unsafe fn(*mut c_void)>>,
    next: usize,
}

impl Found {
    /// Takes the next queue, whose tokens will be of type `T`; fails with `EINVAL` when all
    /// queues are taken.
    pub fn next_queue<T: DeviceBuffers>(&mut self) -> Result<Queue<T>> {
        let core = self.cores.get(self.next).ok_or(EINVAL)?.clone();
        self.drops[self.next] = Some(drop_token::<T>);
        self.next += 1;
        Ok(Queue {
            core,
            _p: PhantomData,
        })
    }

    /// Takes the next `n` queues, all with tokens of type `T`.
    pub fn next_queues<T: DeviceBuffers>(&mut self, n: usize) -> Result<KVec<Queue<T>>> {
        let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            v.push(self.next_queue()?, GFP_KERNEL)?;
        }
        Ok(v)
    }

    /// Returns the number of queues not taken yet.
    pub fn remaining(&self) -> usize {
        self.cores.len() - self.next
    }
}

/// The operations of a set that the bus abstraction calls without knowing its handler type.
pub(super) struct BindingOps {
    /// The binding ends (see [`Virtqueues::release_binding`]).
    pub(super) release: unsafe fn(*mut bindings::virtio_device),
    /// The device is about to be reset: the queues go.
    pub(super) reset_prepare: unsafe fn(*mut bindings::virtio_device) -> c_int,
    /// The device was reset: the queues come back.
    pub(super) reset_done: unsafe fn(*mut bindings::virtio_device) -> c_int,
}

/// Where a set is in its life.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// The queues exist and are usable.
    Live,
    /// The device is being reset: the queues were deleted and will be found again.
    Reset,
    /// The binding ended: the queues were deleted for good.
    Released,
}

/// The life of a set: its state and the raw queues, for the teardown and the reset.
///
/// # Invariants
///
/// In state [`State::Live`], `raw[i]` is the queue of the set's `cores[i]`, found and not
/// deleted; in the other states the queues are deleted and `raw` is not used.
struct Lifecycle {
    phase: State,
    raw: KVec<NonNull<bindings::virtqueue>>,
}

// SAFETY: The raw queue pointers are only used by the teardown and the reset, under the mutex
// around `Lifecycle`, in process context.
unsafe impl Send for Lifecycle {}

/// The virtqueues of a bound device, with the handler their callbacks reach.
///
/// # Invariants
///
/// - `ops` is `Self::OPS`; it is the first field, so that the bus abstraction can reach the
///   set's operations through the device's `priv` pointer without knowing `H`.
/// - While the device's `priv` is not null, it holds a reference to `self` from
///   `Arc::into_raw`. `priv` is cleared only by the teardown, after the queues are deleted.
/// - A queue core is usable (its `vq` is `Some`) only while the lifecycle state is
///   `State::Live`, and then its `vq` is `lifecycle.raw[i]`.
/// - `drops[i]` is the drop function of the token type of the queue of `cores[i]`.
#[repr(C)]
#[pin_data]
pub struct Virtqueues<H: Handler> {
    ops: &'static BindingOps,
    dev: ARef<Device>,
    cores: KVec<Arc<QueueCore>>,
    drops: KVec<Option<unsafe fn(*mut c_void)>>,
    /// What `find` was given, to find the queues again after a reset.
    info: KVec<(&'static CStr, bool)>,
    affinity: Affinity,
    #[pin]
    lifecycle: Mutex<Lifecycle>,
    queues: H::Queues,
    handler: Arc<H>,
}

// SAFETY: Every field is `Send` (`H` and `H::Queues` by the trait bounds, the queue cores by their
// locks, `Lifecycle` above).
unsafe impl<H: Handler> Send for Virtqueues<H> {}
// SAFETY: `&Virtqueues` gives access to `H`, `H::Queues` (both `Sync`), to the queues through
// their locks and to the lifecycle through its mutex.
unsafe impl<H: Handler> Sync for Virtqueues<H> {}

impl<H: Handler> Virtqueues<H> {
    extern "C" fn callback(vq: *mut bindings::virtqueue) {
        // SAFETY: The virtio core calls this with a valid queue of ours, whose device is valid.
        let (set, index) = unsafe { ((*(*vq).vdev).priv_.cast::<Self>(), (*vq).index) };
        if set.is_null() {
            // The queues are being set up or torn down: nothing to do.
            return;
        }
        // SAFETY: This callback is only installed by `find` for `H`, which sets the device's
        // `priv` to a reference to a `Virtqueues<H>`; the teardown resets the device (so no
        // callback runs any more) before dropping that reference.
        let set = unsafe { &*set };
        H::callback(&set.handler, set, index as usize);
    }

    /// Finds the device's queues (`virtio_find_vqs()`), one per element of `info`, and routes
    /// their interrupts to `handler`.
    ///
    /// `build` takes the found queues in order with [`Found::next_queue`], giving each its token
    /// type, and returns the driver's [`Handler::Queues`]; every queue must be taken.
    ///
    /// A device has one set of queues per binding: a second call fails with `EBUSY`. The set is
    /// torn down by the bus abstraction when the driver is unbound (see the module
    /// documentation).
    pub fn find(
        dev: &Device<device::Core<'_>>,
        info: &[QueueInfo],
        affinity: Affinity,
        handler: Arc<H>,
        build: impl FnOnce(&mut Found) -> Result<H::Queues>,
    ) -> Result<Arc<Self>> {
        // SAFETY: `priv` is the driver's field, cleared by the bus abstraction when the binding
        // starts and only set by `find`; a `Core` context means probe or remove runs, which the
        // driver core serialises, so nobody writes it concurrently.
        if !unsafe { (*dev.as_raw()).priv_ }.is_null() {
            return Err(EBUSY);
        }
        let mut saved = KVec::with_capacity(info.len(), GFP_KERNEL)?;
        for q in info {
            saved.push((q.name, q.callback), GFP_KERNEL)?;
        }
        // SAFETY: `dev` is being probed and has no queues (its `priv` is null).
        let vqs = unsafe { Self::find_raw(dev.as_raw(), &saved, affinity) }?;
        let dev: ARef<Device> = (&**dev).into();
        let set =
            Self::assemble(&dev, &vqs, saved, affinity, handler, build).inspect_err(|_| {
                // SAFETY: The queues were found above; nothing uses them (the device is not ready,
                // and the `priv` that callbacks read is still null).
                unsafe { Self::delete(&dev) };
            })?;
        // INVARIANT: `priv` holds a reference to the set, whose queues are live.
        let me = Arc::into_raw(set.clone()).cast_mut().cast::<c_void>();
        // SAFETY: `priv` is the driver's; no buffer is in the queues yet, so no callback reads it
        // concurrently.
        unsafe { (*dev.as_raw()).priv_ = me };
        Ok(set)
    }

    /// Finds the queues of `dev` (`virtio_find_vqs()`), one per element of `info` (name,
    /// whether it interrupts), all routed to [`Self::callback`].
    ///
    /// # Safety
    ///
    /// `dev` must be a valid device without queues (being probed, or reset with its queues
    /// deleted), in process context.
    unsafe fn find_raw(
        dev: *mut bindings::virtio_device,
        info: &[(&'static CStr, bool)],
        affinity: Affinity,
    ) -> Result<KVec<*mut bindings::virtqueue>> {
        let n = info.len();
        let mut raw_info = KVec::with_capacity(n, GFP_KERNEL)?;
        for (name, callback) in info {
            raw_info.push(
                bindings::virtqueue_info {
                    name: name.as_char_ptr(),
                    callback: if *callback {
                        Some(Self::callback)
                    } else {
                        None
                    },
                    ctx: false,
                },
                GFP_KERNEL,
            )?;
        }
        let mut vqs = KVec::with_capacity(n, GFP_KERNEL)?;
        vqs.resize(n, ptr::null_mut::<bindings::virtqueue>(), GFP_KERNEL)?;
        let mut desc = bindings::irq_affinity::default();
        let desc_ptr = match affinity {
            Affinity::Unmanaged => ptr::null_mut(),
            Affinity::Managed { pre_vectors } => {
                desc.pre_vectors = pre_vectors;
                &raw mut desc
            }
        };
        // SAFETY: `dev` is valid and has no queues (safety requirements); `vqs` and `raw_info`
        // have `n` elements each.
        to_result(unsafe {
            bindings::virtio_find_vqs(
                dev,
                n as u32,
                vqs.as_mut_ptr(),
                raw_info.as_mut_ptr(),
                desc_ptr,
            )
        })?;
        Ok(vqs)
    }

    fn assemble(
        dev: &ARef<Device>,
        vqs: &[*mut bindings::virtqueue],
        saved: KVec<(&'static CStr, bool)>,
        affinity: Affinity,
        handler: Arc<H>,
        build: impl FnOnce(&mut Found) -> Result<H::Queues>,
    ) -> Result<Arc<Self>> {
        let mut raw = KVec::with_capacity(vqs.len(), GFP_KERNEL)?;
        let mut cores = KVec::with_capacity(vqs.len(), GFP_KERNEL)?;
        let mut drops = KVec::with_capacity(vqs.len(), GFP_KERNEL)?;
        for (index, vq) in vqs.iter().enumerate() {
            let vq = NonNull::new(*vq).ok_or(EINVAL)?;
            raw.push(vq, GFP_KERNEL)?;
            // INVARIANT: `vq` was just found and holds no token.
            let core = Arc::pin_init(
                pin_init!(QueueCore {
                    ring <- new_spinlock_irq!(
                        RawQueue {
                            vq: Some(vq),
                            resetting: false,
                        },
                        "virtqueue"
                    ),
                    config <- new_mutex!((), "virtqueue::config"),
                    index,
                }),
                GFP_KERNEL,
            )?;
            cores.push(core, GFP_KERNEL)?;
            drops.push(None, GFP_KERNEL)?;
        }
        let mut found = Found {
            cores,
            drops,
            next: 0,
        };
        let queues = build(&mut found)?;
        if found.remaining() != 0 {
            return Err(EINVAL);
        }
        // INVARIANT: `ops` is `Self::OPS`; the queues are live and `raw` holds them in order.
        Arc::pin_init(
            try_pin_init!(Self {
                ops: &Self::OPS,
                dev: dev.clone(),
                cores: found.cores,
                drops: found.drops,
                info: saved,
                affinity,
                lifecycle <- new_mutex!(
                    Lifecycle {
                        phase: State::Live,
                        raw,
                    },
                    "virtqueues::lifecycle"
                ),
                queues,
                handler,
            }),
            GFP_KERNEL,
        )
    }

    const OPS: BindingOps = BindingOps {
        release: Self::release_binding,
        reset_prepare: Self::reset_prepare,
        reset_done: Self::reset_done,
    };

    /// Resets the device and deletes its queues.
    ///
    /// # Safety
    ///
    /// The queues of `dev` must have been found, and must not be used afterwards.
    unsafe fn delete(dev: &Device) {
        // SAFETY: `dev` is valid; resetting stops the device from using any queue and waits for
        // running callbacks.
        unsafe { bindings::virtio_reset_device(dev.as_raw()) };
        // SAFETY: `config` is set by the transport, which implements `del_vqs`.
        if let Some(del_vqs) = unsafe { (*(*dev.as_raw()).config).del_vqs } {
            // SAFETY: The queues were found and the device is reset.
            unsafe { del_vqs(dev.as_raw()) };
        }
    }

    /// Makes every queue unusable, resets the device, drops the tokens it still held and
    /// deletes the queues; `resetting` tells the queues' users whether they come back.
    ///
    /// # Safety
    ///
    /// `life` must be the set's lifecycle in state [`State::Live`]; process context.
    unsafe fn shut_down(&self, life: &mut Lifecycle, resetting: bool) {
        // Mark every queue unusable: from now on no operation reaches the device's rings.
        // Taking `config` waits for a running `set_affinity`.
        for core in self.cores.iter() {
            let _config = core.config.lock();
            let mut ring = core.ring.lock();
            ring.vq = None;
            ring.resetting = resetting;
        }
        // Wait for the notifications started before the queues were marked (`kick`).
        // SAFETY: Process context (safety requirements).
        unsafe { bindings::synchronize_rcu() };
        // SAFETY: The device is valid; resetting stops the device from using any queue and
        // waits for running callbacks.
        unsafe { bindings::virtio_reset_device(self.dev.as_raw()) };
        // The device is reset: the tokens it still held are ours again.
        for (vq, drop_token) in life.raw.iter().zip(self.drops.iter()) {
            let Some(drop_token) = drop_token else {
                continue;
            };
            loop {
                // SAFETY: The queue is valid (state `Live`: not deleted yet) and the device no
                // longer uses it.
                let token = unsafe { bindings::virtqueue_detach_unused_buf(vq.as_ptr()) };
                if token.is_null() {
                    break;
                }
                // SAFETY: Every token of this queue came from `into_foreign` of the type whose
                // drop function `Found::next_queue` recorded (type invariant), and is given up
                // here.
                unsafe { drop_token(token) };
            }
        }
        // SAFETY: The queues were found (state `Live`) and the device is reset.
        unsafe { Self::delete(&self.dev) };
    }

    /// Returns the set that the device's `priv` points to, borrowed.
    ///
    /// # Safety
    ///
    /// `vdev` must be a valid device whose `priv` holds a reference to a `Virtqueues<H>`, kept
    /// for `'a`.
    unsafe fn from_device<'a>(vdev: *mut bindings::virtio_device) -> &'a Self {
        // SAFETY: Guaranteed by the caller.
        unsafe { &*(*vdev).priv_.cast::<Self>() }
    }

    /// Tears down the set of `vdev`: the device's binding ends.
    ///
    /// # Safety
    ///
    /// `vdev` must be a valid device whose `priv` holds a reference to a `Virtqueues<H>` (type
    /// invariant), called in process context by the bus abstraction while it holds the device
    /// (probe failure or remove), once.
    unsafe fn release_binding(vdev: *mut bindings::virtio_device) {
        // SAFETY: By the safety requirements `priv` holds a reference from `Arc::into_raw`.
        let set = unsafe { Arc::from_raw((*vdev).priv_.cast::<Self>()) };
        {
            let mut life = set.lifecycle.lock();
            match life.phase {
                // SAFETY: State `Live`, process context.
                State::Live => unsafe { set.shut_down(&mut life, false) },
                State::Reset => {
                    // A reset that did not finish: the queues are deleted already. They are
                    // not coming back.
                    for core in set.cores.iter() {
                        core.ring.lock().resetting = false;
                    }
                }
                State::Released => {}
            }
            life.phase = State::Released;
        }
        // INVARIANT: The queues are deleted; `priv` is cleared and its reference dropped.
        // SAFETY: No callback runs any more; the field is the driver's.
        unsafe { (*vdev).priv_ = ptr::null_mut() };
        drop(set);
    }

    /// The device is about to be reset (`reset_prepare` of the driver).
    ///
    /// # Safety
    ///
    /// `vdev` must be a valid device whose `priv` holds a reference to a `Virtqueues<H>`, kept
    /// during the call; process context.
    unsafe fn reset_prepare(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: Guaranteed by the caller.
        let set = unsafe { Self::from_device(vdev) };
        let mut life = set.lifecycle.lock();
        if life.phase == State::Live {
            // SAFETY: State `Live`, process context.
            unsafe { set.shut_down(&mut life, true) };
            life.phase = State::Reset;
        }
        0
    }

    /// The device was reset and its features negotiated again (`reset_done` of the driver):
    /// finds the queues again and gives them to the same [`Queue`]s.
    ///
    /// # Safety
    ///
    /// As [`Self::reset_prepare`].
    unsafe fn reset_done(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: Guaranteed by the caller.
        let set = unsafe { Self::from_device(vdev) };
        let mut life = set.lifecycle.lock();
        if life.phase != State::Reset {
            return if life.phase == State::Live {
                0
            } else {
                ENODEV.to_errno()
            };
        }
        match set.find_again(&mut life) {
            Ok(()) => {}
            Err(e) => return e.to_errno(),
        }
        drop(life);
        H::reset_done(&set.handler, set);
        0
    }

    /// Finds the queues again after a reset and makes them usable.
    fn find_again(&self, life: &mut Lifecycle) -> Result {
        let n = self.info.len();
        // SAFETY: The device was reset and its queues deleted (state `Reset`); process context.
        let vqs = unsafe { Self::find_raw(self.dev.as_raw(), &self.info, self.affinity) }?;
        let mut raw = KVec::with_capacity(n, GFP_KERNEL);
        let all = vqs.iter().all(|vq| !vq.is_null());
        let raw = match (&mut raw, all) {
            (Ok(raw), true) => raw,
            _ => {
                // SAFETY: The queues were just found and are not used.
                unsafe { Self::delete(&self.dev) };
                return Err(ENOMEM);
            }
        };
        for (vq, core) in vqs.iter().zip(self.cores.iter()) {
            // SAFETY: Checked non-null above.
            let vq = unsafe { NonNull::new_unchecked(*vq) };
            // Capacity reserved above.
            let _ = raw.push_within_capacity(vq);
            let _config = core.config.lock();
            let mut ring = core.ring.lock();
            // INVARIANT: A new, empty queue of the device.
            ring.vq = Some(vq);
            ring.resetting = false;
        }
        // INVARIANT: The queues are live again and `raw` holds them in order.
        life.raw = core::mem::take(raw);
        life.phase = State::Live;
        Ok(())
    }

    /// Resets the device and finds its queues again (`virtio_device_reset_prepare()`, then
    /// `virtio_device_reset_done()`); for recovering a device that stopped answering.
    ///
    /// Every token the device held is dropped (a SCSI command is completed with an error,
    /// say); while the reset runs, [`QueueGuard::add`] fails with `EBUSY`. When the queues are
    /// back, [`Handler::reset_done`] runs, then the device is set ready again. Sleeps; must not
    /// be called from [`Handler::reset_done`].
    ///
    /// The reset holds the device lock, so that no probe or remove (which change the binding)
    /// runs meanwhile. A remove may be waiting for the caller (SCSI host removal waits for
    /// error handling, say): the lock is only tried, for up to a second. If it is not free,
    /// the device is still reset and its queues deleted, so that every token comes back, but
    /// they are not found again: the reset fails with `EBUSY`, and the queues stay unusable
    /// until a later reset succeeds or the binding ends.
    pub fn reset(&self) -> Result {
        let dev = self.dev.as_ref().as_raw();
        let mut tries = 0;
        // SAFETY: `dev` is a valid device (we hold a reference to it).
        while unsafe { bindings::device_trylock(dev) } == 0 {
            tries += 1;
            if tries == RESET_LOCK_TRIES {
                self.take_down();
                return Err(EBUSY);
            }
            crate::time::delay::fsleep(crate::time::Delta::from_millis(10));
        }
        let ret = self.reset_locked();
        // SAFETY: Locked above.
        unsafe { bindings::device_unlock(dev) };
        ret
    }

    /// Resets the device and deletes its queues without the device lock, getting every token
    /// back; the first half of a reset ([`Self::reset_prepare`]'s work).
    ///
    /// The lifecycle lock orders this with the end of the binding ([`Self::release_binding`])
    /// and with a reset the transport starts ([`Self::reset_prepare`]), which take it too; a
    /// later reset finds the queues again.
    fn take_down(&self) {
        let mut life = self.lifecycle.lock();
        if life.phase == State::Live {
            // SAFETY: State `Live`; process context (`reset` sleeps).
            unsafe { self.shut_down(&mut life, true) };
            life.phase = State::Reset;
        }
    }

    fn reset_locked(&self) -> Result {
        if self.lifecycle.lock().phase == State::Released {
            return Err(ENODEV);
        }
        // With the device locked and the binding not ended, the device's `priv` is this set,
        // which the forwarders of the driver's `reset_prepare` and `reset_done` reach.
        // SAFETY: The device is valid and bound to a driver that implements both callbacks
        // (the virtio bus abstraction registers them).
        to_result(unsafe { bindings::virtio_device_reset_prepare(self.dev.as_raw()) })?;
        // SAFETY: As above.
        to_result(unsafe { bindings::virtio_device_reset_done(self.dev.as_raw()) })
    }

    /// Returns the driver's typed queues.
    pub fn queues(&self) -> &H::Queues {
        &self.queues
    }

    /// Returns the handler the callbacks reach.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// Returns the number of queues.
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// Returns `true` if there are no queues.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }
}

/// Returns the operations of the virtqueue set of `vdev`, if it has one.
///
/// # Safety
///
/// `vdev` must be a valid device, with no other thread changing its `priv`.
unsafe fn binding_ops(vdev: *mut bindings::virtio_device) -> Option<&'static BindingOps> {
    // SAFETY: `vdev` is valid.
    let set = unsafe { (*vdev).priv_ };
    if set.is_null() {
        return None;
    }
    // SAFETY: A non-null `priv` points to a `Virtqueues<H>` for some `H` (only `find` sets it,
    // and the bus abstraction clears it when a binding starts), whose first field (`repr(C)`) is
    // its operations.
    Some(unsafe { *set.cast::<&'static BindingOps>() })
}

/// Tears down the virtqueue set of `vdev`, if it has one; called by the bus abstraction when the
/// binding ends.
///
/// # Safety
///
/// `vdev` must be a valid device held by the caller, in process context, at the end of probe
/// (on failure) or remove, with no other thread changing its `priv`.
pub(super) unsafe fn release_binding(vdev: *mut bindings::virtio_device) {
    // SAFETY: Guaranteed by the caller.
    if let Some(ops) = unsafe { binding_ops(vdev) } {
        // SAFETY: `ops` belongs to the set in `priv`; the other requirements are ours.
        unsafe { (ops.release)(vdev) };
    }
}

/// Forwards the driver's `reset_prepare` to the virtqueue set of `vdev`.
///
/// # Safety
///
/// `vdev` must be a bound device whose driver's `reset_prepare` runs, in process context, with
/// its probe and remove excluded: [`Virtqueues::reset`] holds the device lock; a transport that
/// resets the device itself (PCI function reset) holds its own device's lock, which the
/// transport's remove (which unbinds the driver) also takes.
pub(super) unsafe fn reset_prepare(vdev: *mut bindings::virtio_device) -> c_int {
    // SAFETY: `priv` changes only in probe and remove, excluded by the caller.
    match unsafe { binding_ops(vdev) } {
        // SAFETY: `ops` belongs to the set in `priv`, which holds a reference to it.
        Some(ops) => unsafe { (ops.reset_prepare)(vdev) },
        None => 0,
    }
}

/// Forwards the driver's `reset_done` to the virtqueue set of `vdev`.
///
/// # Safety
///
/// As [`reset_prepare`].
pub(super) unsafe fn reset_done(vdev: *mut bindings::virtio_device) -> c_int {
    // SAFETY: As in `reset_prepare`.
    match unsafe { binding_ops(vdev) } {
        // SAFETY: As in `reset_prepare`.
        Some(ops) => unsafe { (ops.reset_done)(vdev) },
        None => 0,
    }
}
