// SPDX-License-Identifier: GPL-2.0

//! CPU hotplug callbacks for one object.
//!
//! A [`Registration`] calls [`Callbacks::online`] for every CPU that is online when it is
//! registered and for every CPU that comes online later, and [`Callbacks::offline`] for every
//! CPU that is about to go offline and, when the registration is dropped, for every online CPU.
//! The callbacks run in process context (the CPU hotplug thread or the registering thread), may
//! sleep, and are serialised with each other and with CPU hotplug.
//!
//! Each registration takes one of the kernel's dynamic hotplug states (`CPUHP_AP_ONLINE_DYN`,
//! a few dozen in all): it is meant for per-device objects, not per-I/O ones.
//!
//! C header: [`include/linux/cpuhotplug.h`](srctree/include/linux/cpuhotplug.h)
//!
//! # Examples
//!
//! ```
//! use kernel::cpu::{hotplug, CpuId};
//! use kernel::prelude::*;
//! use kernel::sync::atomic::{Atomic, Relaxed};
//!
//! struct Count(Atomic<u32>);
//!
//! impl hotplug::Callbacks for Count {
//!     fn online(&self, _cpu: CpuId) {
//!         self.0.add(1, Relaxed);
//!     }
//!     fn offline(&self, _cpu: CpuId) {
//!         self.0.fetch_sub(1, Relaxed);
//!     }
//! }
//!
//! let reg = KBox::pin_init(
//!     hotplug::Registration::new(c"rust/doctest:online", Count(Atomic::new(0))),
//!     GFP_KERNEL,
//! )?;
//! // Every online CPU was reported at registration.
//! assert_eq!(reg.data().0.load(Relaxed), kernel::cpu::num_online());
//! # Ok::<(), Error>(())
//! ```

use crate::{
    bindings,
    cpu::CpuId,
    error::to_result,
    prelude::*,
    types::Opaque, //
};

/// What a [`Registration`] does when CPUs come and go.
pub trait Callbacks: Send + Sync + 'static {
    /// `cpu` is online (at registration, or it just came up).
    fn online(&self, cpu: CpuId);

    /// `cpu` is about to go offline (or the registration is being dropped); it is still in the
    /// online mask.
    fn offline(&self, cpu: CpuId);
}

/// A CPU hotplug registration of one object (a multi-instance dynamic hotplug state with one
/// instance).
///
/// # Invariants
///
/// `state` is a dynamic hotplug state set up with this type's callbacks, to which `node` is
/// added as an instance, until drop.
#[pin_data(PinnedDrop)]
pub struct Registration<T: Callbacks> {
    data: T,
    state: bindings::cpuhp_state,
    #[pin]
    node: Opaque<bindings::hlist_node>,
}

// SAFETY: The registration may be dropped from any thread; `T` is `Send`.
unsafe impl<T: Callbacks> Send for Registration<T> {}
// SAFETY: `&Registration` only gives `&T`, and `T` is `Sync`.
unsafe impl<T: Callbacks> Sync for Registration<T> {}

impl<T: Callbacks> Registration<T> {
    /// Registers `data`, named `name` in `/sys/devices/system/cpu/hotplug/states`; calls
    /// [`Callbacks::online`] for every online CPU before returning.
    pub fn new(name: &'static CStr, data: T) -> impl PinInit<Self, Error> {
        pin_init::pin_init_scope(move || {
            // SAFETY: `name` is a static string; the callbacks are valid functions for this
            // state's instances, which are all `Registration<T>` nodes.
            let ret = unsafe {
                bindings::cpuhp_setup_state_multi(
                    bindings::cpuhp_state_CPUHP_AP_ONLINE_DYN,
                    name.as_char_ptr(),
                    Some(Self::online_callback),
                    Some(Self::offline_callback),
                )
            };
            to_result(ret)?;
            // A dynamic state is returned as a positive number.
            let dynamic = ret as bindings::cpuhp_state;
            Ok(try_pin_init!(Self {
                data,
                state: dynamic,
                node <- Opaque::try_ffi_init(move |node: *mut bindings::hlist_node| {
                    // SAFETY: `dynamic` was set up above; `node` is pinned inside a
                    // `Registration<T>` whose `data` is initialised (fields are initialised
                    // in order), and stays there until drop removes it.
                    let r = unsafe { bindings::cpuhp_state_add_instance(dynamic, node) };
                    if r != 0 {
                        // SAFETY: The state was set up above and has no instance.
                        unsafe { bindings::cpuhp_remove_multi_state(dynamic) };
                    }
                    to_result(r)
                }),
            }))
        })
    }

    /// Returns the registered data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// # Safety
    ///
    /// `node` must be the node of a live `Registration<T>`.
    unsafe fn from_node<'a>(node: *mut bindings::hlist_node) -> &'a Self {
        // SAFETY: By the safety requirements `node` is the `node` field of a `Registration<T>`
        // (`Opaque` is transparent).
        let this = unsafe {
            crate::container_of!(node.cast::<Opaque<bindings::hlist_node>>(), Self, node)
        };
        // SAFETY: The registration is live, see above.
        unsafe { &*this }
    }

    extern "C" fn online_callback(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
        // SAFETY: The hotplug core calls this with an instance of the state, a live
        // registration (instances are removed before they are dropped).
        let this = unsafe { Self::from_node(node) };
        if let Some(cpu) = CpuId::from_u32(cpu) {
            this.data.online(cpu);
        }
        0
    }

    extern "C" fn offline_callback(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
        // SAFETY: As in `online_callback`.
        let this = unsafe { Self::from_node(node) };
        if let Some(cpu) = CpuId::from_u32(cpu) {
            this.data.offline(cpu);
        }
        0
    }
}

#[pinned_drop]
impl<T: Callbacks> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant `node` is an instance of `state`; removing it calls the
        // offline callback for every online CPU and waits for running callbacks.
        unsafe { bindings::cpuhp_state_remove_instance(self.state, self.node.get()) };
        // SAFETY: The state has no instance left.
        unsafe { bindings::cpuhp_remove_multi_state(self.state) };
    }
}
