// SPDX-License-Identifier: GPL-2.0

//! Pages lent to transmitted socket buffers (zero-copy transmission).
//!
//! A driver that sends pages it does not own, such as a block request's data pages, must not
//! give them back to their owner while the network stack can still read them: a frame waiting
//! in a queue, a clone held by a receiver or a retransmission timer. A [`PageLoan`] tracks that.
//! Every [`SkBuff`] that carries pages under the loan ([`SkBuff::add_lent_page`]) holds a
//! reference to it; so do clones of the buffer and copies of its head (`pskb_expand_head()`),
//! and a path that cannot keep the pages (a packet tap, a receiver on the same host) copies
//! them first and drops its reference (`skb_copy_ubufs()`). When the owner's handles are gone
//! and the last buffer has let go, [`LoanReturn::returned`] runs, once.
//!
//! [`SkBuff`]: crate::net::skbuff::SkBuff
//! [`SkBuff::add_lent_page`]: crate::net::skbuff::SkBuff::add_lent_page
//!
//! It is the kernel's `struct ubuf_info`, as vhost-net and `MSG_ZEROCOPY` use it.
//!
//! C header: [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h)

use crate::{
    alloc::{
        Flags,
        KBox, //
    },
    bindings,
    error::{
        code::ENODEV,
        Result, //
    },
    sync::atomic::{
        Atomic,
        Relaxed, //
    },
    types::Opaque,
    ThisModule, //
};
use core::{
    marker::PhantomData,
    ptr::NonNull, //
};

/// What a lender does when its pages come back.
pub trait LoanReturn: Send + Sync + Sized + 'static {
    /// Called once, when neither a [`PageLoan`] handle nor a socket buffer refers to the loan
    /// any more. `copied` is true if some path copied the pages instead of sending them in
    /// place.
    ///
    /// It runs wherever the last socket buffer is freed: in a softirq, in process context, or
    /// with interrupts disabled. It must not sleep.
    fn returned(self, copied: bool);
}

/// The part of a loan that code outside the lender's module reads.
///
/// # Invariants
///
/// - `ubuf` is first, so a `*mut ubuf_info` of a loan is a `*mut Head` of it.
/// - `module` holds a reference (`try_module_get()`) on the module whose code `finish` and
///   [`LoanReturn::returned`] are, released by [`complete`] after `finish` returns.
#[repr(C)]
struct Head {
    ubuf: Opaque<bindings::ubuf_info>,
    copied: Atomic<u32>,
    module: *mut bindings::module,
    /// Frees the loan and calls [`LoanReturn::returned`] (`finish::<T>`).
    finish: unsafe fn(*mut Head, bool),
}

#[repr(C)]
struct Inner<T> {
    head: Head,
    data: T,
}

/// The operations of every loan: [`complete`] drops one reference.
static OPS: bindings::ubuf_info_ops = bindings::ubuf_info_ops {
    complete: Some(complete),
    link_skb: None,
};

/// Drops one reference to a loan (`ubuf_info_ops::complete`).
///
/// The networking core calls it once for each socket buffer head that referred to the loan
/// when the head is freed or stops referring to it, and [`PageLoan`]'s `Drop` for each handle.
/// It is not generic, so it is code of the kernel image: the last reference drops the module
/// reference after the lender's code returned, never from inside it.
///
/// # Safety
///
/// `uarg` must be a loan's `ubuf_info` on which the caller owns a reference.
unsafe extern "C" fn complete(
    _skb: *mut bindings::sk_buff,
    uarg: *mut bindings::ubuf_info,
    success: bool,
) {
    let head = uarg.cast::<Head>();
    if !success {
        // SAFETY: The loan is alive: the caller holds a reference.
        unsafe { (*head).copied.store(1, Relaxed) };
    }
    // SAFETY: `uarg` is a valid `ubuf_info` on which we own a reference.
    if !unsafe { bindings::refcount_dec_and_test(&raw mut (*uarg).refcnt) } {
        return;
    }
    // SAFETY: We dropped the last reference: the loan is ours alone; the decrement ordered every
    // earlier access to it, including stores to `copied`, before this point.
    let (module, finish, copied) = unsafe {
        (
            (*head).module,
            (*head).finish,
            (*head).copied.load(Relaxed) != 0,
        )
    };
    // SAFETY: The loan is ours alone and `finish` is its own function; `module` (type
    // invariant of `Head`) keeps the code it runs loaded.
    unsafe { finish(head, copied) };
    // SAFETY: The reference taken in `PageLoan::new`; nothing runs in the module's code any more.
    unsafe { bindings::module_put(module) };
}

