// SPDX-License-Identifier: GPL-2.0

//! risert: an iSER target transport for the LIO iSCSI target, over RDMA.
//!
//! The Rust counterpart of `drivers/infiniband/ulp/isert` (`ib_isert`). It registers the
//! `IB/iSER` transport with the iSCSI target; a portal whose `iser` attribute is set to 1 gets
//! an `rdma_cm` listener on its address.
//!
//! This first stage serves portals only: it listens and answers each connection request with a
//! reject, so that an initiator's login fails at once and cleanly. Logins and the full-feature
//! phase come with the queue pair, completion queue and login abstractions.

use kernel::{
    debugfs,
    net::sockaddr::SockAddr,
    new_condvar, new_mutex,
    prelude::*,
    rdma::cm::{
        ConnectRequest,
        Handled,
        ListenId,
        Listener,
        Lost, //
    },
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        ArcBorrow,
        CondVar,
        Mutex, //
    },
    target::iscsit::{
        NetworkType,
        Np,
        Registration,
        Transport, //
    },
};

module! {
    type: RisertModule,
    name: "risert",
    authors: ["rstorage developers"],
    description: "iSER target transport for the LIO iSCSI target (RDMA)",
    license: "GPL",
}

/// A counter shown in debugfs.
struct Counter(Atomic<u64>);

impl Counter {
    const fn new() -> Self {
        Self(Atomic::new(0))
    }

    fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Transport-wide counters (`/sys/kernel/debug/risert/stats`).
struct Stats {
    portals_up: Counter,
    portals_down: Counter,
    listen_failed: Counter,
    connect_requests: Counter,
    rejected: Counter,
    listeners_lost: Counter,
}

static STATS: Stats = Stats {
    portals_up: Counter::new(),
    portals_down: Counter::new(),
    listen_failed: Counter::new(),
    connect_requests: Counter::new(),
    rejected: Counter::new(),
    listeners_lost: Counter::new(),
};

/// The events of a portal's `rdma_cm` listener.
struct PortalEvents {
    addr: SockAddr,
}

impl Listener for PortalEvents {
    fn connect_request(&self, req: ConnectRequest<'_>) -> Handled {
        STATS.connect_requests.inc();
        pr_info!(
            "{}: connection request from {} (private data {} bytes): rejected, logins are not \
             served yet\n",
            self.addr,
            req.peer(),
            req.private_data().len()
        );
        STATS.rejected.inc();
        req.reject()
    }

    fn lost(&self, why: Lost) {
        STATS.listeners_lost.inc();
        pr_warn!(
            "{}: no longer listening ({}); disable and enable the portal to listen again\n",
            self.addr,
            match why {
                Lost::DeviceRemoval => "RDMA device removed",
                Lost::AddrChange => "address moved",
            }
        );
    }
}

/// A portal with iSER enabled.
#[pin_data]
struct Portal {
    listen: ListenId<PortalEvents>,
    /// Serializes the login thread's wait in `accept_np`. No connection is ever waiting yet,
    /// since every request is rejected; the wait ends when the thread is signalled.
    #[pin]
    accept_lock: Mutex<()>,
    #[pin]
    accept_wait: CondVar,
}

/// The `IB/iSER` transport.
struct Risert;

impl Transport for Risert {
    const NAME: &'static CStr = c"IB/iSER";
    const NETWORK: NetworkType = NetworkType::Infiniband;
    type Portal = Arc<Portal>;

    fn setup_np(_np: &Np, addr: &SockAddr) -> Result<Arc<Portal>> {
        let listen =
            ListenId::listen(c"risert", addr, PortalEvents { addr: *addr }).inspect_err(|e| {
                STATS.listen_failed.inc();
                pr_err!("{}: cannot listen: {:?}\n", addr, e);
            })?;
        let portal = Arc::pin_init(
            pin_init!(Portal {
                listen,
                accept_lock <- new_mutex!(()),
                accept_wait <- new_condvar!(),
            }),
            GFP_KERNEL,
        )?;
        STATS.portals_up.inc();
        pr_info!("{}: listening for iSER connections\n", addr);
        Ok(portal)
    }

    fn accept_np(np: &Np, portal: ArcBorrow<'_, Portal>) -> Error {
        let mut guard = portal.accept_lock.lock();
        // The login thread is signalled (SIGINT) when the portal is reset or removed.
        while !np.thread_stopping() {
            if portal.accept_wait.wait_interruptible(&mut guard) {
                break;
            }
        }
        ENODEV
    }

    fn free_np(np: &Np, portal: Arc<Portal>) {
        STATS.portals_down.inc();
        pr_info!(
            "{}: portal closed{}\n",
            np.addr(),
            if portal.listen.is_listening() {
                ""
            } else {
                " (its listener was already lost)"
            }
        );
        // Dropping the portal destroys the listener, after its running handlers finish.
        drop(portal);
    }
}

fn write_stats(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let s = &STATS;
    writeln!(
        f,
        "portals_up {}\nportals_down {}\nlisten_failed {}\nconnect_requests {}\nrejected {}\n\
         listeners_lost {}",
        s.portals_up.get(),
        s.portals_down.get(),
        s.listen_failed.get(),
        s.connect_requests.get(),
        s.rejected.get(),
        s.listeners_lost.get()
    )
}

#[pin_data]
struct RisertModule {
    #[pin]
    transport: Registration<Risert>,
    _stats: Option<Pin<KBox<debugfs::File<()>>>>,
    _debugfs: debugfs::Dir,
}

impl kernel::InPlaceModule for RisertModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let debugfs = debugfs::Dir::new(c"risert");
        let stats = KBox::pin_init(
            debugfs.read_callback_file(c"stats", (), &write_stats),
            GFP_KERNEL,
        )
        .ok();
        try_pin_init!(Self {
            transport <- Registration::register(module),
            _stats: stats,
            _debugfs: debugfs,
        })
        .pin_chain(|_| {
            pr_info!("iSER target transport registered\n");
            Ok(())
        })
    }
}
