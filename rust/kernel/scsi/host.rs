// SPDX-License-Identifier: GPL-2.0

//! SCSI hosts (`struct Scsi_Host`) and their templates (`struct scsi_host_template`).
//!
//! C header: [`include/scsi/scsi_host.h`](srctree/include/scsi/scsi_host.h)

use super::cmnd::{
    Command,
    OwnedCommand,
    Slot, //
};
use crate::{
    bindings,
    device,
    error::{
        from_result,
        to_result, //
    },
    prelude::*,
    sync::{
        atomic::{
            Acquire,
            Atomic,
            Release, //
        },
        Arc,
        ArcBorrow, //
    },
    types::ForeignOwnable,
    ModuleMetadata, //
};
use core::{
    marker::PhantomData,
    ptr::NonNull, //
};

/// The answer of an error-handling callback (`SUCCESS` or `FAILED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EhResult {
    /// The command (or device) is dealt with; the driver no longer owns the command.
    ///
    /// On `SUCCESS` the midlayer finishes every command of the step's scope (the command for an
    /// abort, the logical unit's commands for a device reset, all commands for a host reset)
    /// and may reuse them. So the abstraction answers `SUCCESS` only once the driver holds none
    /// of them (it waits up to [`EH_GIVE_BACK_MS`] for completions racing the answer), and
    /// `FAILED` otherwise: the midlayer then escalates.
    Success,
    /// The step failed; the midlayer escalates to the next one.
    Failed,
}

/// How long an abort or a device reset that succeeded waits for the driver to give the commands
/// of its scope back (completions the device sent before its answer to the reset), in
/// milliseconds.
pub const EH_GIVE_BACK_MS: u32 = 1000;

/// The commands an error-handling step covers.
#[derive(Clone, Copy)]
enum Scope {
    /// One command.
    Command(*mut bindings::scsi_cmnd),
    /// The commands of one logical unit.
    Device(*mut bindings::scsi_device),
    /// Every command of the host.
    Host,
}

/// What `held_by_driver` counts while it iterates over the busy commands.
struct Held {
    scope: Scope,
    count: usize,
}

/// What the midlayer does with a command that timed out (`enum scsi_timeout_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutAction {
    /// The driver completed the command meanwhile.
    Done,
    /// Give the command more time.
    ResetTimer,
    /// Start error handling: abort the command, then reset.
    NotHandled,
}

/// A SCSI target (`struct scsi_target`), borrowed by target callbacks.
pub struct Target {
    channel: u32,
    id: u32,
}

impl Target {
    /// Returns the channel of the target.
    pub fn channel(&self) -> u32 {
        self.channel
    }

    /// Returns the target ID.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// The kinds of hardware queues of a host (`enum hctx_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum QueueKind {
    /// All I/O not otherwise accounted for (`HCTX_TYPE_DEFAULT`).
    Default = bindings::hctx_type_HCTX_TYPE_DEFAULT,
    /// Reads only (`HCTX_TYPE_READ`).
    Read = bindings::hctx_type_HCTX_TYPE_READ,
    /// Polled I/O, without interrupts (`HCTX_TYPE_POLL`): completed by
    /// [`HostOps::mq_poll`].
    Poll = bindings::hctx_type_HCTX_TYPE_POLL,
}

/// The hardware-queue maps of a host, one per [`QueueKind`] in use, given to
/// [`HostOps::map_queues`].
pub struct QueueMaps<'a> {
    shost: NonNull<bindings::Scsi_Host>,
    _p: PhantomData<&'a mut bindings::Scsi_Host>,
}

impl QueueMaps<'_> {
    /// Returns the map of `kind`, `None` if the host has no such map (see
    /// [`Limits::nr_poll_queues`]).
    pub fn get(&mut self, kind: QueueKind) -> Option<QueueMap<'_>> {
        let shost = self.shost.as_ptr();
        // SAFETY: `shost` is valid while `map_queues` runs.
        let (nr_maps, nr_hw_queues) = unsafe { ((*shost).tag_set.nr_maps, (*shost).nr_hw_queues) };
        if kind as u32 >= nr_maps {
            return None;
        }
        // SAFETY: `kind` is below `nr_maps`, at most `HCTX_MAX_TYPES`.
        let map = unsafe { &raw mut (*shost).tag_set.map[kind as usize] };
        Some(QueueMap {
            // SAFETY: A field of a valid host, hence not null.
            map: unsafe { NonNull::new_unchecked(map) },
            nr_hw_queues,
            _p: PhantomData,
        })
    }
}

/// One hardware-queue map of a host (`struct blk_mq_queue_map`).
///
/// # Invariants
///
/// `map` is a map of a host whose `map_queues` runs, for the borrow `'a`; the host has
/// `nr_hw_queues` hardware queues.
pub struct QueueMap<'a> {
    map: NonNull<bindings::blk_mq_queue_map>,
    nr_hw_queues: u32,
    _p: PhantomData<&'a mut bindings::Scsi_Host>,
}