/// Frees a loan whose last reference was dropped, then calls its owner.
///
/// # Safety
///
/// `head` must be the head of an `Inner<T>` allocated by [`PageLoan::new`], on which no
/// reference is left.
unsafe fn finish<T: LoanReturn>(head: *mut Head, copied: bool) {
    // SAFETY: `Head` is the first field of `Inner<T>` (`repr(C)`), which `PageLoan::new`
    // allocated in a `KBox`; nobody refers to it any more.
    let inner = unsafe { KBox::from_raw(head.cast::<Inner<T>>()) };
    KBox::into_inner(inner).data.returned(copied);
}

/// A handle to pages lent to the network stack, carrying the lender's data `T`.
///
/// Handles are counted with the buffers that carry the pages: [`Clone`] makes another, and
/// [`LoanReturn::returned`] runs when every handle is dropped and every buffer is gone. The
/// loan holds a reference on the lender's module, so the module cannot be unloaded while a
/// buffer of the network stack still has a way into its code.
///
/// # Invariants
///
/// `ptr` points to a live `Inner<T>` allocated by [`PageLoan::new`], on which this handle owns
/// one reference (`head.ubuf.refcnt`); its `ubuf` has `ops == &OPS`.
///
/// # Examples
///
/// ```
/// use kernel::{
///     net::zerocopy::{LoanReturn, PageLoan},
///     prelude::*,
///     sync::atomic::{Atomic, Relaxed},
///     ThisModule,
/// };
///
/// static RETURNED: Atomic<u32> = Atomic::new(0);
///
/// struct Done;
///
/// impl LoanReturn for Done {
///     fn returned(self, _copied: bool) {
///         RETURNED.fetch_add(1, Relaxed);
///     }
/// }
///
/// fn lend_and_return(module: &'static ThisModule) -> Result {
///     let loan = PageLoan::new(Done, module, GFP_KERNEL)?;
///     let again = loan.clone();
///     drop(loan);
///     assert_eq!(RETURNED.load(Relaxed), 0);
///     drop(again);
///     assert_eq!(RETURNED.load(Relaxed), 1);
///     Ok(())
/// }
/// ```
pub struct PageLoan<T: LoanReturn> {
    ptr: NonNull<Inner<T>>,
    _p: PhantomData<Inner<T>>,
}

// SAFETY: A handle only reads `T` through `&T` and the reference count atomically; the last
// reference may be dropped on any thread, which then owns `T` (`T: Send`).
unsafe impl<T: LoanReturn> Send for PageLoan<T> {}

// SAFETY: `&PageLoan` gives `&T` (`T: Sync`) and clones, which count atomically.
unsafe impl<T: LoanReturn> Sync for PageLoan<T> {}

