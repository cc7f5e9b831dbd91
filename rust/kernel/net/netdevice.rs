// SPDX-License-Identifier: GPL-2.0

//! Network devices and packet handlers.
//!
//! [`NetDevice`] is a reference-counted `struct net_device`: an
//! [`ARef<NetDevice>`] holds a device reference (`dev_hold()`/`dev_put()`).
//! Transmission ([`NetDevice::queue_xmit`]) borrows the device, so a buffer
//! can only be pointed at a device while a reference to it is held: the
//! buffer's `dev` field is set inside that call and nowhere else, and an
//! [`SkBuff`] never carries a device pointer through a queue. (The C AoE
//! driver once dropped its reference between choosing the device and
//! transmitting, a use-after-free this API cannot express.)
//!
//! [`PacketType`] registers a handler for one EtherType (`dev_add_pack()`).
//!
//! [`NetdevNotifier`] tells when a device goes away (`register_netdevice_notifier()`), so that
//! whoever keeps an [`ARef<NetDevice>`] can drop it: the device cannot finish unregistering while
//! a reference is held.
//!
//! Only the initial network namespace is covered.
//!
//! C header: [`include/linux/netdevice.h`](srctree/include/linux/netdevice.h)

use crate::{
    bindings,
    error::{to_result, Error, Result},
    net::skbuff::{
        RxSkBuff,
        SkBuff, //
    },
    prelude::*,
    str::CStr,
    sync::{
        aref::{ARef, AlwaysRefCounted},
        rcu,
    },
    types::Opaque,
};
use core::ptr::NonNull;

/// Length of an Ethernet address.
pub const ETH_ALEN: usize = 6;

/// A network device.
///
/// # Invariants
///
/// Instances are only created as references to a valid `struct net_device`
/// that stays valid while the reference lives (an RCU read-side section, a
/// packet handler call, or a device reference held by [`ARef`]).
#[repr(transparent)]
pub struct NetDevice(Opaque<bindings::net_device>);

// SAFETY: `struct net_device` is used from any thread; the accessors below read
// fields the networking core updates with the matching annotations.
unsafe impl Send for NetDevice {}

// SAFETY: As for `Send`.
unsafe impl Sync for NetDevice {}

