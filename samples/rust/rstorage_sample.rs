// SPDX-License-Identifier: GPL-2.0

//! A sample that proves the rstorage build, load and test path.
//!
//! It registers the misc device `/dev/rstorage-sample`: a file of up to
//! [`CAPACITY`] bytes held in memory. `pwrite` stores data at the file position
//! (growing the file), `pread` returns it, so user space can push data through
//! the module and verify it byte for byte. The positional logic lives in
//! [`Store`], which the KUnit suite `rstorage_sample` tests directly.
//!
//! The `warn_on_load` parameter makes module initialisation raise a kernel
//! `WARNING`; the test harness uses it to prove that a splat fails a run.

// All unsafe code lives in the kernel crate's abstractions.
#![forbid(unsafe_code)]

use kernel::{
    fs::Kiocb,
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    new_mutex,
    prelude::*,
    sync::Mutex,
    warn_on,
};

module! {
    type: RstorageSample,
    name: "rstorage_sample",
    authors: ["rstorage developers"],
    description: "rstorage sample: an in-memory misc device file",
    license: "GPL",
    params: {
        warn_on_load: bool {
            default: false,
            description: "Raise a kernel WARNING at load (tests the test harness)",
        },
    },
}

/// Largest file the device holds.
const CAPACITY: usize = 4 << 20;

/// Bytes of an in-memory file with positional reads and writes.
struct Store {
    data: KVVec<u8>,
}

impl Store {
    fn new() -> Self {
        Self { data: KVVec::new() }
    }

    /// Validates a file position for an access and returns it as an index.
    fn offset(pos: i64) -> Result<usize> {
        let pos = usize::try_from(pos).map_err(|_| EINVAL)?;
        if pos > CAPACITY {
            return Err(EFBIG);
        }
        Ok(pos)
    }

    /// Makes `[pos, pos + len)` writable, zero-filling any hole, and returns it.
    ///
    /// `len` is cut so that the file never grows beyond [`CAPACITY`]; a write
    /// that starts at the capacity fails with `EFBIG`.
    fn window(&mut self, pos: i64, len: usize) -> Result<&mut [u8]> {
        let start = Self::offset(pos)?;
        let end = start + len.min(CAPACITY - start);
        if len > 0 && start == end {
            return Err(EFBIG);
        }
        if end > self.data.len() {
            self.data.resize(end, 0, GFP_KERNEL)?;
        }
        Ok(&mut self.data[start..end])
    }

    /// Returns the stored bytes from `pos` to the end of the file.
    fn tail(&self, pos: i64) -> Result<&[u8]> {
        let start = Self::offset(pos)?.min(self.data.len());
        Ok(&self.data[start..])
    }
}

#[pin_data]
struct RstorageSample {
    #[pin]
    _miscdev: MiscDeviceRegistration<SampleFile>,
}

impl kernel::InPlaceModule for RstorageSample {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        warn_on!(module_parameters::warn_on_load.value());
        pr_info!("rstorage sample loaded\n");
        try_pin_init!(Self {
            _miscdev <- MiscDeviceRegistration::register(
                MiscDeviceOptions {
                    name: c"rstorage-sample",
                },
                (),
            ),
        })
    }
}

/// State of one open file: every open starts with an empty store.
#[pin_data]
struct SampleFile {
    #[pin]
    store: Mutex<Store>,
}

#[vtable]
impl MiscDevice for SampleFile {
    type Ptr = Pin<KBox<Self>>;
    type RegistrationData = ();

    fn open(
        _file: &kernel::fs::File,
        _misc: &MiscDeviceRegistration<Self>,
    ) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            try_pin_init!(SampleFile {
                store <- new_mutex!(Store::new()),
            }),
            GFP_KERNEL,
        )
    }

    fn read_iter(mut kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let file = kiocb.file();
        let store = file.store.lock();
        let pos = *kiocb.ki_pos_mut();
        let copied = iov.copy_to_iter(store.tail(pos)?);
        *kiocb.ki_pos_mut() += copied as i64;
        Ok(copied)
    }

    fn write_iter(mut kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let file = kiocb.file();
        let mut store = file.store.lock();
        let pos = *kiocb.ki_pos_mut();
        let copied = iov.copy_from_iter(store.window(pos, iov.len())?);
        *kiocb.ki_pos_mut() += copied as i64;
        Ok(copied)
    }
}

#[kunit_tests(rstorage_sample)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back() -> Result {
        let mut s = Store::new();
        s.window(0, 4)?.copy_from_slice(b"abcd");
        assert_eq!(s.tail(0)?, b"abcd");
        assert_eq!(s.tail(2)?, b"cd");
        assert_eq!(s.tail(9)?, b"");
        Ok(())
    }

    #[test]
    fn hole_is_zero_filled() -> Result {
        let mut s = Store::new();
        s.window(3, 2)?.copy_from_slice(b"xy");
        assert_eq!(s.tail(0)?, b"\0\0\0xy");
        Ok(())
    }

    #[test]
    fn capacity_is_enforced() -> Result {
        let mut s = Store::new();
        assert_eq!(s.window(CAPACITY as i64 - 2, 8)?.len(), 2);
        assert_eq!(s.window(CAPACITY as i64, 1).err(), Some(EFBIG));
        assert_eq!(s.window(-1, 1).err(), Some(EINVAL));
        Ok(())
    }
}
