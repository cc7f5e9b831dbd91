// SPDX-License-Identifier: GPL-2.0

//! Virtqueues: the rings a virtio driver shares with its device.
//!
//! [`Virtqueues::find`] asks the transport for a device's queues (`virtio_find_vqs()`) and routes
//! every queue's interrupt to a [`Handler`]. Each queue sits behind its own IRQ-safe spinlock, as
//! the C API requires external serialisation of `virtqueue_add_sgs()`, `virtqueue_get_buf()` and
//! the callback enabling functions; [`Virtqueues::notify`] is the one operation made outside the
//! lock, as in C drivers.
//!
//! Buffers are passed to the device by handing it a *token*, a value that owns the memory the
//! device reads and writes ([`DeviceBuffers`]); the device owns the token until
//! [`Virtqueue::get_buf`] returns it. Dropping [`Virtqueues`] resets the device, deletes the
//! queues and drops the tokens the device still held.
//!
//! C header: [`include/linux/virtio.h`](srctree/include/linux/virtio.h)

use super::Device;
use crate::{
    alloc::Flags,
    bindings,
    cpumask::Cpumask,
    device,
    error::to_result,
    new_spinlock_irq,
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        SpinLockIrq,
        SpinLockIrqGuard, //
    },
    types::ForeignOwnable,
};
use core::{
    any::TypeId,
    marker::PhantomData,
    ptr::{self, NonNull},
};

/// Most scatter-gather entries (headers plus data chains) a token may describe.
pub const MAX_SGS: usize = 8;