// SAFETY: `dev_hold` and `dev_put` manage the device's reference count.
unsafe impl AlwaysRefCounted for NetDevice {
    fn inc_ref(&self) {
        // SAFETY: By the type invariant the device is valid.
        unsafe { bindings::dev_hold(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it holds.
        unsafe { bindings::dev_put(obj.as_ptr().cast()) };
    }
}

impl NetDevice {
    /// # Safety
    ///
    /// `ptr` must be valid for the lifetime `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::net_device) -> &'a Self {
        // SAFETY: `NetDevice` is a transparent wrapper; the caller guarantees
        // validity.
        unsafe { &*ptr.cast() }
    }

    fn as_raw(&self) -> *mut bindings::net_device {
        self.0.get()
    }

    /// Looks up a device of the initial namespace by name and takes a
    /// reference (`dev_get_by_name()`).
    pub fn get_by_name(name: &CStr) -> Option<ARef<Self>> {
        // SAFETY: `init_net` is always valid and `name` is NUL-terminated.
        let dev =
            unsafe { bindings::dev_get_by_name(&raw mut bindings::init_net, name.as_char_ptr()) };
        let dev = NonNull::new(dev)?;
        // SAFETY: `dev_get_by_name` returned a held reference, which we hand
        // to the `ARef`.
        Some(unsafe { ARef::from_raw(dev.cast()) })
    }

    /// Calls `f` for every device of the initial namespace, in an RCU
    /// read-side section (`for_each_netdev_rcu()`). `f` must not sleep; it can
    /// keep a device by taking a reference (`.into()` an [`ARef`]).
    pub fn for_each(mut f: impl FnMut(&NetDevice)) {
        let _guard = rcu::read_lock();
        // SAFETY: `init_net` is always valid.
        let head = unsafe { &raw mut bindings::init_net.dev_base_head };
        // SAFETY: The list is RCU-protected and we are in a read-side section;
        // `list_next_rcu()` is a single-copy read of `next`.
        let mut pos = unsafe { core::ptr::read_volatile(&raw const (*head).next) };
        while pos != head {
            // SAFETY: Every entry of `dev_base_head` is the `dev_list` member
            // of a `struct net_device`.
            let dev = unsafe { crate::container_of!(pos, bindings::net_device, dev_list) };
            // SAFETY: Devices on the list stay valid until an RCU grace period
            // after their removal, which cannot end during this section.
            f(unsafe { Self::from_raw(dev) });
            // SAFETY: As above.
            pos = unsafe { core::ptr::read_volatile(&raw const (*pos).next) };
        }
    }

    /// A copy of the interface name (`netdev_copy_name()`): the name is
    /// rewritten in place when the interface is renamed, so no reference to
    /// it is handed out; the copy is taken under the rename sequence lock and
    /// is never torn. Does not sleep.
    pub fn name(&self) -> IfName {
        let mut name = IfName([0; IFNAMSIZ]);
        // SAFETY: The device is valid; `name.0` has room for `IFNAMSIZ` bytes,
        // which `netdev_copy_name()` fills with a NUL-terminated string.
        unsafe { bindings::netdev_copy_name(self.as_raw(), name.0.as_mut_ptr().cast()) };
        name
    }

    /// The interface index.
    pub fn ifindex(&self) -> i32 {
        // SAFETY: The device is valid; the index does not change.
        unsafe { (*self.as_raw()).ifindex }
    }

    /// The MTU (`READ_ONCE(dev->mtu)`).
    pub fn mtu(&self) -> u32 {
        // SAFETY: The device is valid; the MTU is updated with `WRITE_ONCE`.
        unsafe { core::ptr::read_volatile(&raw const (*self.as_raw()).mtu) }
    }

    /// The hardware address, if it is an Ethernet-sized one.
    pub fn ether_addr(&self) -> Option<[u8; ETH_ALEN]> {
        let dev = self.as_raw();
        // SAFETY: The device is valid; `dev_addr` holds `addr_len` bytes.
        unsafe {
            if (*dev).addr_len as usize != ETH_ALEN || (*dev).dev_addr.is_null() {
                return None;
            }
            let mut a = [0u8; ETH_ALEN];
            core::ptr::copy_nonoverlapping((*dev).dev_addr, a.as_mut_ptr(), ETH_ALEN);
            Some(a)
        }
    }

    /// Whether this is an Ethernet device other than loopback.
    pub fn is_ethernet(&self) -> bool {
        // SAFETY: The device is valid; the type does not change.
        let ty = u32::from(unsafe { (*self.as_raw()).type_ });
        // SAFETY: As above.
        let flags = unsafe { (*self.as_raw()).flags };
        ty == bindings::ARPHRD_ETHER && flags & bindings::net_device_flags_IFF_LOOPBACK == 0
    }

    /// Whether the device is up (`netif_running()`).
    pub fn is_running(&self) -> bool {
        // SAFETY: The device is valid.
        unsafe { bindings::netif_running(self.as_raw()) }
    }

    /// Whether the device has a carrier (`netif_carrier_ok()`).
    pub fn carrier_ok(&self) -> bool {
        // SAFETY: The device is valid.
        unsafe { bindings::netif_carrier_ok(self.as_raw()) }
    }

    /// Whether the device belongs to the initial namespace.
    pub fn in_init_net(&self) -> bool {
        // SAFETY: The device is valid.
        unsafe { bindings::dev_net(self.as_raw()) == &raw mut bindings::init_net }
    }

    /// Transmits `skb` on this device (`dev_queue_xmit()`). The buffer is
    /// consumed whatever the outcome; an error means it was dropped.
    ///
    /// Only with interrupts enabled: `dev_queue_xmit()` disables and enables
    /// bottom halves, which with interrupts off is a bug (and the transmit
    /// lock, taken from softirqs, could deadlock). Called with interrupts off
    /// (under a `SpinLockIrq`, say), it warns, drops the buffer and fails with
    /// `EINVAL` instead.
    pub fn queue_xmit(&self, skb: SkBuff) -> Result {
        // SAFETY: `irqs_disabled` has no preconditions.
        let irqs_off = unsafe { bindings::irqs_disabled() };
        if crate::warn_on!(irqs_off) {
            return Err(EINVAL);
        }
        let skb = skb.into_raw();
        // SAFETY: We own `skb`; the device is valid for this call, which is
        // the only place a buffer is pointed at a device.
        let ret = unsafe {
            (*skb)
                .__bindgen_anon_1
                .__bindgen_anon_1
                .__bindgen_anon_1
                .dev = self.as_raw();
            bindings::dev_queue_xmit(skb)
        };
        // `NET_XMIT_CN` (congestion) still queued the frame.
        match ret {
            0 => Ok(()),
            r if r == bindings::NET_XMIT_CN as i32 => Ok(()),
            r if r < 0 => Err(Error::from_errno(r)),
            _ => Err(crate::error::code::ENOBUFS),
        }
    }
}

/// Length of an interface name buffer, NUL included.
const IFNAMSIZ: usize = bindings::IFNAMSIZ as usize;

/// An interface name, copied out of the device ([`NetDevice::name`]).
///
/// # Invariants
///
/// `self.0` holds a NUL-terminated string.
///
/// # Examples
///
/// ```no_run
/// use kernel::net::netdevice::NetDevice;
/// # use kernel::prelude::*;
/// fn show(dev: &NetDevice) {
///     let name = dev.name();
///     pr_info!("{name}: index {}\n", dev.ifindex());
///     assert!(name.as_bytes().len() < 16);
/// }
/// ```
#[derive(Clone, Copy)]
pub struct IfName([u8; IFNAMSIZ]);

impl IfName {
    /// The name, without its NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        &self.0[..len]
    }

