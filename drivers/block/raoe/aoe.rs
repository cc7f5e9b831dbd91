// SPDX-License-Identifier: GPL-2.0

//! Driver-wide state: the devices and their lookup by address, the
//! interfaces AoE may use, discovery, and device creation and removal.

use kernel::{
    block::mq::gen_disk::BlockMajor,
    cpu::{self, CpuId},
    net::netdevice::{NetDevice, NetdevEvents},
    new_spinlock_irq, new_work,
    prelude::*,
    sync::{aref::ARef, Arc, SpinLockIrq},
    time::Instant,
    workqueue::{Work, WorkItem},
};

use crate::{
    compl::Compl,
    dev::{Dev, DevCapacity, Life},
    errlog::ErrLog,
    iflist::{IfList, Names},
    module_parameters,
    rx::CfgMsg,
    stats::RxStats,
    tx::{Alloc, Tx},
    wire::{self, Addr},
};

/// Most paths (target MAC, interface) per device.
const MAX_PATHS: usize = 8;
/// Most frames per device.
const MAX_FRAMES: usize = 64;
/// Most devices.
const MAX_DEVS: usize = 64;
/// Buckets of the device lookup by address.
const LOOKUP_BUCKETS: usize = 16;
/// A bucket of the device lookup by address: the devices whose address hashes to it.
type Bucket = SpinLockIrq<KVec<Arc<Dev>>>;
/// Block-layer tags per device.
pub(crate) const QUEUE_DEPTH: u32 = 128;
/// Device numbers per disk: the disk and 15 partitions (the C driver's
/// `AOE_PARTITIONS`).
pub(crate) const MINORS: u32 = 16;
/// Slots per shelf with static device numbers (the C driver's `NPERSHELF`).
const SLOTS_PER_SHELF: u32 = 16;

/// The first device number of the disk at `addr` with static numbers
/// (`aoe_dyndevs=0`), as the C driver computes it: minor
/// `(shelf * 16 + slot) * 16`. Slots from 16 on, and shelves whose numbers
/// would pass the last minor, have none.
fn static_minor(addr: Addr) -> Result<u32> {
    let slot = u32::from(addr.minor);
    let n = u32::from(addr.major) * SLOTS_PER_SHELF + slot;
    if slot >= SLOTS_PER_SHELF || n >= (1 << 20) / MINORS {
        pr_err!(
            "e{}.{}: static device numbers (aoe_dyndevs=0) cover slots 0-15 of shelves 0-4095\n",
            addr.major,
            addr.minor
        );
        return Err(ERANGE);
    }
    Ok(n * MINORS)
}

/// Driver-wide state.
///
/// Lock order: `Aoe::devs` before `Dev::st`; a lookup bucket and the
/// interface list's writer lock are leaves, never held with another lock of this
/// driver.
#[pin_data]
pub(crate) struct Aoe {
    /// Every device, in creation order (discovery, flush, stats).
    #[pin]
    pub(crate) devs: SpinLockIrq<KVec<Arc<Dev>>>,
    /// The same devices by address, for the packet handler: a lock per
    /// bucket, so that responses for different devices do not contend.
    lookup: KVec<Pin<KBox<Bucket>>>,
    /// Read for every received frame, without a lock.
    #[pin]
    pub(crate) ifs: IfList,
    pub(crate) tx: Arc<Tx>,
    /// A completion thread per possible CPU, started when a device uses it.
    pub(crate) compl: KVec<Pin<KBox<Compl>>>,
    #[pin]
    spawn_work: Work<Aoe>,
    pub(crate) rx: RxStats,
    /// `/dev/etherd/err`.
    #[pin]
    pub(crate) err: ErrLog,
    /// The block major of disks with static numbers (`aoe_dyndevs=0`).
    major: Option<Arc<BlockMajor>>,
}

kernel::impl_has_work! {
    impl HasWork<Self> for Aoe { self.spawn_work }
}

