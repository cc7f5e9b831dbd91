// SPDX-License-Identifier: GPL-2.0

//! SCSI devices (`struct scsi_device`): the logical units of a host.
//!
//! C header: [`include/scsi/scsi_device.h`](srctree/include/scsi/scsi_device.h)

use crate::{
    bindings,
    prelude::*,
    time::msecs_to_jiffies,
    types::Opaque, //
};

/// A SCSI device (logical unit), borrowed while the caller holds a reference to it (see
/// [`HostRef::for_each_device`](super::HostRef::for_each_device)).
///
/// # Examples
///
/// ```
/// use kernel::scsi::{Device, HostRef};
///
/// /// Reads the unit serial number of `sdev` (INQUIRY of the VPD page 0x80).
/// fn serial(sdev: &Device) -> Result<KVec<u8>> {
///     let cdb = [0x12, 0x01, 0x80, 0x00, 0xff, 0x00];
///     let done = sdev.execute_read(&cdb, 255, 30_000, 3)?;
///     if !done.is_good() {
///         pr_warn!("INQUIRY failed, host byte {:#x}\n", done.host_byte());
///         return Err(EIO);
///     }
///     // Page header, then the number of bytes of the serial number.
///     let len = usize::from(*done.data.get(3).ok_or(EIO)?);
///     let mut sn = KVec::new();
///     sn.extend_from_slice(done.data.get(4..4 + len).ok_or(EIO)?, GFP_KERNEL)?;
///     Ok(sn)
/// }
///
/// /// Logs the logical units of `host`.
/// fn list(host: &HostRef) {
///     host.for_each_device(|sdev| {
///         let (c, t, l) = (sdev.channel(), sdev.id(), sdev.lun());
///         pr_info!(
///             "{}:{c}:{t}:{l}: {} bytes of INQUIRY data\n",
///             host.host_no(),
///             sdev.inquiry_len()
///         );
///     });
/// }
/// ```
///
/// # Invariants
///
/// `self.0` is a valid `struct scsi_device` on which a reference is held for the lifetime of
/// the borrow.
#[repr(transparent)]
pub struct Device(Opaque<bindings::scsi_device>);

/// The outcome of a command run by [`Device::execute_read`].
pub struct Completed {
    result: i32,
    /// The data the device returned (the whole buffer; the device may have filled less).
    pub data: KVec<u8>,
}

impl Completed {
    /// Returns whether the command completed with good status and no host error.
    pub fn is_good(&self) -> bool {
        self.result == 0
    }

    /// Returns the host byte of the result (`host_byte()`, a `DID_*` value).
    pub fn host_byte(&self) -> u8 {
        ((self.result >> 16) & 0xff) as u8
    }
}

impl Device {
    /// Creates a reference from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid device on which a reference is held for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::scsi_device) -> &'a Self {
        // SAFETY: `Device` is a transparent wrapper; validity is guaranteed by the caller.
        unsafe { &*ptr.cast() }
    }

    fn as_raw(&self) -> *mut bindings::scsi_device {
        self.0.get()
    }

    /// Returns the channel of the device.
    pub fn channel(&self) -> u32 {
        // SAFETY: By the type invariant the device is valid; the field does not change.
        unsafe { (*self.as_raw()).channel }
    }

    /// Returns the target ID of the device.
    pub fn id(&self) -> u32 {
        // SAFETY: As in `channel()`.
        unsafe { (*self.as_raw()).id }
    }

    /// Returns the LUN of the device.
    pub fn lun(&self) -> u64 {
        // SAFETY: As in `channel()`.
        unsafe { (*self.as_raw()).lun }
    }

    /// Returns the length of the device's standard INQUIRY data, 0 if unknown.
    pub fn inquiry_len(&self) -> u8 {
        // SAFETY: As in `channel()`; set once at scan.
        unsafe { (*self.as_raw()).inquiry_len }
    }

    /// Runs a command that reads up to `len` bytes from the device (`scsi_execute_cmd()` with
    /// `REQ_OP_DRV_IN`), with a timeout of `timeout_ms` and up to `retries` retries; sleeps
    /// until it completes.
    ///
    /// Returns an error if the command could not be issued; otherwise its result and data.
    pub fn execute_read(
        &self,
        cdb: &[u8],
        len: usize,
        timeout_ms: u32,
        retries: i32,
    ) -> Result<Completed> {
        let mut data = KVec::from_elem(0u8, len, GFP_KERNEL)?;
        let bufflen = u32::try_from(len).map_err(|_| EINVAL)?;
        let mut cmd = [0u8; bindings::MAX_COMMAND_SIZE as usize];
        let n = cdb.len().min(cmd.len());
        cmd[..n].copy_from_slice(&cdb[..n]);
        let timeout = i32::try_from(msecs_to_jiffies(timeout_ms)).unwrap_or(i32::MAX);
        // SAFETY: The device is valid (type invariant); `cmd` is `MAX_COMMAND_SIZE` bytes;
        // `data` is `len` bytes of heap memory (the block layer maps it), written only by the
        // device until the call returns.
        let result = unsafe {
            bindings::scsi_execute_cmd(
                self.as_raw(),
                cmd.as_ptr(),
                bindings::req_op_REQ_OP_DRV_IN,
                data.as_mut_ptr().cast(),
                bufflen,
                timeout,
                retries,
                core::ptr::null(),
            )
        };
        if result < 0 {
            return Err(Error::from_errno(result));
        }
        Ok(Completed { result, data })
    }

    /// Removes the device (`scsi_remove_device()`); sleeps.
    pub fn remove(&self) {
        // SAFETY: The device is valid and referenced (type invariant).
        unsafe { bindings::scsi_remove_device(self.as_raw()) }
    }
}
