// SPDX-License-Identifier: GPL-2.0

//! The block device side: request queueing, the disk's sysfs attributes, and
//! adding the disk once its device is identified.

use kernel::{
    block::mq::{
        gen_disk::{
            DiskAttributes,
            GenDisk,
            GenDiskBuilder,
            Geometry,
            HDIO_GET_IDENTITY, //
        },
        Op, Operations, Request, TagSet,
    },
    prelude::*,
    str::Formatter,
    sync::{aref::ARef, Arc, ArcBorrow},
    uaccess::{UserPtr, UserSlice},
    workqueue::WorkItem,
};

use crate::{
    aoe::{MINORS, QUEUE_DEPTH},
    dev::{Dev, Life, DISK_WORK},
    module_parameters,
    tx::{pump, Alloc},
    wire::{self, Mac},
    RaoeModule, //
};

/// The block driver.
pub(crate) struct Raoe;

#[vtable]
impl Operations for Raoe {
    type QueueData = Arc<Dev>;

    fn queue_rq(dev: ArcBorrow<'_, Dev>, rq: ARef<Request<Self>>, _is_last: bool) -> Result {
        match rq.op() {
            Op::Read | Op::Write => {}
            _ => return Err(EOPNOTSUPP),
        }
        {
            let mut st = dev.st.lock();
            if st.life.failing() {
                return Err(EIO);
            }
            // Never full: the ring has a slot per tag.
            if st.pending.push(rq).is_err() {
                return Err(EBUSY);
            }
        }
        // Send what the window allows from here (the C driver builds its
        // frames in `queue_rq` too); nothing sleeps.
        pump(dev, Alloc::Atomic);
        Ok(())
    }

    fn commit_rqs(_dev: ArcBorrow<'_, Dev>) {}

    fn complete(rq: ARef<Request<Self>>) {
        let _ = Request::end_ok(rq);
    }

    fn timeout(dev: ArcBorrow<'_, Dev>, tag: u32) {
        // Only reached if our own aging failed to end the request.
        pr_err!(
            "e{}.{}: request (tag {tag}) outlived aoe_deadsecs\n",
            dev.addr.major,
            dev.addr.minor
        );
    }
}

#[vtable]
impl DiskAttributes for Raoe {
    type Module = RaoeModule;
    const NAMES: &'static [&'static CStr] = &[c"state", c"mac", c"netif", c"fwver", c"payload"];

    fn show(dev: ArcBorrow<'_, Dev>, index: usize, out: &mut Formatter<'_>) -> Result {
        use core::fmt::Write;
        let st = dev.st.lock();
        let r = match index {
            0 => writeln!(out, "{}", st.life.sysfs()),
            1 => match st.paths.first() {
                Some(p) => writeln!(out, "{}", Mac(&p.mac)),
                None => writeln!(out, "none"),
            },
            2 => {
                for (i, p) in st.paths.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(out, "{}{}", sep, p.ifp.name()).map_err(|_| EINVAL)?;
                }
                writeln!(out)
            }
            3 => writeln!(out, "0x{:04x}", st.fwver),
            _ => writeln!(
                out,
                "{}",
                st.paths.iter().map(|p| p.payload).min().unwrap_or(0)
            ),
        };
        r.map_err(|_| EINVAL)
    }

    /// The geometry from the last IDENTIFY; `ENODEV` for a device that is
    /// down or gone (the disk may be open after its device was flushed).
    fn getgeo(dev: ArcBorrow<'_, Dev>) -> Result<Geometry> {
        let st = dev.st.lock();
        if st.life.failing() {
            return Err(ENODEV);
        }
        let (cylinders, heads, sectors) = st.chs;
        Ok(Geometry {
            heads,
            sectors,
            cylinders,
        })
    }

    /// `HDIO_GET_IDENTITY`: the target's last IDENTIFY data (512 bytes), as
    /// the C driver gives it.
    fn ioctl(dev: ArcBorrow<'_, Dev>, cmd: u32, arg: UserPtr) -> Result {
        if cmd != HDIO_GET_IDENTITY {
            return Err(ENOTTY);
        }
        if arg.as_const_ptr().is_null() {
            return Err(EINVAL);
        }
        let ident = {
            let st = dev.st.lock();
            if st.life.failing() {
                return Err(ENODEV);
            }
            st.ident
        };
        UserSlice::new(arg, ident.len())
            .writer()
            .write_slice(&ident)
    }
}

impl WorkItem<DISK_WORK> for Dev {
    type Pointer = Arc<Dev>;

    /// Adds the disk once the device is identified, or updates its capacity.
    fn run(dev: Arc<Dev>) {
        // `Aoe::flush` marks the device gone before it takes the disk:
        // checking under the disk lock means no disk is added after it.
        let mut disk = dev.disk.lock();
        let sectors = {
            let st = dev.st.lock();
            if st.life == Life::Gone {
                return;
            }
            st.sectors
        };
        if let Some(d) = disk.as_ref() {
            d.set_capacity(sectors);
            return;
        }
        let timeout_ms = (module_parameters::aoe_deadsecs.value())
            .saturating_add(30)
            .saturating_mul(1000);
        let built = (|| -> Result<GenDisk<Raoe>> {
            let tagset = Arc::pin_init(
                TagSet::with_timeout(1, QUEUE_DEPTH, 1, timeout_ms),
                GFP_KERNEL,
            )?;
            let mut b = GenDiskBuilder::new()
                .capacity_sectors(sectors)
                .logical_block_size(wire::SECTOR as u32)?
                .physical_block_size(wire::SECTOR as u32)?
                .max_hw_sectors(module_parameters::aoe_maxsectors.value())?;
            if let Some((major, first)) = &dev.numbers {
                b = b.device_numbers(major, *first, MINORS)?;
            }
            b.build_with_attributes(
                fmt!("etherd!e{}.{}", dev.addr.major, dev.addr.minor),
                tagset,
                dev.clone(),
            )
        })();
        match built {
            Ok(d) => {
                pr_info!(
                    "e{}.{}: {} sectors ({} MiB)\n",
                    dev.addr.major,
                    dev.addr.minor,
                    sectors,
                    sectors >> 11
                );
                *disk = Some(d);
            }
            Err(e) => pr_err!(
                "e{}.{}: cannot add disk: {:?}\n",
                dev.addr.major,
                dev.addr.minor,
                e
            ),
        }
    }
}