impl<T: LoanReturn> PageLoan<T> {
    /// Starts a loan for the module `module` (the caller's `THIS_MODULE`), carrying `data`.
    ///
    /// Fails with `ENOMEM`, or with `ENODEV` when the module is being unloaded.
    pub fn new(data: T, module: &'static ThisModule, flags: Flags) -> Result<Self> {
        let inner = KBox::new(
            Inner {
                head: Head {
                    ubuf: Opaque::new(bindings::ubuf_info {
                        ops: &OPS,
                        refcnt: bindings::refcount_t::default(),
                        flags: (bindings::SKBFL_ZEROCOPY_ENABLE
                            | bindings::SKBFL_SHARED_FRAG
                            | bindings::SKBFL_DONT_ORPHAN) as u8,
                    }),
                    copied: Atomic::new(0),
                    module: module.as_ptr(),
                    finish: finish::<T>,
                },
                data,
            },
            flags,
        )?;
        // SAFETY: `module` is a module pointer (`ThisModule`'s invariant), and a module may take
        // a reference on itself.
        if !unsafe { bindings::try_module_get(module.as_ptr()) } {
            return Err(ENODEV);
        }
        let ptr = KBox::into_raw(inner);
        // SAFETY: `ptr` is the new loan, not shared yet.
        unsafe { bindings::refcount_set(Self::ubuf_of(ptr).cast(), 1) };
        // INVARIANT: A new loan with one reference, ours; the module reference is held.
        Ok(Self {
            // SAFETY: `KBox::into_raw` never returns null.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            _p: PhantomData,
        })
    }

    /// The reference count of the loan at `ptr`.
    fn ubuf_of(ptr: *mut Inner<T>) -> *mut bindings::refcount_t {
        // SAFETY: Only computes an address inside the allocation `ptr` points to.
        unsafe { &raw mut (*Opaque::cast_into(&raw const (*ptr).head.ubuf)).refcnt }
    }

    /// The loan's `ubuf_info`, for socket buffers.
    pub(crate) fn as_ubuf(&self) -> *mut bindings::ubuf_info {
        // SAFETY: `ptr` is live (type invariant).
        unsafe { Opaque::cast_into(&raw const (*self.ptr.as_ptr()).head.ubuf) }
    }

    /// The lender's data.
    pub fn data(&self) -> &T {
        // SAFETY: `ptr` is live while this handle exists, and `data` is only moved out when no
        // handle is left.
        unsafe { &(*self.ptr.as_ptr()).data }
    }
}

impl<T: LoanReturn> Clone for PageLoan<T> {
    fn clone(&self) -> Self {
        // SAFETY: We own a reference, so the count is not zero.
        unsafe { bindings::refcount_inc(Self::ubuf_of(self.ptr.as_ptr())) };
        // INVARIANT: The increment above is the new handle's reference.
        Self {
            ptr: self.ptr,
            _p: PhantomData,
        }
    }
}

impl<T: LoanReturn> Drop for PageLoan<T> {
    fn drop(&mut self) {
        // SAFETY: We own one reference to a loan whose `ops` is `OPS`.
        unsafe { complete(core::ptr::null_mut(), self.as_ubuf(), true) };
    }
}

// `complete` derives the `Head` from the `ubuf_info`.
const _: () = assert!(core::mem::offset_of!(Head, ubuf) == 0);

#[macros::kunit_tests(rust_net_zerocopy)]
mod tests {
    use super::*;
    use crate::{
        alloc::flags::GFP_KERNEL,
        error::code::{
            EINVAL,
            EMSGSIZE, //
        },
        net::skbuff::SkBuff,
        page::Page,
        sync::Arc, //
    };

    /// Counts returns: how many, and how many were copied.
    struct Probe {
        returned: Atomic<u32>,
        copied: Atomic<u32>,
    }

    struct Lender(Arc<Probe>);

    impl LoanReturn for Lender {
        fn returned(self, copied: bool) {
            self.0.returned.fetch_add(1, Relaxed);
            if copied {
                self.0.copied.fetch_add(1, Relaxed);
            }
        }
    }

    fn loan() -> (Arc<Probe>, PageLoan<Lender>) {
        let probe = Arc::new(
            Probe {
                returned: Atomic::new(0),
                copied: Atomic::new(0),
            },
            GFP_KERNEL,
        )
        .unwrap();
        let module = crate::module::this_module::<crate::LocalModule>();
        let loan = PageLoan::new(Lender(probe.clone()), module, GFP_KERNEL).unwrap();
        (probe, loan)
    }