/// Receives the interrupts of a set of virtqueues.
pub trait Handler: Send + Sync + Sized + 'static {
    /// Called, usually in interrupt context, when the device has used buffers of queue `index`
    /// (`vq_callback_t`).
    fn callback(&self, vqs: &Virtqueues<Self>, index: usize);
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
    /// [`Virtqueues::set_affinity`] and the interrupts move when CPUs go offline.
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

    /// Adds a chain of scatterlist entries (terminated by `sg_mark_end()`).
    ///
    /// # Safety
    ///
    /// `sgl` must be a valid, terminated scatterlist whose memory stays valid, and is not
    /// otherwise accessed when `writable`, for the borrow `'a`.
    pub(crate) unsafe fn chain(
        &mut self,
        sgl: *mut bindings::scatterlist,
        writable: bool,
    ) -> Result {
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
/// - Buffers added as writable are not accessed by anything but the device during that time.
pub unsafe trait DeviceBuffers: ForeignOwnable + 'static {
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
// foreign hands, and the box is the only owner of its contents.
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

/// One virtqueue, reached through the lock of [`Virtqueues::lock`].
///
/// # Invariants
///
/// `vq` is a valid `struct virtqueue` of the device, until [`Virtqueues`] is dropped. All tokens
/// in the queue are of the type whose [`TypeId`] is in `token` and are dropped with `drop_token`.
pub struct Virtqueue {
    vq: NonNull<bindings::virtqueue>,
    token: Option<(TypeId, unsafe fn(*mut c_void))>,
}

// SAFETY: A virtqueue may be used from any thread; exclusive access is given by the lock around it.
unsafe impl Send for Virtqueue {}

unsafe fn drop_token<T: ForeignOwnable>(ptr: *mut c_void) {
    // SAFETY: By the safety requirements, `ptr` came from `T::into_foreign` and is given up.
    drop(unsafe { T::from_foreign(ptr) });
}

impl Virtqueue {
    fn as_raw(&self) -> *mut bindings::virtqueue {
        self.vq.as_ptr()
    }

    fn check_token<T: DeviceBuffers>(&mut self) -> Result {
        let id = TypeId::of::<T>();
        match self.token {
            None => {
                self.token = Some((id, drop_token::<T>));
                Ok(())
            }
            Some((t, _)) if t == id => Ok(()),
            Some(_) => Err(EINVAL),
        }
    }

    /// Exposes the buffers of `data` to the device (`virtqueue_add_sgs()`).
    ///
    /// On failure `data` is given back with the error: `ENOSPC` when the ring is full, `EIO`
    /// when the device is broken, `EINVAL` when `data` is not the queue's token type or its
    /// buffers cannot be described.
    pub fn add_sgs<T: DeviceBuffers>(&mut self, mut data: T, gfp: Flags) -> Result<(), (Error, T)> {
        if let Err(e) = self.check_token::<T>() {
            return Err((e, data));
        }
        let mut sg = SgList::new();
        if let Err(e) = data.describe(&mut sg) {
            return Err((e, data));
        }
        let (entries, len, out) = (sg.entries, sg.len, sg.readable);
        if len == 0 {
            return Err((EINVAL, data));
        }
        // The scatterlist entries for single buffers only need to live during the call.
        // SAFETY: An all-zero `struct scatterlist` is valid.
        let mut ones: [bindings::scatterlist; MAX_SGS] = unsafe { core::mem::zeroed() };
        let mut heads = [ptr::null_mut::<bindings::scatterlist>(); MAX_SGS];
        for i in 0..len {
            heads[i] = match entries[i] {
                SgEntry::One(buf, l) => {
                    // SAFETY: `ones[i]` is a valid scatterlist entry to initialise and `buf` is
                    // `l` bytes in the linear map, as checked by `SgList::one()`.
                    unsafe { bindings::sg_init_one(&mut ones[i], buf.cast(), l) };
                    &mut ones[i]
                }
                SgEntry::Chain(sgl) => sgl,
                SgEntry::None => return Err((EINVAL, data)),
            };
        }
        let token = data.into_foreign();
        // SAFETY: By the type invariant `self.as_raw()` is valid; the lock around `self` gives the
        // exclusive access the function requires; `heads[..len]` are terminated scatterlists of
        // memory owned by `token` (the `DeviceBuffers` contract) and `out` of them are readable.
        let ret = unsafe {
            bindings::virtqueue_add_sgs(
                self.as_raw(),
                heads.as_mut_ptr(),
                out as u32,
                (len - out) as u32,
                token,
                gfp.as_raw(),
            )
        };
        if ret != 0 {
            // SAFETY: The device did not take `token`, so it is still owned here.
            return Err((Error::from_errno(ret), unsafe { T::from_foreign(token) }));
        }
        Ok(())
    }

    /// Takes back a token the device has used, with the number of bytes it wrote
    /// (`virtqueue_get_buf()`).
    ///
    /// Returns `None` when no used buffer is pending or `T` is not the queue's token type.
    pub fn get_buf<T: DeviceBuffers>(&mut self) -> Option<(T, u32)> {
        match self.token {
            Some((t, _)) if t == TypeId::of::<T>() => {}
            _ => return None,
        }
        let mut len = 0u32;
        // SAFETY: `self.as_raw()` is valid and the lock gives exclusive access.
        let token = unsafe { bindings::virtqueue_get_buf(self.as_raw(), &mut len) };
        if token.is_null() {
            return None;
        }
        // SAFETY: Every token in the queue came from `T::into_foreign` (type checked above and by
        // `add_sgs`), and the device has given this one back.
        Some((unsafe { T::from_foreign(token) }, len))
    }

    /// Prepares a notification of the device; returns whether it is needed
    /// (`virtqueue_kick_prepare()`). Call [`Virtqueues::notify`] after dropping the lock.
    pub fn kick_prepare(&mut self) -> bool {
        // SAFETY: `self.as_raw()` is valid and the lock gives exclusive access.
        unsafe { bindings::virtqueue_kick_prepare(self.as_raw()) }
    }

    /// Asks the device not to interrupt for used buffers (`virtqueue_disable_cb()`).
    pub fn disable_cb(&mut self) {
        // SAFETY: `self.as_raw()` is valid and the lock gives exclusive access.
        unsafe { bindings::virtqueue_disable_cb(self.as_raw()) }
    }

    /// Re-enables interrupts; returns `false` if used buffers arrived meanwhile, which the
    /// caller must then process (`virtqueue_enable_cb()`).
    pub fn enable_cb(&mut self) -> bool {
        // SAFETY: `self.as_raw()` is valid and the lock gives exclusive access.
        unsafe { bindings::virtqueue_enable_cb(self.as_raw()) }
    }

    /// Returns the number of free descriptors.
    pub fn num_free(&self) -> u32 {
        // SAFETY: `self.as_raw()` is valid.
        unsafe { (*self.as_raw()).num_free }
    }
}

/// The virtqueues of a device, with the handler their callbacks reach.
///
/// # Invariants
///
/// - `queues[i]` holds the `i`-th queue found for `dev`; the `priv` of `dev` points to `self`
///   (the driver's field of `struct virtio_device`; the queues' own `priv` belongs to the
///   transport).
/// - The queues exist until `self` is dropped.
pub struct Virtqueues<H: Handler> {
    dev: ARef<Device>,
    raw: KVec<NonNull<bindings::virtqueue>>,
    queues: KVec<Pin<KBox<SpinLockIrq<Virtqueue>>>>,
    handler: Arc<H>,
}

// SAFETY: The raw queue pointers are only used under the per-queue locks or with functions that
// the C API allows concurrently (`virtqueue_notify()`, `virtqueue_get_vring_size()`).
unsafe impl<H: Handler> Send for Virtqueues<H> {}
// SAFETY: As above.
unsafe impl<H: Handler> Sync for Virtqueues<H> {}

impl<H: Handler> Virtqueues<H> {
    extern "C" fn callback(vq: *mut bindings::virtqueue) {
        // SAFETY: The virtio core calls this with a valid queue of ours, whose device is valid.
        let (set, index) = unsafe { ((*(*vq).vdev).priv_.cast::<Self>(), (*vq).index) };
        if set.is_null() {
            // The device used a buffer before any was added: nothing to do.
            return;
        }
        // SAFETY: The device's `priv` points to the `Virtqueues` that owns the queue, which
        // resets the device (so no callback runs any more) before it is freed.
        let set = unsafe { &*set };
        H::callback(&set.handler, set, index as usize);
    }

    /// Finds the device's queues (`virtio_find_vqs()`), one per element of `info`, and routes
    /// their interrupts to `handler`.
    ///
    /// The set takes the driver's `priv` field of the device, so a driver finds its queues once
    /// per probe.
    pub fn find(
        dev: &Device<device::Core<'_>>,
        info: &[QueueInfo],
        affinity: Affinity,
        handler: Arc<H>,
    ) -> Result<Arc<Self>> {
        let n = info.len();
        let mut raw_info = KVec::with_capacity(n, GFP_KERNEL)?;
        for q in info {
            raw_info.push(
                bindings::virtqueue_info {
                    name: q.name.as_char_ptr(),
                    callback: if q.callback {
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
                &mut desc as *mut _
            }
        };
        // SAFETY: `dev` is being probed; `vqs` and `raw_info` have `n` elements each.
        to_result(unsafe {
            bindings::virtio_find_vqs(
                dev.as_raw(),
                n as u32,
                vqs.as_mut_ptr(),
                raw_info.as_mut_ptr(),
                desc_ptr,
            )
        })?;

        let dev: ARef<Device> = (&**dev).into();
        let del = |dev: &Device| {
            // SAFETY: The queues were found above and are not used by anyone else yet.
            unsafe { Self::delete(dev, true) };
        };

        let mut raw = KVec::with_capacity(n, GFP_KERNEL).inspect_err(|_| del(&dev))?;
        let mut queues = KVec::with_capacity(n, GFP_KERNEL).inspect_err(|_| del(&dev))?;
        for vq in vqs.iter() {
            let Some(vq) = NonNull::new(*vq) else {
                del(&dev);
                return Err(EINVAL);
            };
            raw.push(vq, GFP_KERNEL).inspect_err(|_| del(&dev))?;
            let q = KBox::pin_init(
                new_spinlock_irq!(Virtqueue { vq, token: None }, "virtqueue"),
                GFP_KERNEL,
            )
            .inspect_err(|_| del(&dev))?;
            queues.push(q, GFP_KERNEL).inspect_err(|_| del(&dev))?;
        }
        let set = Arc::new(
            Self {
                dev: dev.clone(),
                raw,
                queues,
                handler,
            },
            GFP_KERNEL,
        )
        .inspect_err(|_| del(&dev))?;
        let me: *const Self = &*set;
        // SAFETY: `priv` of a virtio device is the driver's; no buffer is in the queues yet, so
        // no callback reads it concurrently.
        // INVARIANT: the device's `priv` points to the set that owns its queues.
        unsafe { (*set.dev.as_raw()).priv_ = me.cast_mut().cast() };
        Ok(set)
    }

    /// Deletes the device's queues, first resetting the device if `reset`.
    ///
    /// # Safety
    ///
    /// The queues of `dev` must have been found, the device must be reset (or `reset` true),
    /// and the queues must not be used afterwards.
    unsafe fn delete(dev: &Device, reset: bool) {
        if reset {
            // SAFETY: `dev` is valid; resetting stops the device from using any queue and waits
            // for running callbacks.
            unsafe { bindings::virtio_reset_device(dev.as_raw()) };
        }
        // SAFETY: `config` is set by the transport, which implements `del_vqs`.
        unsafe {
            if let Some(del_vqs) = (*(*dev.as_raw()).config).del_vqs {
                del_vqs(dev.as_raw());
            }
        }
    }

    /// Returns the number of queues.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Returns `true` if there are no queues.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Returns the handler the callbacks reach.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// Locks queue `index` for adding or taking buffers.
    pub fn lock(&self, index: usize) -> SpinLockIrqGuard<'_, Virtqueue> {
        self.queues[index].lock()
    }

    /// Notifies the device of new buffers in queue `index`, after [`Virtqueue::kick_prepare`]
    /// returned `true` (`virtqueue_notify()`). Returns `false` if the device is broken.
    pub fn notify(&self, index: usize) -> bool {
        // SAFETY: By the type invariant the queue is valid; `virtqueue_notify()` needs no lock.
        unsafe { bindings::virtqueue_notify(self.raw[index].as_ptr()) }
    }

    /// Returns the number of descriptors of queue `index` (`virtqueue_get_vring_size()`).
    pub fn vring_size(&self, index: usize) -> u32 {
        // SAFETY: By the type invariant the queue is valid.
        unsafe { bindings::virtqueue_get_vring_size(self.raw[index].as_ptr()) }
    }

    /// Hints the CPUs that should take the interrupts of queue `index`
    /// (`virtqueue_set_affinity()`). Meaningful with [`Affinity::Unmanaged`].
    pub fn set_affinity(&self, index: usize, mask: &Cpumask) -> Result {
        // SAFETY: By the type invariant the queue is valid; `mask` is a valid cpumask.
        to_result(unsafe {
            bindings::virtqueue_set_affinity(self.raw[index].as_ptr(), mask.as_raw())
        })
    }
}

impl<H: Handler> Drop for Virtqueues<H> {
    fn drop(&mut self) {
        // SAFETY: `self.dev` is valid; resetting stops the device from using any queue and waits
        // for running callbacks.
        unsafe { bindings::virtio_reset_device(self.dev.as_raw()) };
        // The device is reset: the tokens it still held are ours again.
        for (vq, q) in self.raw.iter().zip(self.queues.iter()) {
            let Some((_, drop_token)) = q.lock().token else {
                continue;
            };
            loop {
                // SAFETY: The queue is valid and the device no longer uses it.
                let token = unsafe { bindings::virtqueue_detach_unused_buf(vq.as_ptr()) };
                if token.is_null() {
                    break;
                }
                // SAFETY: Every token of this queue came from `into_foreign` of the type whose
                // drop function was recorded by `add_sgs`.
                unsafe { drop_token(token) };
            }
        }
        // SAFETY: The queues are unused from now on (type invariant: they live as long as
        // `self`); `del_vqs` is implemented by every transport.
        unsafe { Self::delete(&self.dev, false) };
        // SAFETY: No callback runs any more; the field is the driver's.
        unsafe { (*self.dev.as_raw()).priv_ = ptr::null_mut() };
    }
}
