// SPDX-License-Identifier: GPL-2.0

//! Virtio bus: drivers, devices and their configuration space.
//!
//! A virtio driver declares the device IDs and feature bits it supports with a [`Driver`]
//! implementation; the virtio core calls [`Driver::probe`] for each matching device. The driver
//! then reads the device's configuration space ([`Device::cread`] of a [`ConfigField`]), finds its
//! virtqueues ([`virtqueue::Virtqueues::find`]) and sets the device ready ([`Device::ready`]).
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h) and
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h).

use crate::{
    bindings,
    device,
    device_id::RawDeviceId,
    driver,
    error::{
        from_result,
        to_result, //
    },
    prelude::*,
    types::Opaque,
    ThisModule, //
};
use core::{
    marker::PhantomData,
    mem::offset_of,
    pin::Pin,
    ptr::{
        addr_of_mut,
        NonNull, //
    },
};

pub mod virtqueue;

/// An adapter for the registration of virtio drivers.
pub struct Adapter<T: Driver>(T);

// SAFETY:
// - `bindings::virtio_driver` is a C type declared as `repr(C)`.
// - `T::Data` is the type of the driver's device private data.
// - `struct virtio_driver` embeds a `struct device_driver`.
// - `DEVICE_DRIVER_OFFSET` is the correct byte offset to the embedded `struct device_driver`.
unsafe impl<T: Driver> driver::DriverLayout for Adapter<T> {
    type DriverType = bindings::virtio_driver;
    type DriverData<'bound> = T::Data<'bound>;
    const DEVICE_DRIVER_OFFSET: usize = offset_of!(Self::DriverType, driver);
}

// SAFETY: A call to `unregister` for a given instance of `DriverType` is guaranteed to be valid if
// a preceding call to `register` has been successful.
unsafe impl<T: Driver + 'static> driver::RegistrationOps for Adapter<T> {
    unsafe fn register(
        vdrv: &Opaque<Self::DriverType>,
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result {
        // SAFETY: It's safe to set the fields of `struct virtio_driver` on initialization.
        unsafe {
            let drv = vdrv.get();
            (*drv).driver.name = name.as_char_ptr();
            (*drv).id_table = T::ID_TABLE.as_ptr();
            (*drv).feature_table = T::FEATURES.as_ptr();
            (*drv).feature_table_size = T::FEATURES.len() as u32;
            (*drv).probe = Some(Self::probe_callback);
            (*drv).remove = Some(Self::remove_callback);
            (*drv).reset_prepare = Some(Self::reset_prepare_callback);
            (*drv).reset_done = Some(Self::reset_done_callback);
        }

        // SAFETY: `vdrv` is guaranteed to be a valid `DriverType`.
        to_result(unsafe { bindings::__register_virtio_driver(vdrv.get(), module.as_ptr()) })
    }

    unsafe fn unregister(vdrv: &Opaque<Self::DriverType>) {
        // SAFETY: `vdrv` is guaranteed to be a valid, registered `DriverType`.
        unsafe { bindings::unregister_virtio_driver(vdrv.get()) }
    }
}

impl<T: Driver + 'static> Adapter<T> {
    extern "C" fn probe_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The virtio core only ever calls the probe callback with a valid pointer to a
        // `struct virtio_device`.
        //
        // INVARIANT: `vdev` is valid for the duration of `probe_callback()`.
        let vdev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        // The binding starts: the driver's `priv` field is ours, and whatever an earlier driver
        // of the device left there (C drivers do not clear it) means nothing.
        // SAFETY: `vdev` is valid; nobody else uses `priv` while a driver binds.
        unsafe { (*vdev.as_raw()).priv_ = core::ptr::null_mut() };

        from_result(|| {
            let data = T::probe(vdev);

            if let Err(e) = vdev.as_ref().set_drvdata(data) {
                // The binding failed: its virtqueues go with it.
                // SAFETY: `vdev` is valid and held by the core for the probe, in process
                // context; the failed probe left nothing that uses its queues.
                unsafe { virtqueue::release_binding(vdev.as_raw()) };
                return Err(e);
            }
            Ok(0)
        })
    }

    extern "C" fn reset_prepare_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The virtio core calls this for a bound device of ours, in process context,
        // from `virtqueue::Virtqueues::reset` (device locked) or from its transport's reset
        // (transport device locked, which excludes the transport's remove).
        unsafe { virtqueue::reset_prepare(vdev) }
    }

    extern "C" fn reset_done_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: As in `reset_prepare_callback`.
        unsafe { virtqueue::reset_done(vdev) }
    }

    extern "C" fn remove_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio core only ever calls the remove callback with a valid pointer to a
        // `struct virtio_device`.
        //
        // INVARIANT: `vdev` is valid for the duration of `remove_callback()`.
        let vdev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        // SAFETY: `remove_callback` is only ever called after a successful call to
        // `probe_callback`, hence it's guaranteed that `Device::set_drvdata()` has been called
        // and stored a `Pin<KBox<T::Data<'_>>>`.
        let data = unsafe { vdev.as_ref().drvdata_borrow::<T::Data<'_>>() };

        T::unbind(vdev, data);

        // The binding ends: its virtqueues are torn down (the core requires the device to be
        // reset when `remove` returns); references the driver still holds see them gone.
        // SAFETY: `vdev` is valid and held by the core for the remove, in process context.
        unsafe { virtqueue::release_binding(vdev.as_raw()) };
    }
}

