// SPDX-License-Identifier: GPL-2.0

//! risert: an iSER target transport for the LIO iSCSI target, over RDMA.
//!
//! The Rust counterpart of `drivers/infiniband/ulp/isert` (`ib_isert`). It registers the
//! `IB/iSER` transport with the iSCSI target; a portal whose `iser` attribute is set to 1 gets
//! an `rdma_cm` listener on its address.
//!
//! Each accepted connection has its own protection domain, completion queue and queue pair. The
//! completion queue is polled from a work item through the shared [`Batcher`]: a
//! budgeted pass, rescheduling when the budget runs out, re-arm then re-poll.
//!
//! It serves discovery and normal sessions: the login phase, SCSI READ by RDMA WRITE, SCSI WRITE
//! by immediate data, unsolicited Data-Out and RDMA READ, text, NOP, task management and
//! logout, and a teardown that drains the queue pair. The design is in
//! `Documentation/rstorage/risert.rst`.

mod completion;
mod conn;
mod pdu;
mod portal;
mod stats;
mod transport;
mod tx;
mod wire;

use completion::*;
use conn::*;
use portal::*;
use stats::*;
use transport::*;
use tx::*;

use kernel::{
    completion_batch::{
        Armed,
        Batcher,
        CompletionQueue,
        CompletionSource,
        Config,
        Pass, //
    },
    debugfs, impl_has_work,
    kthread::{
        Context,
        Kthread, //
    },
    net::sockaddr::SockAddr,
    new_condvar, new_mutex, new_spinlock, new_work,
    prelude::*,
    rdma::{
        cm::{
            AcceptParam,
            ConnEvents,
            ConnectRequest,
            Connection,
            Handled,
            ListenId,
            Listener,
            Lost, //
        },
        rw::{
            RwCtx,
            RwQp, //
        },
        verbs::{
            Completion,
            Cq,
            CqHandler,
            DmaBuf,
            FromDevice,
            Pd,
            PostError,
            Probe,
            QpCaps,
            SendCtx,
            SendDone,
            SendWr,
            ToDevice, //
        },
    },
    revocable::{
        Revocable,
        RevocableGuard, //
    },
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        ArcBorrow,
        CondVar,
        Mutex,
        SetOnce,
        SpinLock, //
    },
    target::iscsit::{
        Accepted,
        Bhs,
        Closing,
        Cmd,
        Conn,
        ConnSlot,
        IserCtrl,
        Login,
        NetworkType,
        Np,
        QueueResult,
        Refused,
        Registration,
        RejectReason,
        RxBuf,
        State,
        Transport, //
    },
    time::{
        delay::fsleep,
        msecs_to_jiffies,
        Delta,
        Instant, //
    },
    transmute::{
        AsBytes,
        FromBytes, //
    },
    workqueue::{
        OwnedQueue,
        QueueFlags,
        Work,
        WorkItem, //
    },
};

use wire::{
    parse_iser,
    write_control_hdr,
    Kind,
    HEADERS_LEN,
    ISER_HDR_LEN,
    RX_SIZE, //
};

module! {
    type: RisertModule,
    name: "risert",
    authors: ["rstorage developers"],
    description: "iSER target transport for the LIO iSCSI target (RDMA)",
    license: "GPL",
    params: {
        budget: u32 {
            default: 16,
            description: "Completions handled per pass of a connection's completion work \
                          (0: no budget: drain all, then re-arm)",
        },
        poll_idle_us: u32 {
            default: 0,
            description: "Busy-poll a busy connection's completion queue instead of re-arming it; \
                          leave polling after this many microseconds without a completion \
                          (0: always interrupt-driven)",
        },
        signal_every: u32 {
            default: 16,
            description: "Post a SCSI response unsignaled while more commands of its connection \
                          are in flight, signaling one in this many (1: every send signaled)",
        },
        keepalive_s: u32 {
            default: 15,
            description: "Probe a logged-in connection that received nothing for this many \
                          seconds with an empty RDMA WRITE, so that an initiator gone without a \
                          disconnect is noticed when the probe's retries run out (0: no probes; \
                          the target core pings iSER connections with no NOP-In)",
        },
        send_queue: u32 {
            default: 0,
            description: "Send queue size of new connections, in sends and in RDMA transfers \
                          (0: 128 of each, as ib_isert); a small queue exercises the queue-full \
                          path",
        },
    },
}