    fn returned(p: &Probe) -> u32 {
        p.returned.load(Relaxed)
    }

    #[test]
    fn returned_after_the_last_handle() {
        let (p, a) = loan();
        let b = a.clone();
        drop(a);
        assert_eq!(returned(&p), 0);
        drop(b);
        assert_eq!(returned(&p), 1);
        assert_eq!(p.copied.load(Relaxed), 0);
    }

    #[test]
    fn a_buffer_holds_the_loan() {
        let (p, l) = loan();
        let page = Page::alloc_page(GFP_KERNEL).unwrap();
        let mut skb = SkBuff::alloc(64, 32, GFP_KERNEL).unwrap();
        skb.put(32).unwrap();
        // SAFETY: `page` is valid for the call.
        unsafe { skb.add_lent_page(&l, page.as_ptr(), 0, 512) }.unwrap();
        // SAFETY: As above.
        unsafe { skb.add_lent_page(&l, page.as_ptr(), 512, 1024) }.unwrap();
        assert_eq!(skb.len(), 32 + 1536);
        assert_eq!(skb.data().len(), 32);
        // The head cannot grow once pages follow it.
        assert_eq!(skb.put(1).err(), Some(EINVAL));
        drop(l);
        // Neither the page nor the loan is given back while the buffer lives.
        assert_eq!(returned(&p), 0);
        drop(page);
        drop(skb);
        assert_eq!(returned(&p), 1);
    }

    #[test]
    fn a_copy_gives_the_pages_back() {
        let (p, l) = loan();
        let page = Page::alloc_page(GFP_KERNEL).unwrap();
        let mut skb = SkBuff::alloc(64, 32, GFP_KERNEL).unwrap();
        skb.put(32).unwrap();
        // SAFETY: `page` is valid for the call.
        unsafe { skb.add_lent_page(&l, page.as_ptr(), 0, 4096) }.unwrap();
        drop(l);
        let raw = skb.into_raw();
        // SAFETY: `raw` is a valid buffer we own; `skb_copy_ubufs` replaces its lent pages with
        // copies, as a receiver on this host does, and drops its reference to the loan.
        let ret = unsafe { bindings::skb_copy_ubufs(raw, GFP_KERNEL.as_raw()) };
        assert_eq!(ret, 0);
        assert_eq!(returned(&p), 1);
        assert_eq!(p.copied.load(Relaxed), 1);
        // SAFETY: We own `raw`.
        unsafe { bindings::kfree_skb(raw) };
    }

    #[test]
    fn one_loan_per_buffer() {
        let (_p, a) = loan();
        let (_q, b) = loan();
        let page = Page::alloc_page(GFP_KERNEL).unwrap();
        let mut skb = SkBuff::alloc(64, 32, GFP_KERNEL).unwrap();
        // SAFETY: `page` is valid for the call.
        unsafe { skb.add_lent_page(&a, page.as_ptr(), 0, 512) }.unwrap();
        // SAFETY: As above.
        let other = unsafe { skb.add_lent_page(&b, page.as_ptr(), 512, 512) };
        assert_eq!(other.err(), Some(EINVAL));
        // SAFETY: As above.
        let outside = unsafe { skb.add_lent_page(&a, page.as_ptr(), 4000, 512) };
        assert_eq!(outside.err(), Some(EINVAL));
    }

    #[test]
    fn at_most_max_skb_frags() {
        let (_p, l) = loan();
        let page = Page::alloc_page(GFP_KERNEL).unwrap();
        let mut skb = SkBuff::alloc(64, 32, GFP_KERNEL).unwrap();
        for i in 0..bindings::MAX_SKB_FRAGS {
            // SAFETY: `page` is valid for the call.
            unsafe { skb.add_lent_page(&l, page.as_ptr(), i * 64, 64) }.unwrap();
        }
        // SAFETY: As above.
        let more = unsafe { skb.add_lent_page(&l, page.as_ptr(), 0, 64) };
        assert_eq!(more.err(), Some(EMSGSIZE));
    }
}
