// SPDX-License-Identifier: GPL-2.0

//! SCSI commands (`struct scsi_cmnd`).
//!
//! C header: [`include/scsi/scsi_cmnd.h`](srctree/include/scsi/scsi_cmnd.h)

use crate::{
    bindings,
    dma::DataDirection,
    prelude::*,
    sync::atomic::{
        Acquire,
        Atomic,
        Release, //
    },
    types::{
        ForeignOwnable,
        Opaque, //
    },
};
use core::{
    marker::PhantomData,
    mem::ManuallyDrop,
    ptr::NonNull, //
};

/// The host byte of a command's result (`DID_*`), how the transport fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HostByte {
    /// No error.
    Ok = bindings::scsi_host_status_DID_OK as u8,
    /// The bus stayed busy.
    BusBusy = bindings::scsi_host_status_DID_BUS_BUSY as u8,
    /// The target does not exist.
    BadTarget = bindings::scsi_host_status_DID_BAD_TARGET as u8,
    /// Aborted.
    Abort = bindings::scsi_host_status_DID_ABORT as u8,
    /// Internal error.
    Error = bindings::scsi_host_status_DID_ERROR as u8,
    /// Reset by somebody.
    Reset = bindings::scsi_host_status_DID_RESET as u8,
    /// A transport error disrupted execution; the midlayer retries.
    TransportDisrupted = bindings::scsi_host_status_DID_TRANSPORT_DISRUPTED as u8,
}

/// Size of the sense buffer of a command (`SCSI_SENSE_BUFFERSIZE`).
pub const SENSE_BUFFERSIZE: usize = bindings::SCSI_SENSE_BUFFERSIZE as usize;

/// The private area of a command (`scsi_cmd_priv()`): the abstraction's record of who owns
/// the command, then the driver's data.
///
/// # Invariants
///
/// `with_driver` is `true` from the moment `queuecommand` hands the command to the driver until
/// the driver gives it back (completion, or "host busy"); it is set back to `false` before
/// `scsi_done()` is called, never after.
#[repr(C)]
pub(crate) struct Slot<T> {
    with_driver: Atomic<bool>,
    data: T,
}

impl<T> Slot<T> {
    pub(crate) fn new(data: T) -> Self {
        Self {
            with_driver: Atomic::new(false),
            data,
        }
    }
}

/// A SCSI command, borrowed.
///
/// `T` is the driver's per-command private data (`scsi_cmd_priv()`), see
/// [`HostOps::CmdPriv`](super::HostOps::CmdPriv).
///
/// A borrowed command gives no access to the driver's private data: while it is borrowed (in
/// error handling, say) the command may sit in the device, which writes its response into that
/// data. Only an [`OwnedCommand`], which exists while the device does not hold the command,
/// reaches it.
///
/// # Examples
///
/// A borrowed command has no accessor for the driver's data; this does not compile:
///
/// ```ignore,compile_fail
/// use kernel::scsi::Command;
/// fn peek(cmd: &Command<[u8; 8]>) -> u8 {
///     cmd.priv_data()[0] // error: no method named `priv_data`
/// }
/// ```
///
/// # Invariants
///
/// `self.0` is a valid `struct scsi_cmnd` of a host whose template has `cmd_size` equal to
/// `size_of::<Slot<T>>()` and whose private area holds an initialised `Slot<T>`.
#[repr(transparent)]
pub struct Command<T>(Opaque<bindings::scsi_cmnd>, PhantomData<T>);

impl<T> Command<T> {
    /// Creates a reference from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid command of a host whose commands carry a `T` (see the type
    /// invariants), valid for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::scsi_cmnd) -> &'a Self {
        // SAFETY: `Command` is a transparent wrapper; validity is guaranteed by the caller.
        unsafe { &*ptr.cast() }
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::scsi_cmnd {
        self.0.get()
    }

    fn sdev(&self) -> *mut bindings::scsi_device {
        // SAFETY: By the type invariant the command is valid; a queued command has a device.
        unsafe { (*self.as_raw()).device }
    }

    /// Returns the command descriptor block.
    pub fn cdb(&self) -> &[u8] {
        // SAFETY: By the type invariant the command is valid; the CDB is not changed while the
        // driver sees the command.
        unsafe {
            let c = self.as_raw();
            let len = ((*c).cmd_len as usize).min((*c).cmnd.len());
            &(&(*c).cmnd)[..len]
        }
    }