impl QueueMap<'_> {
    fn map(&self) -> *mut bindings::blk_mq_queue_map {
        self.map.as_ptr()
    }

    /// Returns the number of hardware queues to map.
    pub fn nr_queues(&self) -> u32 {
        // SAFETY: The map is valid (type invariant).
        unsafe { (*self.map()).nr_queues }
    }

    /// Returns the index of the first hardware queue of the map.
    pub fn queue_offset(&self) -> u32 {
        // SAFETY: The map is valid (type invariant).
        unsafe { (*self.map()).queue_offset }
    }

    /// Gives the map `nr` hardware queues from `offset` on; fails with `EINVAL` if they are not
    /// all queues of the host.
    pub fn set_queues(&mut self, nr: u32, offset: u32) -> Result {
        if offset
            .checked_add(nr)
            .is_none_or(|end| end > self.nr_hw_queues)
        {
            return Err(EINVAL);
        }
        // SAFETY: The map is valid and being updated by its owner, the block layer, which calls
        // us for that.
        unsafe {
            (*self.map()).nr_queues = nr;
            (*self.map()).queue_offset = offset;
        }
        Ok(())
    }

    /// Spreads the map's hardware queues over the possible CPUs (`blk_mq_map_queues()`).
    pub fn map_queues(&mut self) {
        // SAFETY: The map is valid and being updated by its owner, the block layer, which calls
        // us for that.
        unsafe { bindings::blk_mq_map_queues(self.map()) }
    }

    /// Maps each hardware queue to the CPUs of the interrupt of `dev`'s vector
    /// `offset + queue` (`blk_mq_map_hw_queues()`); for managed interrupt affinity.
    pub fn map_hw_queues(&mut self, dev: &device::Device, offset: u32) {
        // SAFETY: The map is valid; `dev` is a valid device.
        unsafe { bindings::blk_mq_map_hw_queues(self.map(), dev.as_raw(), offset) }
    }

    /// Returns the hardware queue (an index among all of the host's) that CPU `cpu` maps to,
    /// `None` for an impossible CPU.
    pub fn queue_for_cpu(&self, cpu: u32) -> Option<u32> {
        if cpu >= crate::cpu::nr_cpu_ids() {
            return None;
        }
        // SAFETY: `mq_map` has `nr_cpu_ids` entries once mapped.
        Some(unsafe { *(*self.map()).mq_map.add(cpu as usize) })
    }
}

/// Returns the slot of the host data pointer in the private area of a host.
///
/// The slot is read by every callback and cleared by [`Host`]'s drop, hence atomic.
///
/// # Safety
///
/// `shost` must be a host allocated by [`Host::alloc`] (with a pointer-sized private area),
/// valid for `'a`.
unsafe fn host_data_slot<'a>(shost: *mut bindings::Scsi_Host) -> &'a Atomic<*mut c_void> {
    // SAFETY: `shost` is valid.
    let slot = unsafe { bindings::shost_priv(shost) }.cast::<*mut c_void>();
    // SAFETY: The private area is pointer-sized and aligned (`shost_priv()` is aligned for any
    // type), valid for `'a`, and only accessed atomically through this function.
    unsafe { Atomic::from_ptr(slot) }
}