/// Receive buffers posted in the full-feature phase (`ISERT_QP_MAX_RECV_DTOS`).
const RX_DESCS: u32 = 128;
/// Sends outstanding at most (`ISERT_QP_MAX_REQ_DTOS`).
const TX_DESCS: u32 = 128;
/// Bytes of a pooled send buffer: the headers and a SCSI response's data segment (the sense
/// data, at most `TRANSPORT_SENSE_BUFFER` bytes plus its length, padded). Larger responses
/// (text, NOP-In with ping data) get a buffer of their own.
const POOLED_TX_SIZE: usize = HEADERS_LEN + 128;
/// How long teardown lets posted sends complete before it disconnects.
const SEND_GRACE_MS: u32 = 1000;

/// The module's state shared with portals and connections.
///
/// The iSCSI target calls `setup_np` without a transport context, so this lives in a static;
/// its small allocation stays after the module is unloaded.
#[pin_data]
struct Shared {
    /// Runs the connections' completion and control work; revoked (drained and destroyed)
    /// when the module goes.
    #[pin]
    wq: Revocable<OwnedQueue>,
    /// Live connections, for debugfs and for the module's exit.
    #[pin]
    conns: Mutex<KVec<Arc<RConn>>>,
    #[pin]
    gone: CondVar,
}

/// The module's shared state, set while the module is loaded.
static SHARED: SetOnce<Arc<Shared>> = SetOnce::new();

fn shared() -> &'static Arc<Shared> {
    SHARED
        .as_ref()
        .expect("set before the transport is registered")
}

#[pin_data(PinnedDrop)]
struct RisertModule {
    #[pin]
    transport: Registration<Risert>,
    _stats: Option<Pin<KBox<debugfs::File<()>>>>,
    _debugfs: debugfs::Dir,
    /// Probes idle connections (`keepalive_s`); stopped when the module goes, after the
    /// connections (it finds none by then).
    _keepalive: Option<Kthread>,
}

/// The keepalive thread: every `period` seconds each connection has a look
/// ([`RConn::keepalive_tick`]).
fn keepalive(ctx: &Context, period: u32) {
    let mut ticks = 0u32;
    while !ctx.should_stop() {
        // Short sleeps, so that the module's exit does not wait for a whole period.
        fsleep(Delta::from_millis(100));
        ticks += 1;
        if ticks < period.saturating_mul(10) {
            continue;
        }
        ticks = 0;
        // The connections are looked at outside the list's lock: a look may terminate one.
        let conns = {
            let list = shared().conns.lock();
            let mut v = KVec::with_capacity(list.len(), GFP_KERNEL);
            if let Ok(v) = &mut v {
                for c in list.iter() {
                    let _ = v.push_within_capacity(c.clone());
                }
            }
            v
        };
        for c in conns.iter().flatten() {
            c.keepalive_tick();
        }
    }
}

impl kernel::InPlaceModule for RisertModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let debugfs = debugfs::Dir::new(c"risert");
        let stats = KBox::pin_init(
            debugfs.read_callback_file(c"stats", (), &write_stats),
            GFP_KERNEL,
        )
        .ok();
        let sh = OwnedQueue::new(
            c"risert",
            QueueFlags::PERCPU | QueueFlags::HIGHPRI | QueueFlags::MEM_RECLAIM,
            0,
        )
        .and_then(|wq| {
            Arc::pin_init(
                pin_init!(Shared {
                    wq <- Revocable::new(wq),
                    conns <- new_mutex!(KVec::new()),
                    gone <- new_condvar!(),
                }),
                GFP_KERNEL,
            )
        })
        .map(|sh| SHARED.populate(sh));
        try_pin_init!(Self {
            transport <- {
                sh?;
                Registration::register(module)
            },
            _stats: stats,
            _debugfs: debugfs,
            _keepalive: match module_parameters::keepalive_s.value() {
                0 => None,
                period => Some(Kthread::spawn(fmt!("risert_keepalive"), None, move |ctx| {
                    keepalive(ctx, period)
                })?),
            },
        })
        .pin_chain(|_| {
            pr_info!("iSER target transport registered\n");
            Ok(())
        })
    }
}

#[pinned_drop]
impl PinnedDrop for RisertModule {
    fn drop(self: Pin<&mut Self>) {
        // No portal uses the transport (each holds a module reference), so every connection
        // is being torn down; wait for them before the workqueue goes with the module.
        let sh = shared();
        let mut conns = sh.conns.lock();
        while !conns.is_empty() {
            let _ = sh
                .gone
                .wait_interruptible_timeout(&mut conns, msecs_to_jiffies(100));
        }
        drop(conns);
        // Waits for queued and running work items, then destroys the workqueue.
        sh.wq.revoke();
    }
}