    /// Returns the direction of the data transfer.
    pub fn data_direction(&self) -> DataDirection {
        // SAFETY: By the type invariant the command is valid.
        let dir = unsafe { (*self.as_raw()).sc_data_direction };
        match dir {
            bindings::dma_data_direction::DMA_TO_DEVICE => DataDirection::ToDevice,
            bindings::dma_data_direction::DMA_FROM_DEVICE => DataDirection::FromDevice,
            bindings::dma_data_direction::DMA_BIDIRECTIONAL => DataDirection::Bidirectional,
            _ => DataDirection::None,
        }
    }

    fn slot(&self) -> *mut Slot<T> {
        // SAFETY: By the type invariant the command is valid and its private area is a `Slot<T>`.
        unsafe { bindings::scsi_cmd_priv(self.as_raw()) }.cast::<Slot<T>>()
    }

    fn with_driver(&self) -> &Atomic<bool> {
        // SAFETY: The slot is valid and initialised (type invariant); `with_driver` is only
        // accessed atomically.
        unsafe { &(*self.slot()).with_driver }
    }

    /// Returns whether the driver holds the command (given by `queuecommand`, not yet given
    /// back).
    pub(crate) fn is_with_driver(&self) -> bool {
        self.with_driver().load(Acquire)
    }

    /// Returns the length of the data transfer in bytes (`scsi_bufflen()`).
    pub fn bufflen(&self) -> u32 {
        // SAFETY: By the type invariant the command is valid.
        unsafe { (*self.as_raw()).sdb.length }
    }

    /// Returns the number of scatter-gather entries of the data (`scsi_sg_count()`).
    pub fn sg_count(&self) -> u32 {
        // SAFETY: By the type invariant the command is valid.
        unsafe { (*self.as_raw()).sdb.table.nents }
    }

    /// Returns the channel of the command's device.
    pub fn channel(&self) -> u32 {
        // SAFETY: The device of a valid command is valid.
        unsafe { (*self.sdev()).channel }
    }

    /// Returns the target ID of the command's device.
    pub fn id(&self) -> u32 {
        // SAFETY: The device of a valid command is valid.
        unsafe { (*self.sdev()).id }
    }

    /// Returns the LUN of the command's device.
    pub fn lun(&self) -> u64 {
        // SAFETY: The device of a valid command is valid.
        unsafe { (*self.sdev()).lun }
    }

    /// Returns the block-layer tag of the command, unique over the host's hardware queues
    /// (`blk_mq_unique_tag()`).
    pub fn unique_tag(&self) -> u32 {
        // SAFETY: A SCSI command is the payload of a valid request.
        unsafe { bindings::blk_mq_unique_tag(bindings::scsi_cmd_to_rq(self.as_raw())) }
    }

    /// Returns the hardware queue blk-mq chose for the command
    /// (`blk_mq_unique_tag_to_hwq()`).
    pub fn hw_queue(&self) -> u16 {
        Self::hw_queue_of(self.unique_tag())
    }

    /// Returns the hardware queue of a unique tag from [`Command::unique_tag`]
    /// (`blk_mq_unique_tag_to_hwq()`): to get both with one call.
    pub fn hw_queue_of(unique_tag: u32) -> u16 {
        (unique_tag >> bindings::BLK_MQ_UNIQUE_TAG_BITS) as u16
    }

    /// Returns `true` if this is the last command of a batch; the driver then notifies the
    /// device (`SCMD_LAST`). Otherwise [`HostOps::commit_rqs`](super::HostOps::commit_rqs)
    /// follows the batch.
    pub fn is_last(&self) -> bool {
        // SAFETY: By the type invariant the command is valid.
        unsafe { (*self.as_raw()).flags & bindings::SCMD_LAST as i32 != 0 }
    }
}

/// A SCSI command owned by the low-level driver, from `queuecommand` until `scsi_done()`.
///
/// Dropping it without [`OwnedCommand::done`] completes the command with [`HostByte::Error`], so
/// that no command is ever lost.
///
/// The command's memory belongs to the host's tag set, which `scsi_remove_host()` frees once
/// every request queue of the host is gone, and a queue goes only when all its requests are
/// finished. The midlayer finishes a command without the driver only in error handling, and
/// the abstraction answers error handling so that this never happens to a command the driver
/// holds: an abort or a device reset answers `SUCCESS` only once the driver gave back every
/// command of its scope, and the last step, the host reset, waits until the driver holds none
/// before it answers (see [`EhResult::Success`](super::EhResult::Success) and
/// [`HostOps::eh_host_reset_handler`](super::HostOps::eh_host_reset_handler)). So an
/// `OwnedCommand` never outlives the tag set, wherever the driver keeps it (a device queue
/// dropped at unbind, say): host removal waits for it.
///
/// # Invariants
///
/// `self.0` points to a valid [`Command<T>`] that the midlayer has handed to the driver and not
/// yet been completed; its `with_driver` flag is set, and the midlayer neither finishes nor
/// frees the command while it is.
pub struct OwnedCommand<T: 'static>(NonNull<Command<T>>);

