// SPDX-License-Identifier: GPL-2.0

//! SCSI commands (`struct scsi_cmnd`).
//!
//! C header: [`include/scsi/scsi_cmnd.h`](srctree/include/scsi/scsi_cmnd.h)

use crate::{
    bindings,
    prelude::*,
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

/// The direction of a command's data transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirection {
    /// No data.
    None,
    /// Data goes to the device (a write).
    ToDevice,
    /// Data comes from the device (a read).
    FromDevice,
    /// Both directions (not issued by the block layer).
    Bidirectional,
}

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

/// A SCSI command, borrowed.
///
/// `T` is the driver's per-command private data (`scsi_cmd_priv()`), see
/// [`HostOps::CmdPriv`](super::HostOps::CmdPriv).
///
/// # Invariants
///
/// `self.0` is a valid `struct scsi_cmnd` of a host whose template has `cmd_size` equal to
/// `size_of::<T>()` and whose private area holds an initialised `T`.
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
        // SAFETY: Computes with a value.
        unsafe { bindings::blk_mq_unique_tag_to_hwq(self.unique_tag()) }
    }

    /// Returns `true` if this is the last command of a batch; the driver then notifies the
    /// device (`SCMD_LAST`). Otherwise [`HostOps::commit_rqs`](super::HostOps::commit_rqs)
    /// follows the batch.
    pub fn is_last(&self) -> bool {
        // SAFETY: By the type invariant the command is valid.
        unsafe { (*self.as_raw()).flags & bindings::SCMD_LAST as i32 != 0 }
    }

    /// Returns whether hardware queue `hwq` of the command's host serves at least one online
    /// CPU in the host's default queue map.
    pub fn queue_has_online_cpu(&self, hwq: u32) -> bool {
        // SAFETY: The host of a valid command's device is valid.
        let shost = unsafe { (*self.sdev()).host };
        super::host::queue_has_online_cpu(shost, hwq)
    }

    /// Returns the driver's private data of the command.
    pub fn priv_data(&self) -> &T {
        // SAFETY: By the type invariant the private area holds an initialised `T`, which is only
        // mutated through `OwnedCommand::priv_mut`, which cannot coexist with this borrow.
        unsafe { &*bindings::scsi_cmd_priv(self.as_raw()).cast::<T>() }
    }
}

/// A SCSI command owned by the low-level driver, from `queuecommand` until `scsi_done()`.
///
/// Dropping it without [`OwnedCommand::done`] completes the command with [`HostByte::Error`], so
/// that no command is ever lost.
///
/// # Invariants
///
/// `self.0` points to a valid [`Command<T>`] that the midlayer has handed to the driver and not
/// yet been completed.
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

    /// Gives the command back to the midlayer without completing it.
    pub(crate) fn into_raw(self) -> *mut bindings::scsi_cmnd {
        let me = ManuallyDrop::new(self);
        me.as_raw()
    }

    /// Returns the driver's private data for writing.
    pub fn priv_mut(&mut self) -> &mut T {
        // SAFETY: By the type invariant the command is owned by `self`; its private area holds an
        // initialised `T` and no other reference to it exists while `self` is borrowed mutably.
        unsafe { &mut *bindings::scsi_cmd_priv(self.as_raw()).cast::<T>() }
    }

    /// Sets the result: SCSI status byte `status` and host byte `host`.
    pub fn set_result(&mut self, status: u8, host: HostByte) {
        // SAFETY: The command is owned by `self`.
        unsafe {
            (*self.as_raw()).result = status as i32;
            bindings::set_host_byte(self.as_raw(), host as u8 as c_char);
        }
    }

    /// Sets the residual byte count, bounded by the transfer length (`scsi_set_resid()`).
    pub fn set_resid(&mut self, resid: u32) {
        let resid = resid.min(self.bufflen());
        // SAFETY: The command is owned by `self`.
        unsafe { bindings::scsi_set_resid(self.as_raw(), resid) };
    }

    /// Copies sense data into the command's sense buffer; returns the bytes copied.
    pub fn set_sense(&mut self, sense: &[u8]) -> usize {
        let n = sense.len().min(SENSE_BUFFERSIZE);
        // SAFETY: The command is owned by `self`; `sense_buffer` holds `SENSE_BUFFERSIZE` bytes.
        unsafe {
            let buf = (*self.as_raw()).sense_buffer;
            if buf.is_null() {
                return 0;
            }
            core::ptr::copy_nonoverlapping(sense.as_ptr(), buf, n);
        }
        n
    }

    /// Completes the command (`scsi_done()`).
    pub fn done(self) {
        let raw = self.into_raw();
        // SAFETY: The command was owned by `self`, which is consumed.
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
        // SAFETY: The command is owned by `self` and is completed here, once.
        unsafe {
            bindings::set_host_byte(self.as_raw(), HostByte::Error as u8 as c_char);
            bindings::scsi_done(self.as_raw());
        }
    }
}

// SAFETY: `into_foreign` gives up ownership of the command as a pointer to it, which
// `from_foreign` takes back; the pointer is aligned like `struct scsi_cmnd`.
unsafe impl<T: 'static> ForeignOwnable for OwnedCommand<T> {
    const FOREIGN_ALIGN: usize = core::mem::align_of::<bindings::scsi_cmnd>();
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