/// Declares a kernel module that exposes a single virtio driver.
#[macro_export]
macro_rules! module_virtio_driver {
    ($($f:tt)*) => {
        $crate::module_driver!(<T>, $crate::virtio::Adapter<T>, { $($f)* });
    };
}

/// Abstraction for `struct virtio_device_id`.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct DeviceId(bindings::virtio_device_id);

impl DeviceId {
    /// Matches virtio devices of type `device` (`VIRTIO_ID_*`) from any vendor.
    pub const fn new(device: u32) -> Self {
        Self(bindings::virtio_device_id {
            device,
            vendor: bindings::VIRTIO_DEV_ANY_ID,
        })
    }
}

// SAFETY: `DeviceId` is a `#[repr(transparent)]` wrapper of `virtio_device_id` and does not add
// additional invariants, so it's safe to transmute to `RawType`.
unsafe impl RawDeviceId for DeviceId {
    type RawType = bindings::virtio_device_id;
}

/// The table of device IDs of a virtio driver.
pub type IdTable = &'static dyn crate::device_id::IdTable<DeviceId, ()>;

/// Creates a virtio device ID table with its alias for modpost.
///
/// Virtio device IDs carry no driver data.
#[macro_export]
macro_rules! virtio_device_table {
    ($table_name:ident, [$($id:expr),* $(,)?]) => {
        $crate::module_device_table!("virtio", $crate::virtio::DeviceId, $table_name, @none,
                                     [$($id),*]);
    };
}

/// The virtio driver trait.
///
/// Drivers implement this trait to be registered with [`module_virtio_driver!`].
pub trait Driver {
    /// The type of the driver's device private data.
    type Data<'bound>: Send + 'bound;

    /// The table of device IDs supported by the driver.
    const ID_TABLE: IdTable;

    /// The feature bits the driver supports; the core negotiates their intersection with the
    /// device's and [`Device::has_feature`] reports the result.
    const FEATURES: &'static [u32];

    /// Virtio driver probe.
    ///
    /// Called when a virtio device matches the driver. Before returning, a driver that needs the
    /// device to process requests during probe (for example to scan for disks) calls
    /// [`Device::ready`]; otherwise the core sets the device ready after probe returns.
    fn probe<'bound>(
        dev: &'bound Device<device::Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound;

    /// Virtio driver unbind.
    ///
    /// Called when the device is removed or the driver unregistered, before the private data is
    /// dropped. Implementing this callback is optional.
    fn unbind<'bound>(dev: &'bound Device<device::Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        let _ = (dev, this);
    }
}

/// A virtio device.
///
/// This is the Rust abstraction for a C `struct virtio_device` created by a virtio transport
/// (PCI, MMIO, ...).
///
/// # Invariants
///
/// A [`Device`] instance represents a valid `struct virtio_device` created by the C portion of the
/// kernel.
#[repr(transparent)]
pub struct Device<Ctx: device::DeviceContext = device::Normal>(
    Opaque<bindings::virtio_device>,
    PhantomData<Ctx>,
);

impl<Ctx: device::DeviceContext> Device<Ctx> {
    pub(crate) fn as_raw(&self) -> *mut bindings::virtio_device {
        self.0.get()
    }

    /// Returns the device type (`VIRTIO_ID_*`).
    pub fn device_id(&self) -> u32 {
        // SAFETY: By the type invariant `self.as_raw()` is a valid `struct virtio_device`.
        unsafe { (*self.as_raw()).id.device }
    }

    /// Returns the bus index of the device (the `N` of `virtioN`).
    pub fn index(&self) -> i32 {
        // SAFETY: By the type invariant `self.as_raw()` is a valid `struct virtio_device`.
        unsafe { (*self.as_raw()).index }
    }