// SAFETY: A command may be completed from any thread.
unsafe impl<T: Send + 'static> Send for OwnedCommand<T> {}

impl<T: 'static> OwnedCommand<T> {
    /// Takes ownership of a command.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid command given to the driver by `queuecommand` (see the invariants of
    /// [`Command`]), not owned by anything else.
    pub(crate) unsafe fn from_raw(ptr: *mut bindings::scsi_cmnd) -> Self {
        // INVARIANT: Guaranteed by the caller.
        // SAFETY: `ptr` is valid, hence not null.
        Self(unsafe { NonNull::new_unchecked(ptr.cast()) })
    }

    /// Takes ownership of a command that `queuecommand` hands to the driver; `None` if the
    /// driver still holds it.
    ///
    /// The midlayer never hands the driver a command the driver holds (error handling answers
    /// it only once the driver gave the command back, see [`HostOps`](super::HostOps)); the
    /// check makes a second owner impossible even if that reasoning had a hole.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid command of a host of ours that the midlayer is handing to the
    /// driver (see the invariants of [`Command`]).
    pub(crate) unsafe fn accept(ptr: *mut bindings::scsi_cmnd) -> Option<Self> {
        // SAFETY: The command is valid and its private area is an initialised `Slot<T>`.
        let cmd = unsafe { Command::<T>::from_raw(ptr) };
        // INVARIANT: The command is with the driver from now on, if it was not before.
        cmd.with_driver().cmpxchg(false, true, Acquire).ok()?;
        // SAFETY: The midlayer hands the command over and nothing else owns it (checked above).
        Some(unsafe { Self::from_raw(ptr) })
    }

    /// Gives the command back to the midlayer without completing it (host busy).
    pub(crate) fn into_raw(self) -> *mut bindings::scsi_cmnd {
        let me = ManuallyDrop::new(self);
        // INVARIANT: Given back to the midlayer.
        me.with_driver().store(false, Release);
        me.as_raw()
    }

    /// Returns the command, borrowed, together with the driver's private data for writing:
    /// to build a request from the CDB without copying it first.
    pub fn split_mut(&mut self) -> (&Command<T>, &mut T) {
        // SAFETY: By the type invariant the command is valid; a `Command` gives no access to the
        // private data, so the two borrows do not overlap.
        let cmd = unsafe { self.0.as_ref() };
        // SAFETY: As in `priv_mut`.
        let data = unsafe { &mut (*self.slot()).data };
        (cmd, data)
    }

    /// Returns the driver's private data for writing.
    pub fn priv_mut(&mut self) -> &mut T {
        // SAFETY: By the type invariant the command is owned by `self`, so the device does not
        // hold it; its private area holds an initialised `Slot<T>`, and no other reference to
        // the data exists while `self` is borrowed mutably (a borrowed `Command` gives none).
        unsafe { &mut (*self.slot()).data }
    }

    /// Sets the result: SCSI status byte `status` and host byte `host`.
    pub fn set_result(&mut self, status: u8, host: HostByte) {
        // SAFETY: The command is owned by `self`.
        unsafe {
            (*self.as_raw()).result = i32::from(status);
            bindings::set_host_byte(self.as_raw(), host as u8 as c_char);
        }
    }

    /// Sets the residual byte count, bounded by the transfer length (`scsi_set_resid()`).
    pub fn set_resid(&mut self, resid: u32) {
        let resid = resid.min(self.bufflen());
        // SAFETY: The command is owned by `self`.
        unsafe { bindings::scsi_set_resid(self.as_raw(), resid) };
    }

    /// Copies the sense data that `sense` finds in the driver's private data (the device's
    /// response, say) into the command's sense buffer, once; returns the bytes copied.
    pub fn set_sense_from(&mut self, sense: impl FnOnce(&T) -> &[u8]) -> usize {
        let (_, data) = self.split_mut();
        let sense: *const [u8] = sense(data);
        // SAFETY: `sense` points into the private data, owned by `self` and not changed until
        // this returns; it does not overlap the sense buffer.
        self.copy_sense(unsafe { &*sense })
    }

    /// Copies sense data into the command's sense buffer; returns the bytes copied.
    pub fn set_sense(&mut self, sense: &[u8]) -> usize {
        self.copy_sense(sense)
    }

    fn copy_sense(&self, sense: &[u8]) -> usize {
        // SAFETY: The command is owned by `self`.
        let buf = unsafe { (*self.as_raw()).sense_buffer };
        if buf.is_null() {
            return 0;
        }
        let n = sense.len().min(SENSE_BUFFERSIZE);
        // SAFETY: `sense_buffer` holds `SENSE_BUFFERSIZE` bytes, owned with the command by
        // `self` and not referenced elsewhere; `sense` does not overlap it.
        unsafe { core::ptr::copy_nonoverlapping(sense.as_ptr(), buf, n) };
        n
    }

    /// Completes the command (`scsi_done()`).
    pub fn done(self) {
        let raw = self.into_raw();
        // SAFETY: The command was owned by `self`, which is consumed. After a timeout the
        // midlayer ignores the call (the command is marked complete), so a late completion
        // racing error handling only tests a bit of the command, whose memory lives as long
        // as the host.
        unsafe { bindings::scsi_done(raw) };
    }
}