    /// The name as a C string.
    pub fn as_cstr(&self) -> &CStr {
        // By the type invariant there is a NUL in the buffer, after the name.
        CStr::from_bytes_with_nul(&self.0[..=self.as_bytes().len()]).unwrap_or(c"")
    }
}

impl core::fmt::Display for IfName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(s) => f.write_str(s),
            Err(_) => f.write_str("?"),
        }
    }
}

impl crate::fmt::Display for IfName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

/// A handler of received frames of one EtherType.
pub trait PacketHandler: Sync {
    /// Handles a frame received on `dev`, in softirq context. The frame is
    /// read only (see [`RxSkBuff`]); it starts at its link-layer header.
    fn receive(&self, dev: &NetDevice, skb: RxSkBuff);
}

/// A registered packet handler (`struct packet_type`, `dev_add_pack()`).
///
/// # Invariants
///
/// `pt` is registered with the networking core from initialization until
/// drop, with `func` set to `PacketType::func` for `T`.
#[pin_data(PinnedDrop)]
pub struct PacketType<T: PacketHandler> {
    #[pin]
    pt: Opaque<bindings::packet_type>,
    handler: T,
}

// SAFETY: The registration is only touched at init and drop; the handler is
// `Sync`.
unsafe impl<T: PacketHandler + Send> Send for PacketType<T> {}

// SAFETY: `&PacketType` only exposes the `Sync` handler.
unsafe impl<T: PacketHandler> Sync for PacketType<T> {}

impl<T: PacketHandler> PacketType<T> {
    /// Registers `handler` for frames of EtherType `ethertype` on all devices.
    pub fn register(ethertype: u16, handler: T) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            handler,
            pt <- Opaque::ffi_init(move |pt: *mut bindings::packet_type| {
                // SAFETY: `pt` is valid for writes; all-zero is a valid
                // `packet_type` (no device: every device).
                unsafe {
                    pt.write(core::mem::zeroed());
                    (*pt).type_ = ethertype.to_be();
                    (*pt).func = Some(Self::func);
                }
            }),
        })
        .pin_chain(|this| {
            // SAFETY: `this.pt` is initialized and pinned; it stays registered
            // until `drop`, which unregisters it before it is freed.
            unsafe { bindings::dev_add_pack(this.pt.get()) };
            Ok(())
        })
    }

    /// `packet_type.func`.
    ///
    /// # Safety
    ///
    /// Called by the networking core with a buffer reference the callee owns,
    /// the receiving device and the registered `packet_type` of a
    /// [`PacketType<T>`].
    unsafe extern "C" fn func(
        skb: *mut bindings::sk_buff,
        dev: *mut bindings::net_device,
        pt: *mut bindings::packet_type,
        _orig_dev: *mut bindings::net_device,
    ) -> crate::ffi::c_int {
        // SAFETY: `pt` is the `pt` field of a live `PacketType<T>`: it is
        // unregistered (and callbacks drained) before it is dropped.
        let this =
            unsafe { &*crate::container_of!(pt.cast::<Opaque<bindings::packet_type>>(), Self, pt) };
        // SAFETY: The core holds the device for the duration of the callback.
        let dev = unsafe { NetDevice::from_raw(dev) };
        if let Some(skb) = NonNull::new(skb) {
            // SAFETY: We own the buffer reference and hand it over.
            let skb = unsafe { RxSkBuff::from_received(skb) };
            this.handler.receive(dev, skb);
        }
        0
    }
}

