// SPDX-License-Identifier: GPL-2.0

//! Files opened by the kernel for its own I/O.
//!
//! A [`KernelFile`] is a file (a block device node or a regular file) that kernel code opened by
//! path (`filp_open()`) to read and write it itself, as a storage target serves a backing store.
//! All of its operations may sleep.
//!
//! C header: [`include/linux/fs.h`](srctree/include/linux/fs.h)

use crate::{
    bindings,
    error::{from_err_ptr, to_result, Result},
    prelude::*,
    str::CStr,
    task::might_sleep,
};
use core::ptr::NonNull;

/// How a [`KernelFile`] is opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Reads only (`O_RDONLY`).
    ReadOnly,
    /// Reads and writes (`O_RDWR`).
    ReadWrite,
}

/// A file the kernel opened by path, with its own reference.
///
/// Every method may sleep: they are called from process context (a work item, a kernel thread,
/// a configfs store), never from an interrupt or a softirq.
///
/// # Invariants
///
/// `file` is a valid `struct file` opened by `filp_open()` whose reference this object owns;
/// it is opened for writing if and only if `access` is [`Access::ReadWrite`].
///
/// # Examples
///
/// ```no_run
/// use kernel::fs::kernel_file::{Access, KernelFile};
/// # use kernel::prelude::*;
/// fn first_sector(path: &CStr) -> Result<[u8; 512]> {
///     let f = KernelFile::open(path, Access::ReadOnly)?;
///     let mut sector = [0u8; 512];
///     if f.read_at(&mut sector, 0)? != sector.len() {
///         return Err(EIO);
///     }
///     Ok(sector)
/// }
/// ```
///
/// Writing needs a file opened for writing; a read-only one refuses:
///
/// ```no_run
/// use kernel::fs::kernel_file::{Access, KernelFile};
/// # use kernel::prelude::*;
/// fn try_write(path: &CStr) -> Result {
///     let f = KernelFile::open(path, Access::ReadOnly)?;
///     assert_eq!(f.write_at(&[0; 512], 0), Err(EBADF));
///     Ok(())
/// }
/// ```
pub struct KernelFile {
    file: NonNull<bindings::file>,
    access: Access,
}

// SAFETY: A `struct file` reference may be used and dropped from any thread; the kernel's file
// operations do their own locking.
unsafe impl Send for KernelFile {}

// SAFETY: Every method takes `&self` and calls file operations that may run concurrently (the
// position is passed explicitly, the file's own position is not used).
unsafe impl Sync for KernelFile {}

impl KernelFile {
    /// Opens `path` (`filp_open()` with `O_LARGEFILE`), resolved in the calling task's
    /// namespace. May sleep.
    pub fn open(path: &CStr, access: Access) -> Result<Self> {
        might_sleep();
        let mode = match access {
            Access::ReadOnly => bindings::O_RDONLY,
            Access::ReadWrite => bindings::O_RDWR,
        };
        let flags = (mode | bindings::O_LARGEFILE) as i32;
        // SAFETY: `path` is a NUL-terminated string; `filp_open()` returns a file reference
        // or an error pointer.
        let file = from_err_ptr(unsafe { bindings::filp_open(path.as_char_ptr(), flags, 0) })?;
        let file = NonNull::new(file).ok_or(ENOENT)?;
        // INVARIANT: `file` was just opened with `access`, and its reference is ours.
        Ok(Self { file, access })
    }

    /// Returns how the file was opened.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Returns the size of the file's data in bytes: the device's size for a block device
    /// node, the file's size for a regular file (`i_size_read()` of the mapping's host).
    pub fn size(&self) -> u64 {
        // SAFETY: `file` is valid (type invariant).
        let size = unsafe { bindings::kernel_file_size(self.file.as_ptr()) };
        u64::try_from(size).unwrap_or(0)
    }

    /// Returns `Ok(pos)` as a file position if `[pos, pos + len)` can be addressed.
    fn position(pos: u64, len: usize) -> Result<bindings::loff_t> {
        let end = pos.checked_add(len as u64).ok_or(EINVAL)?;
        bindings::loff_t::try_from(end).map_err(|_| EINVAL)?;
        bindings::loff_t::try_from(pos).map_err(|_| EINVAL)
    }

    /// Reads into `buf` from byte `pos` (`kernel_read()`); returns how many bytes were read,
    /// fewer than `buf.len()` only at the end of the file. May sleep.
    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> Result<usize> {
        might_sleep();
        let mut pos = Self::position(pos, buf.len())?;
        // SAFETY: `file` is valid (type invariant); `buf` is `buf.len()` writable bytes of kernel
        // memory that no one else accesses during the call.
        let ret = unsafe {
            bindings::kernel_read(
                self.file.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut pos,
            )
        };
        usize::try_from(ret).map_err(|_| Error::from_errno(ret as i32))
    }

    /// Writes `buf` at byte `pos` (`kernel_write()`); returns how many bytes were written.
    /// Fails with `EBADF` on a file opened [`Access::ReadOnly`]. May sleep.
    pub fn write_at(&self, buf: &[u8], pos: u64) -> Result<usize> {
        might_sleep();
        if self.access != Access::ReadWrite {
            return Err(EBADF);
        }
        let mut pos = Self::position(pos, buf.len())?;
        // SAFETY: `file` is valid and open for writing (type invariant); `buf` is `buf.len()`
        // readable bytes of kernel memory.
        let ret = unsafe {
            bindings::kernel_write(self.file.as_ptr(), buf.as_ptr().cast(), buf.len(), &mut pos)
        };
        usize::try_from(ret).map_err(|_| Error::from_errno(ret as i32))
    }

    /// Writes the file's dirty data and metadata to its device and flushes the device's
    /// cache (`vfs_fsync()`). May sleep.
    pub fn sync(&self) -> Result {
        might_sleep();
        // SAFETY: `file` is valid (type invariant).
        to_result(unsafe { bindings::vfs_fsync(self.file.as_ptr(), 0) })
    }
}

impl Drop for KernelFile {
    fn drop(&mut self) {
        // SAFETY: `file` is valid and its reference ours (type invariant). `fput()` may be called
        // from any context (the last reference is released from a work item); data written is
        // made durable by `sync()`, not by closing.
        unsafe { bindings::fput(self.file.as_ptr()) };
    }
}
