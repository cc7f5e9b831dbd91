// SPDX-License-Identifier: GPL-2.0

//! The `/dev/etherd/` control files of aoetools: `discover`, `interfaces`,
//! `revalidate`, `flush` (written) and `err` (read).

use kernel::{
    fs::{File, Kiocb},
    iov::{IovIterDest, IovIterSource},
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    prelude::*,
    sync::Arc,
    time::Instant,
};

use crate::{
    aoe::Aoe,
    dev::{Dev, Life},
    iflist::Names,
    wire::Addr,
};

/// Which control file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtlKind {
    Discover,
    Interfaces,
    Revalidate,
    Flush,
    /// Read only: error messages.
    Err,
}

impl CtlKind {
    /// Every control file, with its node under `/dev`.
    pub(crate) const ALL: [(&'static CStr, CtlKind); 5] = [
        (c"etherd!discover", CtlKind::Discover),
        (c"etherd!interfaces", CtlKind::Interfaces),
        (c"etherd!revalidate", CtlKind::Revalidate),
        (c"etherd!flush", CtlKind::Flush),
        (c"etherd!err", CtlKind::Err),
    ];
}

/// An open control file.
pub(crate) struct Ctl {
    aoe: Arc<Aoe>,
    kind: CtlKind,
}

#[vtable]
impl MiscDevice for Ctl {
    type Ptr = KBox<Self>;
    type RegistrationData = (Arc<Aoe>, CtlKind);

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let (aoe, kind) = misc.data();
        Ok(KBox::new(
            Ctl {
                aoe: aoe.clone(),
                kind: *kind,
            },
            GFP_KERNEL,
        )?)
    }

    fn read_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let ctl = kiocb.file();
        match ctl.kind {
            CtlKind::Err => ctl.aoe.err.read(kiocb.is_nonblocking(), iov),
            _ => Err(EINVAL),
        }
    }

    fn write_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let ctl = kiocb.file();
        let total = iov.len();
        let mut buf = [0u8; 256];
        let n = iov.copy_from_iter(&mut buf);
        let text = &buf[..n];
        let words = || {
            text.split(|&b| b.is_ascii_whitespace() || b == 0)
                .filter(|w| !w.is_empty())
        };
        let aoe = &ctl.aoe;
        match ctl.kind {
            CtlKind::Err => return Err(EINVAL),
            CtlKind::Discover => aoe.tx.discover(),
            CtlKind::Interfaces => {
                aoe.ifs.set(Names::parse(text)?);
                aoe.tx.discover();
            }
            CtlKind::Revalidate => {
                let name = words().next().ok_or(EINVAL)?;
                let addr = parse_name(name).ok_or(EINVAL)?;
                let dev = aoe.find(addr).ok_or(ENODEV)?;
                revalidate(&dev);
                aoe.tx.discover();
            }
            CtlKind::Flush => {
                // aoe-flush: "-a" for every device, device names for those,
                // nothing for the devices that are down.
                let mut n = 0;
                let mut named = false;
                for w in words() {
                    named = true;
                    n += if w == b"-a" {
                        aoe.flush(|_| true)
                    } else {
                        let addr = parse_name(w).ok_or(EINVAL)?;
                        aoe.flush(|d| d.addr == addr)
                    };
                }
                if !named {
                    n = aoe.flush(|d| d.st.lock().life == Life::Down);
                }
                pr_info!("flushed {} device(s)\n", n);
            }
        }
        Ok(total)
    }
}

/// Asks for a new IDENTIFY (capacity change), bringing a down device back
/// to identifying.
fn revalidate(dev: &Dev) {
    let mut st = dev.st.lock();
    if st.life == Life::Down {
        st.life = Life::Identifying;
        st.last_rsp = Instant::now();
    }
    st.identify_due = true;
}

/// Parses `eX.Y` (optionally with a `/dev/etherd/` prefix).
fn parse_name(name: &[u8]) -> Option<Addr> {
    let name = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    let rest = name.strip_prefix(b"e")?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let num = |s: &[u8]| -> Option<u32> {
        if s.is_empty() || s.len() > 5 {
            return None;
        }
        s.iter().try_fold(0u32, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })
    };
    Some(Addr {
        major: u16::try_from(num(&rest[..dot])?).ok()?,
        minor: u8::try_from(num(&rest[dot + 1..])?).ok()?,
    })
}