#[pinned_drop]
impl<T: PacketHandler> PinnedDrop for PacketType<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant `pt` is registered. `dev_remove_pack`
        // waits (`synchronize_net()`) for running handlers to finish.
        unsafe { bindings::dev_remove_pack(self.pt.get()) };
    }
}

/// Receives the events of network devices that concern reference holders.
pub trait NetdevEvents: Sync {
    /// `dev` is being unregistered (`NETDEV_UNREGISTER`): every [`ARef`] to it must be dropped,
    /// or the unregistration waits. Called in process context with the RTNL lock held; called
    /// again (about once a second) for as long as references remain, and for every device when
    /// the notifier itself is unregistered.
    fn unregister(&self, dev: &NetDevice);
}

/// A registered network device notifier (`struct notifier_block`,
/// `register_netdevice_notifier()`).
///
/// # Invariants
///
/// `nb` is registered from initialization until drop, with `notifier_call` set to
/// `NetdevNotifier::call` for `T`.
#[pin_data(PinnedDrop)]
pub struct NetdevNotifier<T: NetdevEvents> {
    #[pin]
    nb: Opaque<bindings::notifier_block>,
    handler: T,
}

// SAFETY: The registration is only touched at init and drop; the handler is `Sync`.
unsafe impl<T: NetdevEvents + Send> Send for NetdevNotifier<T> {}

// SAFETY: `&NetdevNotifier` only exposes the `Sync` handler.
unsafe impl<T: NetdevEvents> Sync for NetdevNotifier<T> {}

impl<T: NetdevEvents> NetdevNotifier<T> {
    /// Registers `handler` for the events of all network devices.
    pub fn register(handler: T) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            handler,
            nb <- Opaque::ffi_init(|nb: *mut bindings::notifier_block| {
                // SAFETY: `nb` is valid for writes; all-zero is a valid `notifier_block`
                // (default priority, not linked).
                unsafe {
                    nb.write(core::mem::zeroed());
                    (*nb).notifier_call = Some(Self::call);
                }
            }),
        })
        .pin_chain(|this| {
            // SAFETY: `this.nb` is initialized and pinned; on success it stays registered until
            // `drop`, which unregisters it before it is freed.
            to_result(unsafe { bindings::register_netdevice_notifier(this.nb.get()) })
        })
    }

    /// `notifier_block.notifier_call`.
    ///
    /// # Safety
    ///
    /// Called by the networking core with the registered `notifier_block` of a
    /// [`NetdevNotifier<T>`] and, for `NETDEV_*` events, a `struct netdev_notifier_info`.
    unsafe extern "C" fn call(
        nb: *mut bindings::notifier_block,
        event: crate::ffi::c_ulong,
        ptr: *mut crate::ffi::c_void,
    ) -> crate::ffi::c_int {
        if event != bindings::netdev_cmd_NETDEV_UNREGISTER as crate::ffi::c_ulong {
            return bindings::NOTIFY_DONE as crate::ffi::c_int;
        }
        // SAFETY: `nb` is the `nb` field of a live `NetdevNotifier<T>`: it is unregistered
        // before it is dropped, and unregistering waits for running callbacks (RTNL).
        let this = unsafe {
            &*crate::container_of!(nb.cast::<Opaque<bindings::notifier_block>>(), Self, nb)
        };
        // SAFETY: For `NETDEV_*` events `ptr` is a `netdev_notifier_info` naming a device that
        // stays valid during the call.
        let dev = unsafe { NetDevice::from_raw(bindings::netdev_notifier_info_to_dev(ptr.cast())) };
        this.handler.unregister(dev);
        bindings::NOTIFY_DONE as crate::ffi::c_int
    }
}

#[pinned_drop]
impl<T: NetdevEvents> PinnedDrop for NetdevNotifier<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant `nb` is registered. Unregistering takes the RTNL lock,
        // under which callbacks run, so none runs once it returns.
        unsafe { bindings::unregister_netdevice_notifier(self.nb.get()) };
    }
}