impl Aoe {
    /// The driver's state; `ifs` is the initial interface list.
    pub(crate) fn new(ifs: Names, major: Option<Arc<BlockMajor>>) -> Result<Arc<Self>> {
        let ncpu = cpu::nr_cpu_ids() as usize;
        let mut compl = KVec::with_capacity(ncpu, GFP_KERNEL)?;
        for i in 0..ncpu {
            let cpu = CpuId::from_u32(i as u32).ok_or(EINVAL)?;
            compl.push(KBox::pin_init(Compl::new(cpu), GFP_KERNEL)?, GFP_KERNEL)?;
        }
        let mut lookup = KVec::with_capacity(LOOKUP_BUCKETS, GFP_KERNEL)?;
        for _ in 0..LOOKUP_BUCKETS {
            lookup.push(
                KBox::pin_init(
                    new_spinlock_irq!(
                        KVec::with_capacity(MAX_DEVS, GFP_KERNEL)?,
                        "raoe::Aoe::lookup"
                    ),
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        Arc::pin_init(
            try_pin_init!(Aoe {
                devs <- new_spinlock_irq!(
                    KVec::with_capacity(MAX_DEVS, GFP_KERNEL)?,
                    "raoe::Aoe::devs"
                ),
                lookup,
                ifs <- IfList::new(ifs),
                tx: Tx::new()?,
                compl,
                spawn_work <- new_work!("raoe::Aoe::spawn_work"),
                rx: RxStats::default(),
                err <- ErrLog::new(),
                major,
            }),
            GFP_KERNEL,
        )
    }

    /// The device at `addr`.
    pub(crate) fn find(&self, addr: Addr) -> Option<Arc<Dev>> {
        self.bucket(addr)
            .lock()
            .iter()
            .find(|d| d.addr == addr)
            .cloned()
    }

    /// The lookup bucket of `addr`.
    fn bucket(&self, addr: Addr) -> &Bucket {
        let h = usize::from(addr.major) * 31 + usize::from(addr.minor);
        &self.lookup[h % LOOKUP_BUCKETS]
    }

    /// Broadcasts config queries on every allowed, running interface.
    pub(crate) fn discover(&self) {
        let mut ifps: KVec<ARef<NetDevice>> = KVec::new();
        NetDevice::for_each(|d| {
            if d.is_ethernet() && d.is_running() && self.ifs.allows(d) {
                let _ = ifps.push(d.into(), GFP_ATOMIC);
            }
        });
        for ifp in ifps.iter() {
            let (Some(src), Some(mut skb)) = (
                ifp.ether_addr(),
                self.tx.skbs.get(wire::CFG_QUERY_LEN, Alloc::Sleep),
            ) else {
                continue;
            };
            if let Ok(f) = skb.put(wire::CFG_QUERY_LEN) {
                wire::build_cfg_query(f, &src, Addr::ANY);
                skb.set_protocol(wire::ETH_P_AOE);
                let _ = ifp.queue_xmit(skb);
            }
        }
    }

    /// Drops every path through `ifp`, which is being unregistered, and so
    /// the references to it. Returns how many paths were dropped.
    fn forget_interface(&self, ifp: &NetDevice) -> usize {
        self.devs
            .lock()
            .iter()
            .map(|d| d.st.lock().drop_paths(ifp))
            .sum()
    }

    /// Handles a config response: creates the device or adds a path.
    pub(crate) fn handle_cfg(self: &Arc<Self>, m: CfgMsg) {
        let dev = match self.find(m.addr) {
            Some(d) => d,
            None => match self.create_dev(&m) {
                Ok(d) => d,
                Err(e) => {
                    pr_warn!(
                        "e{}.{}: cannot add device: {:?}\n",
                        m.addr.major,
                        m.addr.minor,
                        e
                    );
                    return;
                }
            },
        };
        let payload = wire::sectors_for_mtu(m.ifp.mtu());
        let payload = if m.scnt != 0 {
            payload.min(m.scnt as usize)
        } else {
            payload
        } * wire::SECTOR;
        let mut st = dev.st.lock();
        st.add_path(m.mac, m.ifp, payload);
        st.fwver = m.fwver;
        st.scnt = m.scnt;
        if st.life == Life::Down {
            st.life = Life::Identifying;
            st.identify_due = true;
            st.last_rsp = Instant::now();
        }
    }

    fn create_dev(self: &Arc<Self>, m: &CfgMsg) -> Result<Arc<Dev>> {
        let nframes = (m.bufcnt as usize)
            .min(module_parameters::aoe_maxout.value() as usize)
            .clamp(1, MAX_FRAMES);
        let devs = self.devs.lock();
        if devs.len() >= MAX_DEVS {
            return Err(ENOSPC);
        }
        // The smallest number no live device has: it picks the completion
        // thread, and two live devices never share one by accident of a
        // removal (devices are only created by the transmit thread, so the
        // number is still free when the device is added below).
        let index = (0..MAX_DEVS)
            .find(|&i| !devs.iter().any(|d| d.index == i))
            .ok_or(ENOSPC)?;
        drop(devs);
        let numbers = match &self.major {
            Some(major) => Some((major.clone(), static_minor(m.addr)?)),
            None => None,
        };
        let compl = self.pick_thread(index);
        // Every frame may sit answered in the completion queue.
        self.compl[compl]
            .q
            .lock()
            .items
            .reserve(nframes, GFP_ATOMIC)?;
        let cap = DevCapacity {
            nframes,
            max_paths: MAX_PATHS,
            queue_depth: QUEUE_DEPTH as usize,
        };
        let dev = Dev::new(m.addr, index, compl, cap, self.tx.clone(), numbers)?;
        self.devs
            .lock()
            .push_within_capacity(dev.clone())
            .map_err(|_| ENOSPC)?;
        // Room for every device in each bucket; the device is in `devs`,
        // which holds at most `MAX_DEVS`.
        let _ = self.bucket(m.addr).lock().push_within_capacity(dev.clone());
        if !self.compl[compl]
            .running
            .load(kernel::sync::atomic::Relaxed)
        {
            let _ = self.tx.wq.enqueue(self.clone());
        }
        Ok(dev)
    }

    /// Removes the devices `which` selects, with their disks; returns how
    /// many.
    pub(crate) fn flush(&self, which: impl Fn(&Dev) -> bool) -> usize {
        let mut removed = 0;
        loop {
            let victim = {
                let mut devs = self.devs.lock();
                let Some(i) = devs.iter().position(|d| which(d)) else {
                    break;
                };
                devs.remove(i).ok()
            };
            let Some(dev) = victim else { break };
            self.bucket(dev.addr)
                .lock()
                .retain(|d| !Arc::ptr_eq(d, &dev));
            dev.st.lock().life = Life::Gone;
            dev.fail_io();
            drop(dev.disk.lock().take());
            removed += 1;
        }
        removed
    }
}

impl WorkItem for Aoe {
    type Pointer = Arc<Aoe>;

    fn run(this: Arc<Aoe>) {
        Aoe::spawn_threads(&this);
    }
}

/// Drops raoe's references to network devices that go away.
pub(crate) struct NetEvents {
    pub(crate) aoe: Arc<Aoe>,
}

impl NetdevEvents for NetEvents {
    fn unregister(&self, dev: &NetDevice) {
        let n = self.aoe.forget_interface(dev);
        if n > 0 {
            pr_info!(
                "{}: interface going away, {} path(s) dropped\n",
                dev.name(),
                n
            );
        }
    }
}
