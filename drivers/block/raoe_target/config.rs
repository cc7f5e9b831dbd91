// SPDX-License-Identifier: GPL-2.0

//! The configfs interface: `/sys/kernel/config/raoe_target/<name>/`.
//!
//! Each directory made under `raoe_target` is one exported device. Its attributes:
//!
//! - `backing`: path of the block device or file served (required);
//! - `iface`: the network interface it answers on (required);
//! - `shelf`, `slot`: its AoE address (0-65534, 0-254; default 0.0);
//! - `read_only`: 1 to refuse writes (default 0);
//! - `bufcnt`: requests it buffers, announced to initiators (1-4096, default 64);
//! - `enable`: write 1 to open the backing store and start answering, 0 to stop (waits for
//!   the requests in flight to be answered);
//! - `stats` (read only): size, frame size and counters.
//!
//! Settings can only change while the device is disabled (`EBUSY` otherwise).

use crate::{
    proto::Addr,
    target::{
        Receiver,
        Settings,
        Target, //
    },
};
use kernel::{
    configfs::{
        self,
        AttributeOperations, //
    },
    configfs_attrs,
    fmt::{
        self,
        Write as _, //
    },
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    str::{
        kstrtobool_bytes,
        CString,
        Formatter, //
    },
    sync::{atomic::Relaxed, Arc, Mutex},
};

/// Default `bufcnt`.
const DEFAULT_BUFCNT: u16 = 64;

/// Builds the `raoe_target` subsystem, whose devices are served through `rx`.
pub(crate) fn subsystem(rx: Arc<Receiver>) -> impl PinInit<configfs::Subsystem<Config>, Error> {
    let item_type = configfs_attrs! {
        container: configfs::Subsystem<Config>,
        data: Config,
        child: DeviceConfig,
        attributes: [],
    };
    configfs::Subsystem::new(c"raoe_target", item_type, try_pin_init!(Config { rx }))
}

/// The subsystem: a directory of exported devices.
#[pin_data]
pub(crate) struct Config {
    rx: Arc<Receiver>,
}

#[vtable]
impl configfs::GroupOperations for Config {
    type Child = DeviceConfig;

    fn make_group(
        &self,
        name: &CStr,
    ) -> Result<impl PinInit<configfs::Group<DeviceConfig>, Error>> {
        let item_type = configfs_attrs! {
            container: configfs::Group<DeviceConfig>,
            data: DeviceConfig,
            attributes: [
                backing: 0,
                iface: 1,
                shelf: 2,
                slot: 3,
                read_only: 4,
                bufcnt: 5,
                enable: 6,
                stats: 7,
            ],
        };
        let rx = self.rx.clone();
        Ok(configfs::Group::new(
            name.try_into()?,
            item_type,
            try_pin_init!(DeviceConfig {
                inner <- new_mutex!(
                    Inner {
                        backing: None,
                        iface: None,
                        addr: Addr { major: 0, minor: 0 },
                        read_only: false,
                        bufcnt: DEFAULT_BUFCNT,
                        running: None,
                    },
                    "raoe_target:device"
                ),
                rx,
            }),
        ))
    }
}

/// An enabled device: registered with the receiver until dropped.
struct Running {
    target: Arc<Target>,
    rx: Arc<Receiver>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // No new request reaches the target, then the queued ones are answered.
        self.rx.remove(&self.target);
        self.target.drain();
    }
}

struct Inner {
    backing: Option<CString>,
    iface: Option<CString>,
    addr: Addr,
    read_only: bool,
    bufcnt: u16,
    running: Option<Running>,
}

/// One exported device's directory.
#[pin_data]
pub(crate) struct DeviceConfig {
    #[pin]
    inner: Mutex<Inner>,
    rx: Arc<Receiver>,
}

impl DeviceConfig {
    /// Changes a setting of a disabled device.
    fn set(&self, f: impl FnOnce(&mut Inner) -> Result) -> Result {
        let mut inner = self.inner.lock();
        if inner.running.is_some() {
            return Err(EBUSY);
        }
        f(&mut inner)
    }