/// The operations of a SCSI low-level driver: the callbacks of its `struct scsi_host_template`.
///
/// # Examples
///
/// A host with two interrupt-driven hardware queues and two poll queues after them
/// ([`Limits::nr_hw_queues`] 4, [`Limits::nr_poll_queues`] 2), whose logical units are all
/// missing:
///
/// ```
/// use kernel::{
///     scsi::{HostByte, HostOps, OwnedCommand, QueueKind, QueueMaps},
///     sync::ArcBorrow,
/// };
///
/// struct Polled;
///
/// #[vtable]
/// impl HostOps for Polled {
///     type HostData = ();
///     type CmdPriv = ();
///     const NAME: &'static CStr = c"polled";
///     const PROC_NAME: &'static CStr = c"polled";
///
///     fn queuecommand(
///         _: ArcBorrow<'_, ()>,
///         mut cmd: OwnedCommand<()>,
///     ) -> Result<(), OwnedCommand<()>> {
///         cmd.set_result(0, HostByte::BadTarget);
///         cmd.done();
///         Ok(())
///     }
///
///     fn map_queues(_: ArcBorrow<'_, ()>, maps: &mut QueueMaps<'_>) {
///         // Reads share the default queues: the read map gets none.
///         for (kind, nr, offset) in [
///             (QueueKind::Default, 2, 0),
///             (QueueKind::Read, 0, 0),
///             (QueueKind::Poll, 2, 2),
///         ] {
///             let Some(mut map) = maps.get(kind) else {
///                 continue;
///             };
///             if map.set_queues(nr, offset).is_ok() && nr > 0 {
///                 map.map_queues();
///             }
///         }
///     }
///
///     fn mq_poll(_: ArcBorrow<'_, ()>, _hwq: u16) -> u32 {
///         // The number of commands completed on the poll queue `hwq`.
///         0
///     }
/// }
/// ```
#[vtable]
pub trait HostOps: Sized + 'static {
    /// The driver's data of a host, shared by all callbacks (`shost_priv()`).
    type HostData: Send + Sync + 'static;

    /// The driver's per-command private data (`scsi_cmd_priv()`), initialised with
    /// [`Default`] when the midlayer allocates its commands.
    type CmdPriv: Default + Send + Sync + 'static;

    /// The name of the host adapter (`name`).
    const NAME: &'static CStr;

    /// The name of the driver under `/proc/scsi` (`proc_name`).
    const PROC_NAME: &'static CStr;

    /// Whether the midlayer lowers a device's queue depth when the device reports that its
    /// task set is full (`track_queue_depth`).
    const TRACK_QUEUE_DEPTH: bool = false;

    /// Whether the midlayer reads the VPD pages of devices that claim only SPC-2
    /// (`BLIST_TRY_VPD_PAGES`, set when a device is created): for virtual devices whose limits
    /// come from the host side through those pages.
    const TRY_VPD_PAGES: bool = false;

    /// Queues a command (`queuecommand`). Returning the command (`Err`) tells the midlayer that
    /// the host is busy and the command must be retried later (`SCSI_MLQUEUE_HOST_BUSY`).
    fn queuecommand(
        host: ArcBorrow<'_, Self::HostData>,
        cmd: OwnedCommand<Self::CmdPriv>,
    ) -> Result<(), OwnedCommand<Self::CmdPriv>>;

    /// Notifies the device of the commands queued on hardware queue `hwq` without
    /// [`Command::is_last`] (`commit_rqs`).
    fn commit_rqs(_host: ArcBorrow<'_, Self::HostData>, _hwq: u16) {
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Maps CPUs to hardware queues (`map_queues`).
    fn map_queues(_host: ArcBorrow<'_, Self::HostData>, _maps: &mut QueueMaps<'_>) {
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Polls hardware queue `hwq`, one of the [`QueueKind::Poll`] queues, for completions
    /// (`mq_poll`); returns how many commands it completed.
    fn mq_poll(_host: ArcBorrow<'_, Self::HostData>, _hwq: u16) -> u32 {
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Aborts a timed-out command (`eh_abort_handler`). Returning [`EhResult::Success`] gives
    /// the command back to the midlayer: the driver and device must be done with it.
    fn eh_abort_handler(
        _host: ArcBorrow<'_, Self::HostData>,
        _cmd: &Command<Self::CmdPriv>,
    ) -> EhResult {
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Resets the logical unit of `cmd` (`eh_device_reset_handler`).
    fn eh_device_reset_handler(
        _host: ArcBorrow<'_, Self::HostData>,
        _cmd: &Command<Self::CmdPriv>,
    ) -> EhResult {
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Resets the host adapter (`eh_host_reset_handler`), the last step of error handling.
    ///
    /// After this step the midlayer finishes every command it is handling, whatever the
    /// answer, and may reuse their memory or free it with the host. So when the handler
    /// returns, the abstraction waits until the driver holds no command of the host before it
    /// answers: the handler must get every command back from its device (reset it, so that the
    /// device's queues give up their buffers) or error handling waits for the device. A driver
    /// without this handler gets the same wait after a failed device reset.
    fn eh_host_reset_handler(
        _host: ArcBorrow<'_, Self::HostData>,
        _cmd: &Command<Self::CmdPriv>,
    ) -> EhResult {
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Decides what happens to a command that timed out (`eh_timed_out`).
    fn eh_timed_out(
        _host: ArcBorrow<'_, Self::HostData>,
        _cmd: &Command<Self::CmdPriv>,
    ) -> TimeoutAction {
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called when the midlayer creates a target (`target_alloc`).
    fn target_alloc(_host: ArcBorrow<'_, Self::HostData>, _target: &Target) -> Result {
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called when the midlayer destroys a target (`target_destroy`).
    fn target_destroy(_host: ArcBorrow<'_, Self::HostData>, _target: &Target) {
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }
}

/// The host template of `T` in module `M`, built at compile time.
struct Template<T, M>(PhantomData<(T, M)>);

impl<T: HostOps, M: ModuleMetadata> Template<T, M> {
    const TEMPLATE: bindings::scsi_host_template = {
        let mut t: bindings::scsi_host_template = pin_init::zeroed();
        t.module = M::THIS_MODULE.as_ptr();
        t.name = crate::str::as_char_ptr_in_const_context(T::NAME);
        t.proc_name = crate::str::as_char_ptr_in_const_context(T::PROC_NAME);
        t.this_id = -1;
        t.cmd_size = core::mem::size_of::<Slot<T::CmdPriv>>() as u32;
        t.dma_boundary = u32::MAX as c_ulong;
        t.queuecommand = Some(Self::queuecommand_callback);
        t.init_cmd_priv = Some(Self::init_cmd_priv_callback);
        t.exit_cmd_priv = Some(Self::exit_cmd_priv_callback);
        t.change_queue_depth = Some(Self::change_queue_depth_callback);
        if T::TRACK_QUEUE_DEPTH {
            // `track_queue_depth` is bit 1 of the template's first bit-field unit, all of whose
            // other bits are 0 here; `Host::alloc` checks it with the generated accessor.
            t._bitfield_1 = bindings::__BindgenBitfieldUnit::new([1 << 1, 0]);
        }
        if T::TRY_VPD_PAGES {
            t.sdev_init = Some(Self::sdev_init_callback);
        }
        if T::HAS_COMMIT_RQS {
            t.commit_rqs = Some(Self::commit_rqs_callback);
        }
        if T::HAS_MAP_QUEUES {
            t.map_queues = Some(Self::map_queues_callback);
        }
        if T::HAS_MQ_POLL {
            t.mq_poll = Some(Self::mq_poll_callback);
        }
        if T::HAS_EH_ABORT_HANDLER {
            t.eh_abort_handler = Some(Self::eh_abort_callback);
        }
        if T::HAS_EH_DEVICE_RESET_HANDLER {
            t.eh_device_reset_handler = Some(Self::eh_device_reset_callback);
        }
        // Always there: it is where error handling waits for the driver to give back the
        // commands the midlayer is about to finish.
        t.eh_host_reset_handler = Some(Self::eh_host_reset_callback);
        if T::HAS_EH_TIMED_OUT {
            t.eh_timed_out = Some(Self::eh_timed_out_callback);
        }
        if T::HAS_TARGET_ALLOC {
            t.target_alloc = Some(Self::target_alloc_callback);
        }
        if T::HAS_TARGET_DESTROY {
            t.target_destroy = Some(Self::target_destroy_callback);
        }
        t
    };

    fn get() -> &'static bindings::scsi_host_template {
        const {
            assert!(
                core::mem::align_of::<Slot<T::CmdPriv>>()
                    <= core::mem::align_of::<bindings::scsi_cmnd>()
            )
        };
        &Self::TEMPLATE
    }

    /// Borrows the host data.
    ///
    /// # Safety
    ///
    /// `shost` must be a host allocated by [`Host::alloc`] with `T`, and the returned borrow must
    /// end before the host data is taken back by [`Host`]'s drop.
    unsafe fn data<'a>(shost: *mut bindings::Scsi_Host) -> Option<ArcBorrow<'a, T::HostData>> {
        // SAFETY: `shost` is a host allocated by `Host::alloc`.
        let ptr = unsafe { host_data_slot(shost) }.load(Acquire);
        if ptr.is_null() {
            return None;
        }
        // SAFETY: `ptr` came from `Arc::into_foreign` and is valid until taken back.
        Some(unsafe { <Arc<T::HostData> as ForeignOwnable>::borrow(ptr) })
    }

    /// # Safety
    ///
    /// `cmd` must be a command of a host allocated with `T`.
    unsafe fn host_of(cmd: *mut bindings::scsi_cmnd) -> *mut bindings::Scsi_Host {
        // SAFETY: A valid command has a valid device with a valid host.
        unsafe { (*(*cmd).device).host }
    }

    extern "C" fn queuecommand_callback(
        shost: *mut bindings::Scsi_Host,
        cmd: *mut bindings::scsi_cmnd,
    ) -> bindings::scsi_qc_status {
        // SAFETY: The midlayer calls this with a host of ours, which is not being freed.
        let Some(data) = (unsafe { Self::data(shost) }) else {
            return bindings::scsi_qc_status_SCSI_MLQUEUE_HOST_BUSY;
        };
        // SAFETY: The midlayer hands `cmd`, a command of our host, to the driver here.
        let Some(cmd) = (unsafe { OwnedCommand::accept(cmd) }) else {
            // The driver still holds it: it must not get a second owner.
            return bindings::scsi_qc_status_SCSI_MLQUEUE_HOST_BUSY;
        };
        match T::queuecommand(data, cmd) {
            Ok(()) => 0,
            Err(cmd) => {
                // Ownership goes back to the midlayer, which retries the command.
                let _ = cmd.into_raw();
                bindings::scsi_qc_status_SCSI_MLQUEUE_HOST_BUSY
            }
        }
    }

    extern "C" fn commit_rqs_callback(shost: *mut bindings::Scsi_Host, hwq: u16) {
        // SAFETY: The midlayer calls this with a host of ours.
        if let Some(data) = unsafe { Self::data(shost) } {
            T::commit_rqs(data, hwq);
        }
    }

    extern "C" fn map_queues_callback(shost: *mut bindings::Scsi_Host) {
        // SAFETY: The midlayer calls this with a host of ours.
        if let Some(data) = unsafe { Self::data(shost) } {
            let mut maps = QueueMaps {
                // SAFETY: `shost` is valid, hence not null.
                shost: unsafe { NonNull::new_unchecked(shost) },
                _p: PhantomData,
            };
            T::map_queues(data, &mut maps);
        }
    }

    extern "C" fn mq_poll_callback(shost: *mut bindings::Scsi_Host, queue_num: c_uint) -> c_int {
        // SAFETY: The midlayer calls this with a host of ours.
        match unsafe { Self::data(shost) } {
            Some(data) => T::mq_poll(data, queue_num as u16).min(i32::MAX as u32) as c_int,
            None => 0,
        }
    }

    extern "C" fn init_cmd_priv_callback(
        _shost: *mut bindings::Scsi_Host,
        cmd: *mut bindings::scsi_cmnd,
    ) -> c_int {
        // SAFETY: `cmd` is a new command of ours.
        let slot = unsafe { bindings::scsi_cmd_priv(cmd) }.cast::<Slot<T::CmdPriv>>();
        // SAFETY: The private area of a new command of ours has room for a `Slot<T::CmdPriv>`,
        // aligned (checked in `get()`).
        unsafe { slot.write(Slot::new(T::CmdPriv::default())) };
        0
    }

    extern "C" fn exit_cmd_priv_callback(
        _shost: *mut bindings::Scsi_Host,
        cmd: *mut bindings::scsi_cmnd,
    ) -> c_int {
        // SAFETY: `cmd` is a command of ours being freed.
        let slot = unsafe { bindings::scsi_cmd_priv(cmd) }.cast::<Slot<T::CmdPriv>>();
        // SAFETY: The private area was initialised by `init_cmd_priv_callback` and the command
        // is being freed.
        unsafe { core::ptr::drop_in_place(slot) };
        0
    }

    extern "C" fn sdev_init_callback(sdev: *mut bindings::scsi_device) -> c_int {
        // SAFETY: The midlayer calls this with a new device of ours, before it is scanned.
        unsafe { (*sdev).sdev_bflags = bindings::BLIST_TRY_VPD_PAGES };
        0
    }

    extern "C" fn change_queue_depth_callback(
        sdev: *mut bindings::scsi_device,
        depth: c_int,
    ) -> c_int {
        // SAFETY: The midlayer calls this with a valid device of a valid host.
        unsafe {
            let max = c_int::from((*(*sdev).host).cmd_per_lun);
            bindings::scsi_change_queue_depth(sdev, depth.min(max))
        }
    }

    extern "C" fn count_held_callback(cmd: *mut bindings::scsi_cmnd, data: *mut c_void) -> bool {
        // SAFETY: `data` is the `Held` that `held_by_driver` passed, borrowed for the iteration.
        let held = unsafe { &mut *data.cast::<Held>() };
        let in_scope = match held.scope {
            // Answered without iterating (`held_by_driver`).
            Scope::Command(_) => false,
            // SAFETY: A busy command is valid, with a valid device.
            Scope::Device(sdev) => (unsafe { (*cmd).device }) == sdev,
            Scope::Host => true,
        };
        // SAFETY: A busy command of our host is valid and its private area holds a
        // `Slot<T::CmdPriv>`, initialised by `init_cmd_priv_callback`.
        if in_scope && unsafe { Command::<T::CmdPriv>::from_raw(cmd) }.is_with_driver() {
            held.count += 1;
        }
        true
    }

    /// Returns how many commands of `scope` the driver holds.
    ///
    /// # Safety
    ///
    /// `shost` must be a valid host of ours, with its tag set; for [`Scope::Command`], the
    /// command must be a valid command of that host.
    unsafe fn held_by_driver(shost: *mut bindings::Scsi_Host, scope: Scope) -> usize {
        if let Scope::Command(cmd) = scope {
            // SAFETY: A command in error handling is a valid command of ours (safety
            // requirements of the callers), whether or not the tag set counts it as busy.
            return usize::from(unsafe { Command::<T::CmdPriv>::from_raw(cmd) }.is_with_driver());
        }
        let mut held = Held { scope, count: 0 };
        // SAFETY: `shost` is valid; the callback gets `held` for the duration of the call.
        unsafe {
            bindings::scsi_host_busy_iter(
                shost,
                Some(Self::count_held_callback),
                (&raw mut held).cast(),
            )
        };
        held.count
    }

    /// Waits until the driver holds no command of `scope`, for at most `limit_ms` milliseconds
    /// (for ever if `None`); returns whether it holds none.
    ///
    /// # Safety
    ///
    /// As [`Self::held_by_driver`]; process context.
    unsafe fn wait_given_back(
        shost: *mut bindings::Scsi_Host,
        scope: Scope,
        limit_ms: Option<u32>,
    ) -> bool {
        let mut waited_ms = 0u32;
        loop {
            // SAFETY: Guaranteed by the caller.
            let held = unsafe { Self::held_by_driver(shost, scope) };
            if held == 0 {
                return true;
            }
            match limit_ms {
                Some(limit) if waited_ms >= limit => return false,
                None if waited_ms > 0 && waited_ms % 10_000 == 0 => {
                    crate::pr_warn!(
                        "scsi: error handling waits for the driver to give back {held} \
                         command(s) its device holds\n"
                    );
                }
                _ => {}
            }
            crate::time::delay::fsleep(crate::time::Delta::from_millis(10));
            waited_ms = waited_ms.saturating_add(10);
        }
    }

    extern "C" fn eh_abort_callback(cmd: *mut bindings::scsi_cmnd) -> c_int {
        let raw = cmd;
        // SAFETY: The midlayer calls this with a valid command of ours.
        let shost = unsafe { Self::host_of(raw) };
        // SAFETY: As above.
        let (data, cmd) = unsafe { (Self::data(shost), Command::from_raw(raw)) };
        let answer = match data {
            Some(data) => T::eh_abort_handler(data, cmd),
            None => EhResult::Failed,
        };
        // On `SUCCESS` the midlayer finishes the command: only if the driver gave it back (a
        // completion the device sent before it answered the abort may still be on its way).
        let given_back = answer == EhResult::Success && {
            // SAFETY: The midlayer passed a valid command of ours, so `shost` is a valid host of
            // ours, with its tag set, and `raw` a valid command of it; error handlers run in
            // process context.
            unsafe { Self::wait_given_back(shost, Scope::Command(raw), Some(EH_GIVE_BACK_MS)) }
        };
        if given_back {
            bindings::scsi_disposition_SUCCESS as c_int
        } else {
            bindings::scsi_disposition_FAILED as c_int
        }
    }

    extern "C" fn eh_device_reset_callback(cmd: *mut bindings::scsi_cmnd) -> c_int {
        // SAFETY: The midlayer calls this with a valid command of ours.
        let (shost, sdev) = unsafe { (Self::host_of(cmd), (*cmd).device) };
        // SAFETY: As above.
        let (data, cmd) = unsafe { (Self::data(shost), Command::from_raw(cmd)) };
        let answer = match data {
            Some(data) => T::eh_device_reset_handler(data, cmd),
            None => EhResult::Failed,
        };
        // On `SUCCESS` the midlayer finishes every command of the logical unit: only if the
        // driver gave them all back.
        let given_back = answer == EhResult::Success && {
            // SAFETY: The midlayer passed a valid command of ours, so `shost` is a valid host of
            // ours, with its tag set; error handlers run in process context.
            unsafe { Self::wait_given_back(shost, Scope::Device(sdev), Some(EH_GIVE_BACK_MS)) }
        };
        if given_back {
            bindings::scsi_disposition_SUCCESS as c_int
        } else {
            bindings::scsi_disposition_FAILED as c_int
        }
    }

    extern "C" fn eh_host_reset_callback(cmd: *mut bindings::scsi_cmnd) -> c_int {
        // SAFETY: The midlayer calls this with a valid command of ours.
        let shost = unsafe { Self::host_of(cmd) };
        // SAFETY: As above.
        let (data, cmd) = unsafe { (Self::data(shost), Command::from_raw(cmd)) };
        let answer = match data {
            Some(data) if T::HAS_EH_HOST_RESET_HANDLER => T::eh_host_reset_handler(data, cmd),
            _ => EhResult::Failed,
        };
        // Whatever the answer, the midlayer finishes the commands it handles after this step
        // (on `FAILED` it takes their devices offline) and may reuse or free their memory. A
        // command the driver still holds would leave its owner pointing at that memory, so
        // the answer waits until the driver holds none (INVARIANT of `OwnedCommand`).
        // SAFETY: `shost` is a valid host of ours, in error handling (process context).
        unsafe { Self::wait_given_back(shost, Scope::Host, None) };
        match answer {
            EhResult::Success => bindings::scsi_disposition_SUCCESS as c_int,
            EhResult::Failed => bindings::scsi_disposition_FAILED as c_int,
        }
    }

    extern "C" fn eh_timed_out_callback(
        cmd: *mut bindings::scsi_cmnd,
    ) -> bindings::scsi_timeout_action {
        // SAFETY: The midlayer calls this with a valid command of ours.
        let (data, cmd) = unsafe { (Self::data(Self::host_of(cmd)), Command::from_raw(cmd)) };
        let action = match data {
            Some(data) => T::eh_timed_out(data, cmd),
            None => TimeoutAction::ResetTimer,
        };
        match action {
            TimeoutAction::Done => bindings::scsi_timeout_action_SCSI_EH_DONE,
            TimeoutAction::ResetTimer => bindings::scsi_timeout_action_SCSI_EH_RESET_TIMER,
            TimeoutAction::NotHandled => bindings::scsi_timeout_action_SCSI_EH_NOT_HANDLED,
        }
    }

    /// # Safety
    ///
    /// `starget` must be a valid target of a host of ours.
    unsafe fn target(starget: *mut bindings::scsi_target) -> (*mut bindings::Scsi_Host, Target) {
        // SAFETY: A valid target is a child of its host's device.
        unsafe {
            let shost = bindings::dev_to_shost(&raw mut (*starget).dev);
            let target = Target {
                channel: (*starget).channel,
                id: (*starget).id,
            };
            (shost, target)
        }
    }

    extern "C" fn target_alloc_callback(starget: *mut bindings::scsi_target) -> c_int {
        // SAFETY: The midlayer calls this with a valid target of ours.
        let (shost, target) = unsafe { Self::target(starget) };
        // SAFETY: `shost` is a host of ours.
        let Some(data) = (unsafe { Self::data(shost) }) else {
            return ENODEV.to_errno();
        };
        from_result(|| T::target_alloc(data, &target).map(|()| 0))
    }

    extern "C" fn target_destroy_callback(starget: *mut bindings::scsi_target) {
        // SAFETY: The midlayer calls this with a valid target of ours.
        let (shost, target) = unsafe { Self::target(starget) };
        // SAFETY: `shost` is a host of ours.
        if let Some(data) = unsafe { Self::data(shost) } {
            T::target_destroy(data, &target);
        }
    }
}

/// The limits of a host, set before it is added.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Number of hardware (blk-mq) queues, poll queues included.
    pub nr_hw_queues: u32,
    /// How many of the hardware queues are poll queues ([`QueueKind::Poll`]); with poll
    /// queues the host has the three queue maps (default, read, poll) to fill in
    /// [`HostOps::map_queues`], otherwise only the default map.
    pub nr_poll_queues: u32,
    /// Commands in flight per hardware queue.
    pub can_queue: i32,
    /// Default queue depth of a device.
    pub cmd_per_lun: i16,
    /// Scatter-gather entries per command.
    pub sg_tablesize: u16,
    /// Sectors per command.
    pub max_sectors: u32,
    /// Number of target IDs (one past the largest).
    pub max_id: u32,
    /// Number of LUNs (one past the largest).
    pub max_lun: u64,
    /// Largest channel number.
    pub max_channel: u32,
    /// Longest CDB.
    pub max_cmd_len: u16,
}

/// A counted reference to a host (`scsi_host_get()`/`scsi_host_put()`), for scanning and
/// hot-plug.
///
/// # Invariants
///
/// `self.0` is a valid host on which this object holds a reference.
pub struct HostRef(NonNull<bindings::Scsi_Host>);

// SAFETY: The functions used through a `HostRef` may be called from any thread.
unsafe impl Send for HostRef {}
// SAFETY: As above.
unsafe impl Sync for HostRef {}

impl HostRef {
    fn as_raw(&self) -> *mut bindings::Scsi_Host {
        self.0.as_ptr()
    }

    /// Returns the host number (the `N` of `hostN`).
    pub fn host_no(&self) -> u32 {
        // SAFETY: By the type invariant the host is valid.
        unsafe { (*self.as_raw()).host_no }
    }

    /// Scans all targets of the host (`scsi_scan_host()`).
    pub fn scan(&self) {
        // SAFETY: By the type invariant the host is valid.
        unsafe { bindings::scsi_scan_host(self.as_raw()) }
    }

    /// Scans all LUNs of a target (`scsi_scan_target()`).
    pub fn scan_target(&self, channel: u32, id: u32) {
        // SAFETY: By the type invariant the host is valid.
        unsafe {
            bindings::scsi_scan_target(
                &raw mut (*self.as_raw()).shost_gendev,
                channel,
                id,
                u64::MAX,
                bindings::scsi_scan_mode_SCSI_SCAN_RESCAN,
            )
        }
    }

    /// Calls `f` for every device of the host (`shost_for_each_device()`); `f` may sleep and
    /// may remove the device.
    pub fn for_each_device(&self, mut f: impl FnMut(&super::Device)) {
        let mut sdev = core::ptr::null_mut();
        loop {
            // SAFETY: By the type invariant the host is valid; `sdev` is null or the device the
            // previous call returned, whose reference this call puts.
            sdev = unsafe { bindings::__scsi_iterate_devices(self.as_raw(), sdev) };
            if sdev.is_null() {
                return;
            }
            // SAFETY: `__scsi_iterate_devices()` returned `sdev` with a reference held until the
            // next call.
            f(unsafe { super::Device::from_raw(sdev) });
        }
    }

    /// Adds one LUN (`scsi_add_device()`).
    pub fn add_device(&self, channel: u32, id: u32, lun: u64) -> Result {
        // SAFETY: By the type invariant the host is valid.
        to_result(unsafe { bindings::scsi_add_device(self.as_raw(), channel, id, lun) })
    }

    /// Removes one LUN if it exists (`scsi_device_lookup()`, `scsi_remove_device()`); returns
    /// whether it existed.
    pub fn remove_device(&self, channel: u32, id: u32, lun: u64) -> bool {
        // SAFETY: By the type invariant the host is valid.
        let sdev = unsafe { bindings::scsi_device_lookup(self.as_raw(), channel, id, lun) };
        if sdev.is_null() {
            return false;
        }
        // SAFETY: `sdev` is a valid device on which the lookup took a reference.
        unsafe {
            bindings::scsi_remove_device(sdev);
            bindings::scsi_device_put(sdev);
        }
        true
    }

    /// Revalidates one LUN, e.g. after a capacity change (`scsi_rescan_device()`); returns
    /// whether it exists.
    pub fn rescan_device(&self, channel: u32, id: u32, lun: u64) -> bool {
        // SAFETY: By the type invariant the host is valid.
        let sdev = unsafe { bindings::scsi_device_lookup(self.as_raw(), channel, id, lun) };
        if sdev.is_null() {
            return false;
        }
        // SAFETY: `sdev` is a valid device on which the lookup took a reference.
        unsafe {
            bindings::scsi_rescan_device(sdev);
            bindings::scsi_device_put(sdev);
        }
        true
    }
}

impl Clone for HostRef {
    fn clone(&self) -> Self {
        // SAFETY: The host is valid and we hold a reference, so getting one more cannot fail
        // for a host that is not being deleted; if it is, the reference is still counted.
        unsafe { bindings::get_device(&raw mut (*self.as_raw()).shost_gendev) };
        // INVARIANT: A reference was taken above.
        Self(self.0)
    }
}

impl Drop for HostRef {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we hold a reference.
        unsafe { bindings::scsi_host_put(self.as_raw()) }
    }
}

/// A host adapter owned by its low-level driver.
///
/// Dropping it removes the host (`scsi_remove_host()`) if it was added, drops the host data and
/// puts the driver's reference (`scsi_host_put()`).
///
/// # Examples
///
/// ```
/// use kernel::{
///     device::{Bound, Device},
///     scsi::{Host, HostOps, HostRef, Limits},
///     sync::Arc,
///     ModuleMetadata,
/// };
///
/// /// Adds a host of the driver `T` of module `M` under `dev`, and scans it.
/// fn probe<T: HostOps, M: ModuleMetadata>(
///     dev: &Device<Bound>,
///     data: Arc<T::HostData>,
/// ) -> Result<Host<T>> {
///     let limits = Limits {
///         nr_hw_queues: 1,
///         nr_poll_queues: 0,
///         can_queue: 128,
///         cmd_per_lun: 32,
///         sg_tablesize: 64,
///         max_sectors: 1024,
///         max_id: 1,
///         max_lun: 8,
///         max_channel: 0,
///         max_cmd_len: 16,
///     };
///     let mut host = Host::<T>::alloc::<M>(data, &limits)?;
///     host.add(dev)?;
///     host.scan();
///     Ok(host)
/// }
///
/// /// Adds a logical unit the device reported, from a work item that holds `host` (from
/// /// `Host::get_ref`).
/// fn lun_added(host: &HostRef, id: u32, lun: u64) -> Result {
///     host.add_device(0, id, lun)
/// }
/// ```
///
/// # Invariants
///
/// `shost` was allocated by `scsi_host_alloc()` with the template of `T`; its private area holds
/// the pointer of an `Arc<T::HostData>` until drop.
pub struct Host<T: HostOps> {
    host: HostRef,
    added: bool,
    _p: PhantomData<T>,
}

impl<T: HostOps> Host<T> {
    /// Allocates a host for the operations `T` of module `M` (`scsi_host_alloc()`).
    pub fn alloc<M: ModuleMetadata>(data: Arc<T::HostData>, limits: &Limits) -> Result<Self> {
        let template = Template::<T, M>::get();
        if template.track_queue_depth() != u32::from(T::TRACK_QUEUE_DEPTH) {
            pr_err!("scsi: host template bit-field layout changed\n");
            return Err(EINVAL);
        }
        // SAFETY: `template` is valid for the lifetime of the module, which outlives the host
        // (the template's `module` pins the module while the host's devices are in use).
        let shost = unsafe {
            bindings::scsi_host_alloc(template, core::mem::size_of::<*mut c_void>() as c_int)
        };
        let shost = NonNull::new(shost).ok_or(ENOMEM)?;
        // SAFETY: `shost` is a new host with a pointer-sized private area, ours.
        unsafe { host_data_slot(shost.as_ptr()) }.store(data.into_foreign(), Release);
        // SAFETY: `shost` is a new host, not yet added: nobody else reads these fields.
        unsafe {
            let s = shost.as_ptr();
            (*s).nr_hw_queues = limits.nr_hw_queues;
            (*s).nr_maps = if limits.nr_poll_queues > 0 {
                bindings::hctx_type_HCTX_MAX_TYPES
            } else {
                1
            };
            (*s).can_queue = limits.can_queue;
            (*s).cmd_per_lun = limits.cmd_per_lun;
            (*s).sg_tablesize = limits.sg_tablesize;
            (*s).max_sectors = limits.max_sectors;
            (*s).max_id = limits.max_id;
            (*s).max_lun = limits.max_lun;
            (*s).max_channel = limits.max_channel;
            (*s).max_cmd_len = limits.max_cmd_len;
        }
        // INVARIANT: The host was allocated with `T`'s template and holds the data pointer.
        Ok(Self {
            host: HostRef(shost),
            added: false,
            _p: PhantomData,
        })
    }

    /// Adds the host under `dev` (`scsi_add_host_with_dma()`); the host then accepts commands.
    pub fn add(&mut self, dev: &device::Device<device::Bound>) -> Result {
        // SAFETY: The host is valid; `dev` is a bound device, parent and DMA device of the host.
        to_result(unsafe {
            bindings::scsi_add_host_with_dma(self.host.as_raw(), dev.as_raw(), dev.as_raw())
        })?;
        self.added = true;
        Ok(())
    }

    /// Returns a counted reference to the host, for work that may outlive a borrow of `self`.
    pub fn get_ref(&self) -> HostRef {
        self.host.clone()
    }
}

impl<T: HostOps> core::ops::Deref for Host<T> {
    type Target = HostRef;

    fn deref(&self) -> &HostRef {
        &self.host
    }
}

impl<T: HostOps> Drop for Host<T> {
    fn drop(&mut self) {
        let shost = self.host.as_raw();
        if self.added {
            // SAFETY: The host was added; after this no new command reaches the driver.
            unsafe { bindings::scsi_remove_host(shost) };
        }
        // By the type invariant the private area holds the pointer of an `Arc<T::HostData>`; it
        // is cleared first so callbacks see no data from now on.
        // SAFETY: `shost` was allocated by `Host::alloc`.
        let data = unsafe { host_data_slot(shost) }.xchg(core::ptr::null_mut(), Acquire);
        if !data.is_null() {
            // SAFETY: `data` came from `Arc::into_foreign` in `alloc`.
            drop(unsafe { <Arc<T::HostData> as ForeignOwnable>::from_foreign(data) });
        }
        // `self.host` puts the driver's reference.
    }
}