impl<T: 'static> core::ops::Deref for OwnedCommand<T> {
    type Target = Command<T>;

    fn deref(&self) -> &Command<T> {
        // SAFETY: By the type invariant the command is valid.
        unsafe { self.0.as_ref() }
    }
}

impl<T: 'static> Drop for OwnedCommand<T> {
    fn drop(&mut self) {
        // SAFETY: The command is owned by `self`.
        unsafe { bindings::set_host_byte(self.as_raw(), HostByte::Error as u8 as c_char) };
        // INVARIANT: Given back before `scsi_done()`.
        self.with_driver().store(false, Release);
        // SAFETY: The command is owned by `self` and is completed here, once.
        unsafe { bindings::scsi_done(self.as_raw()) };
    }
}

// SAFETY: `into_foreign` gives up ownership of the command as a pointer to it, which
// `from_foreign` takes back; the pointer is aligned like `struct scsi_cmnd`.
unsafe impl<T: 'static> ForeignOwnable for OwnedCommand<T> {
    const FOREIGN_ALIGN: usize = core::mem::align_of::<bindings::scsi_cmnd>();
    // A borrowed command gives no access to the private data, which the device may be writing.
    type Borrowed<'a> = &'a Command<T>;
    type BorrowedMut<'a> = &'a Command<T>;

    fn into_foreign(self) -> *mut c_void {
        self.into_raw().cast()
    }

    unsafe fn from_foreign(ptr: *mut c_void) -> Self {
        // SAFETY: `ptr` came from `into_foreign`, so it is an owned command.
        unsafe { Self::from_raw(ptr.cast()) }
    }

    unsafe fn borrow<'a>(ptr: *mut c_void) -> &'a Command<T> {
        // SAFETY: `ptr` came from `into_foreign` and the command is valid for `'a`.
        unsafe { Command::from_raw(ptr.cast()) }
    }

    unsafe fn borrow_mut<'a>(ptr: *mut c_void) -> &'a Command<T> {
        // SAFETY: As in `borrow`.
        unsafe { Command::from_raw(ptr.cast()) }
    }
}

/// The headers a driver exchanges with its device around a command's data: a request header
/// the device reads before the data-out buffer, a response header it writes before the data-in
/// buffer (the layout of virtio-scsi and of many HBAs).
pub trait CommandBuffers: Send + 'static {
    /// Returns the request header and the response header.
    fn headers(&mut self) -> (&[u8], &mut [u8]);
}

// SAFETY: The headers live in the command's private area and the data buffers in its
// scatterlist, both owned by the command until the midlayer gets it back, which only happens
// through `from_foreign`. The data-in buffer is not accessed by the midlayer before completion.
#[cfg(CONFIG_VIRTIO)]
unsafe impl<T: CommandBuffers> crate::virtio::virtqueue::DeviceBuffers for OwnedCommand<T> {
    fn describe<'a>(&'a mut self, sg: &mut crate::virtio::virtqueue::SgList<'a>) -> Result {
        let dir = self.data_direction();
        let sgl = if self.sg_count() > 0 {
            // SAFETY: The command is owned by `self`.
            unsafe { (*self.as_raw()).sdb.table.sgl }
        } else {
            core::ptr::null_mut()
        };
        if dir == DataDirection::Bidirectional {
            return Err(EINVAL);
        }
        let (req, resp) = self.priv_mut().headers();
        sg.readable(req)?;
        if dir == DataDirection::ToDevice && !sgl.is_null() {
            // SAFETY: The data scatterlist of an owned command is valid and terminated; the
            // midlayer does not touch it until completion.
            unsafe { sg.chain(sgl, false)? };
        }
        sg.writable(resp)?;
        if dir == DataDirection::FromDevice && !sgl.is_null() {
            // SAFETY: As above.
            unsafe { sg.chain(sgl, true)? };
        }
        Ok(())
    }
}