    fn show(
        &self,
        page: &mut [u8; PAGE_SIZE],
        f: impl FnOnce(&Inner, &mut Formatter<'_>) -> fmt::Result,
    ) -> Result<usize> {
        let mut w = Formatter::new(page);
        f(&self.inner.lock(), &mut w)?;
        Ok(w.bytes_written())
    }
}

/// The text of a store, without the trailing newline.
fn text(page: &[u8]) -> Result<&str> {
    Ok(core::str::from_utf8(page)?.trim())
}

/// A path or interface name from a store, as a C string.
fn name(page: &[u8]) -> Result<Option<CString>> {
    let t = text(page)?;
    if t.is_empty() {
        return Ok(None);
    }
    Ok(Some(CString::try_from_fmt(fmt!("{t}"))?))
}

fn show_name(w: &mut Formatter<'_>, n: &Option<CString>) -> fmt::Result {
    match n {
        Some(n) => writeln!(w, "{}", n.to_str().unwrap_or("?")),
        None => writeln!(w),
    }
}

#[vtable]
impl AttributeOperations<0> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        this.show(page, |i, w| show_name(w, &i.backing))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        let n = name(page)?;
        this.set(|i| {
            i.backing = n;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<1> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        this.show(page, |i, w| show_name(w, &i.iface))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        let n = name(page)?;
        this.set(|i| {
            i.iface = n;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<2> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        this.show(page, |i, w| writeln!(w, "{}", i.addr.major))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        // 0xffff is the wildcard of requests.
        let v = text(page)?.parse::<u16>().map_err(|_| EINVAL)?;
        if v == 0xffff {
            return Err(EINVAL);
        }
        this.set(|i| {
            i.addr.major = v;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<3> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        this.show(page, |i, w| writeln!(w, "{}", i.addr.minor))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        // 0xff is the wildcard of requests.
        let v = text(page)?.parse::<u8>().map_err(|_| EINVAL)?;
        if v == 0xff {
            return Err(EINVAL);
        }
        this.set(|i| {
            i.addr.minor = v;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<4> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        this.show(page, |i, w| writeln!(w, "{}", u8::from(i.read_only)))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        let v = kstrtobool_bytes(page)?;
        this.set(|i| {
            i.read_only = v;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<5> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        this.show(page, |i, w| writeln!(w, "{}", i.bufcnt))
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        let v = text(page)?.parse::<u16>().map_err(|_| EINVAL)?;
        if !(1..=4096).contains(&v) {
            return Err(EINVAL);
        }
        this.set(|i| {
            i.bufcnt = v;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<6> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        this.show(page, |i, w| {
            writeln!(w, "{}", u8::from(i.running.is_some()))
        })
    }

    fn store(this: &DeviceConfig, page: &[u8]) -> Result {
        let on = kstrtobool_bytes(page)?;
        let mut i = this.inner.lock();
        match (on, i.running.is_some()) {
            (true, false) => {
                let (Some(backing), Some(iface)) = (&i.backing, &i.iface) else {
                    return Err(EINVAL);
                };
                let settings = Settings {
                    addr: i.addr,
                    iface,
                    backing,
                    read_only: i.read_only,
                    bufcnt: i.bufcnt,
                };
                let target = Target::new(&settings)?;
                this.rx.add(target.clone())?;
                i.running = Some(Running {
                    target,
                    rx: this.rx.clone(),
                });
            }
            // Dropping the registration stops the device and waits for its requests.
            (false, true) => i.running = None,
            _ => {}
        }
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<7> for DeviceConfig {
    type Data = DeviceConfig;

    fn show(this: &DeviceConfig, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        this.show(page, |i, w| {
            let Some(r) = &i.running else {
                return writeln!(w, "disabled");
            };
            let t = &r.target;
            let s = &t.stats;
            writeln!(w, "address {}.{}", t.addr.major, t.addr.minor)?;
            writeln!(w, "sectors {}", t.sectors)?;
            writeln!(w, "max_sectors_per_frame {}", t.max_sectors)?;
            writeln!(w, "bufcnt {}", t.bufcnt)?;
            for (n, c) in [
                ("reads", &s.reads),
                ("writes", &s.writes),
                ("identifies", &s.identifies),
                ("flushes", &s.flushes),
                ("configs", &s.configs),
                ("aborted", &s.aborted),
                ("aoe_errors", &s.aoe_errors),
                ("malformed", &s.malformed),
                ("dropped", &s.dropped),
                ("xmit_errors", &s.xmit_errors),
            ] {
                writeln!(w, "{n} {}", c.load(Relaxed))?;
            }
            Ok(())
        })
    }
}