    /// Returns whether the feature bit `fbit` was negotiated (`virtio_has_feature()`).
    pub fn has_feature(&self, fbit: u32) -> bool {
        // SAFETY: By the type invariant `self.as_raw()` is a valid `struct virtio_device`.
        unsafe { bindings::virtio_has_feature(self.as_raw(), fbit) }
    }
}

/// A value of the configuration space: an unsigned integer of 8, 16, 32 or 64 bits.
///
/// Sealed: the configuration space is read only in these widths.
pub trait ConfigValue: Copy + private::Sealed {
    #[doc(hidden)]
    const SIZE: usize;

    /// Reads the value at `offset` (`virtio_cread*()`).
    ///
    /// # Safety
    ///
    /// `dev` must be a valid device whose transport implements `config->get`, and `offset` plus
    /// [`Self::SIZE`] must be within its configuration space.
    #[doc(hidden)]
    unsafe fn read(dev: *mut bindings::virtio_device, offset: u32) -> Self;
}

mod private {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

macro_rules! impl_config_value {
    ($($t:ty => $read:ident),*) => {$(
        impl ConfigValue for $t {
            const SIZE: usize = core::mem::size_of::<$t>();

            unsafe fn read(dev: *mut bindings::virtio_device, offset: u32) -> Self {
                // SAFETY: Guaranteed by the caller.
                unsafe { bindings::$read(dev, offset) }
            }
        }
    )*};
}

impl_config_value!(
    u8 => virtio_cread8,
    u16 => virtio_cread16,
    u32 => virtio_cread32,
    u64 => virtio_cread64
);

/// A field of type `V` of the configuration space whose layout is `C` (the device type's
/// `struct virtio_*_config`), made with [`virtio_config_field!`](crate::virtio_config_field).
///
/// # Invariants
///
/// `offset + size_of::<V>() <= size_of::<C>()`: a field lies within the configuration space
/// declared by `C`, which is checked when the field is made (at compile time for a constant).
///
/// # Examples
///
/// ```no_run
/// use kernel::virtio::{ConfigField, Device};
/// use kernel::{device::Core, prelude::*, virtio_config_field};
///
/// #[repr(C)]
/// struct BlkConfig {
///     capacity: u64,
///     size_max: u32,
/// }
///
/// const CAPACITY: ConfigField<BlkConfig, u64> = virtio_config_field!(BlkConfig, capacity, u64);
///
/// fn capacity(dev: &Device<Core<'_>>) -> Result<u64> {
///     dev.cread(CAPACITY)
/// }
/// ```
///
/// A field outside the declared layout does not compile:
///
/// ```ignore,compile_fail
/// use kernel::virtio::ConfigField;
/// #[repr(C)]
/// struct Small {
///     a: u16,
/// }
/// const BAD: ConfigField<Small, u32> = ConfigField::new(0); // 4 bytes in a 2-byte space
/// ```
pub struct ConfigField<C, V: ConfigValue> {
    offset: u32,
    _p: PhantomData<fn() -> (C, V)>,
}

impl<C, V: ConfigValue> Clone for ConfigField<C, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, V: ConfigValue> Copy for ConfigField<C, V> {}

impl<C, V: ConfigValue> ConfigField<C, V> {
    /// Makes the field of `V` at byte `offset` of layout `C`. The bounds check is a build
    /// assertion: an offset out of `C` fails to compile in a constant, and fails to link where
    /// the offset is not known at build time, so no out-of-bounds field exists at run time.
    #[inline(always)]
    pub const fn new(offset: usize) -> Self {
        crate::build_assert::build_assert!(
            offset + V::SIZE <= core::mem::size_of::<C>(),
            "configuration field out of bounds"
        );
        // INVARIANT: Checked above.
        Self {
            offset: offset as u32,
            _p: PhantomData,
        }
    }
}

/// Makes the [`ConfigField`] of field `$field` (of type `$ty`) of configuration layout `$c`.
#[macro_export]
macro_rules! virtio_config_field {
    ($c:ty, $field:ident, $ty:ty) => {{
        const F: $crate::virtio::ConfigField<$c, $ty> =
            $crate::virtio::ConfigField::new(::core::mem::offset_of!($c, $field));
        // The field has the type given.
        const _: fn(&$c) -> &$ty = |c| &c.$field;
        F
    }};
}

impl Device<device::Core<'_>> {
    fn config_get_ok(&self) -> Result {
        // SAFETY: By the type invariant `self.as_raw()` is a valid `struct virtio_device` whose
        // `config` operations are set by its transport.
        let get = unsafe { (*(*self.as_raw()).config).get };
        if get.is_none() {
            dev_err!(self.as_ref(), "config space access is disabled\n");
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Reads a field of the configuration space (`virtio_cread8/16/32/64()`).
    ///
    /// The field lies within the configuration layout `C` by the invariant of [`ConfigField`];
    /// the device's configuration space has that layout (the virtio specification fixes it per
    /// device type).
    pub fn cread<C, V: ConfigValue>(&self, field: ConfigField<C, V>) -> Result<V> {
        self.config_get_ok()?;
        // SAFETY: `self.as_raw()` is valid and its transport implements `config->get` (checked
        // above); the field lies within the configuration space (invariant of `ConfigField`).
        Ok(unsafe { V::read(self.as_raw(), field.offset) })
    }

    /// Writes a 32-bit field of the configuration space (`virtio_cwrite32()`).
    pub fn cwrite32<C>(&self, field: ConfigField<C, u32>, value: u32) -> Result {
        // SAFETY: By the type invariant `self.as_raw()` is a valid `struct virtio_device`.
        if unsafe { (*(*self.as_raw()).config).set }.is_none() {
            return Err(EINVAL);
        }
        // SAFETY: `self.as_raw()` is valid and its transport implements `config->set`; the field
        // is within the configuration space (invariant of `ConfigField`).
        unsafe { bindings::virtio_cwrite32(self.as_raw(), field.offset, value) };
        Ok(())
    }

    /// Sets `DRIVER_OK`: from now on the device processes the driver's virtqueues
    /// (`virtio_device_ready()`).
    ///
    /// Call it once the virtqueues are found and their handler is in place.
    pub fn ready(&self) {
        // SAFETY: `self.as_raw()` is valid; a `Core` context means probe or remove is running, so
        // the status is not changed concurrently by the core.
        unsafe { bindings::virtio_device_ready(self.as_raw()) };
    }
}

// SAFETY: `virtio::Device` is a transparent wrapper of `struct virtio_device`.
// The offset is guaranteed to point to a valid device field inside `virtio::Device`.
unsafe impl<Ctx: device::DeviceContext> device::AsBusDevice<Ctx> for Device<Ctx> {
    const OFFSET: usize = offset_of!(bindings::virtio_device, dev);
}

// SAFETY: `Device` is a transparent wrapper of a type that doesn't depend on `Device`'s generic
// argument.
kernel::impl_device_context_deref!(unsafe { Device });
kernel::impl_device_context_into_aref!(Device);

// SAFETY: Instances of `Device` are always reference-counted.
unsafe impl crate::sync::aref::AlwaysRefCounted for Device {
    fn inc_ref(&self) {
        // SAFETY: The existence of a shared reference guarantees that the refcount is non-zero.
        unsafe { bindings::get_device(self.as_ref().as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // CAST: `Self` is a transparent wrapper of `bindings::virtio_device`.
        let vdev: *mut bindings::virtio_device = obj.cast().as_ptr();

        // SAFETY: By the type invariant of `Self`, `vdev` is a pointer to a valid
        // `struct virtio_device`.
        let dev = unsafe { addr_of_mut!((*vdev).dev) };

        // SAFETY: The safety requirements guarantee that the refcount is non-zero.
        unsafe { bindings::put_device(dev) }
    }
}

impl<Ctx: device::DeviceContext> AsRef<device::Device<Ctx>> for Device<Ctx> {
    fn as_ref(&self) -> &device::Device<Ctx> {
        // SAFETY: By the type invariant of `Self`, `self.as_raw()` is a pointer to a valid
        // `struct virtio_device`.
        let dev = unsafe { addr_of_mut!((*self.as_raw()).dev) };

        // SAFETY: `dev` points to a valid `struct device`.
        unsafe { device::Device::from_raw(dev) }
    }
}

// SAFETY: A `Device` is always reference-counted and can be released from any thread.
unsafe impl Send for Device {}

// SAFETY: `Device` can be shared among threads because all methods of `Device`
// (i.e. `Device<Normal>`) are thread safe.
unsafe impl Sync for Device {}

/// Virtio device types (`VIRTIO_ID_*`).
pub mod id {
    use crate::bindings;

    /// Network card.
    pub const NET: u32 = bindings::VIRTIO_ID_NET;
    /// Block device.
    pub const BLOCK: u32 = bindings::VIRTIO_ID_BLOCK;
    /// SCSI host.
    pub const SCSI: u32 = bindings::VIRTIO_ID_SCSI;
}
