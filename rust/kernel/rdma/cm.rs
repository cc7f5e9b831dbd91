// SPDX-License-Identifier: GPL-2.0

//! The RDMA connection manager (`rdma_cm`): listening for and accepting connections.
//!
//! A [`ListenId`] is an RDMA identifier (`struct rdma_cm_id`) bound to a local address and
//! listening on it, with a [`Listener`] that receives its events. Connection requests arrive on
//! new identifiers that the CM creates for each request; the listener answers each one through
//! a [`ConnectRequest`]: a reject, or an accept that creates the queue pair and returns the
//! [`Connection`], whose events go to a [`ConnEvents`].
//!
//! Lifetime rules of the C API that this module enforces:
//!
//! - `rdma_destroy_id()` must not be called from an identifier's own event handler, since it
//!   waits for that handler. Only dropping the [`ListenId`] or the [`Connection`] destroys an
//!   identifier, and the drop knows when it runs inside the identifier's own handler (the
//!   handler records the task running it): a [`Connection`] dropped there destroys its queue
//!   pair, completion queue and domain at once and has the CM destroy the identifier when the
//!   handler returns (a non-zero return); a [`ListenId`] dropped in its own
//!   [`Listener::connect_request`] stops calling its listener and is destroyed by a work item,
//!   which holds a reference on the module whose handler the identifier still calls.
//! - A handler that returns non-zero makes the CM destroy the identifier itself; it must then not
//!   be destroyed again. That happens when the device goes away (and, for the listener, when its
//!   address changes); a state word decides, once, whether the CM or the owner destroys it.
//! - A connection identifier starts with the listener's context and handler. A rejected request
//!   is destroyed by the CM when the handler returns; an accepted one gets a tagged pointer to its
//!   connection as context, which tells the shared handler what it is.
//! - A queue pair is destroyed before its identifier, and not while RDMA read/write contexts
//!   built on it exist ([`super::rw::RwQp`]).
//!
//! C header: [`include/rdma/rdma_cm.h`](srctree/include/rdma/rdma_cm.h)

use crate::{
    bindings,
    error::{
        from_err_ptr,
        to_result, //
    },
    ffi::{
        c_int,
        c_void, //
    },
    net::sockaddr::SockAddr,
    prelude::*,
    rdma::rw::RwQp,
    rdma::verbs::{
        self,
        Cq,
        CqHandler,
        DeviceRef,
        Pd,
        Qp,
        QpCaps, //
    },
    sync::{
        atomic::{
            Atomic,
            Full,
            Relaxed, //
        },
        Arc,
        ArcBorrow,
        Completion, //
    },
    task::Task,
    workqueue::{
        self,
        impl_has_work,
        new_work,
        Work,
        WorkItem, //
    },
    ThisModule,
};
use core::{
    marker::PhantomData,
    mem::ManuallyDrop,
    ptr, //
};

/// Why a listening identifier stopped listening.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The RDMA device the address belongs to was removed (`RDMA_CM_EVENT_DEVICE_REMOVAL`).
    DeviceRemoval,
    /// The address moved to another device (`RDMA_CM_EVENT_ADDR_CHANGE`).
    AddrChange,
}

/// Receives the events of a [`ListenId`].
///
/// The methods run in the CM's process context (a work item or the caller of a CM function)
/// and may sleep; the CM runs one at a time for a listener.
pub trait Listener: Send + Sync + 'static {
    /// The events of the connections this listener accepts.
    type Conn: ConnEvents;

    /// A peer asks to connect (`RDMA_CM_EVENT_CONNECT_REQUEST`).
    ///
    /// The request must be answered before returning: the only way to obtain the returned
    /// [`Handled`] is to answer `req`.
    fn connect_request(&self, req: ConnectRequest<'_, Self::Conn>) -> Handled;

    /// The identifier stopped listening; the CM destroys it when this returns. A new
    /// [`ListenId`] is needed to listen again.
    fn lost(&self, why: Lost);
}

/// Proof that a connection request was answered, returned by [`Listener::connect_request`]:
/// whether it was accepted.
pub struct Handled(bool);

/// What an accept tells the peer: the parts of `struct rdma_conn_param` that are not fixed.
#[derive(Clone, Copy, Debug)]
pub struct AcceptParam<'a> {
    /// The number of RDMA reads we may have outstanding towards the peer.
    pub initiator_depth: u8,
    /// The private data sent with the accept (for iSER, the `iser_cm_hdr`); at most 196 bytes.
    pub private_data: &'a [u8],
}

/// A connection request being handled by [`Listener::connect_request`].
///
/// # Invariants
///
/// `id` is the connection identifier the CM created for the request and `event` its
/// `RDMA_CM_EVENT_CONNECT_REQUEST` event; both are valid for `'a`, during which the CM holds the
/// identifier's handler lock.
pub struct ConnectRequest<'a, C> {
    id: *mut bindings::rdma_cm_id,
    event: &'a bindings::rdma_cm_event,
    _conn: PhantomData<C>,
}

impl<C: ConnEvents> ConnectRequest<'_, C> {
    /// The peer's address (`route.addr.dst_addr`).
    pub fn peer(&self) -> SockAddr {
        // SAFETY: By the type invariant `id` is valid; the route is set before the request is
        // reported.
        SockAddr::from_raw(unsafe { &(*self.id).route.addr.dst_addr })
    }

    /// The local address the request arrived on (`route.addr.src_addr`).
    pub fn local(&self) -> SockAddr {
        // SAFETY: As in `peer`.
        SockAddr::from_raw(unsafe { &(*self.id).route.addr.src_addr })
    }

    /// The private data the peer sent with its request (for iSER, the `iser_cm_hdr`).
    pub fn private_data(&self) -> &[u8] {
        // SAFETY: A connect request carries `param.conn` (the `ud` member is for UD port spaces,
        // which `ListenId` does not use).
        let conn = unsafe { &self.event.param.conn };
        if conn.private_data.is_null() {
            return &[];
        }
        // SAFETY: The CM keeps `private_data_len` bytes at `private_data` for the duration of
        // the event, which `&self` does not outlive.
        unsafe {
            core::slice::from_raw_parts(
                conn.private_data.cast::<u8>(),
                conn.private_data_len.into(),
            )
        }
    }

    /// The number of RDMA reads the peer wants to have outstanding towards us.
    pub fn initiator_depth(&self) -> u8 {
        // SAFETY: As in `private_data`.
        unsafe { self.event.param.conn.initiator_depth }
    }

    /// The RDMA device the request arrived on, with a registration reference; `None` when it
    /// is being removed.
    pub fn device(&self) -> Option<DeviceRef> {
        // SAFETY: By the type invariant `id` is valid; a connection identifier is bound to its
        // device before its request is reported, and the device stays registered while the
        // CM runs the identifier's handler.
        unsafe { DeviceRef::try_get((*self.id).device) }
    }

    /// Accepts the request (`rdma_accept()`).
    ///
    /// Creates a reliable-connected queue pair with `caps` on `pd` whose send and receive
    /// queues complete on `cq`, lets `prepare` post the receives that must be ready before
    /// the peer may send, and accepts with `param`. From then on the connection's events go to
    /// `events`.
    ///
    /// On failure the request is rejected and the CM destroys the identifier.
    pub fn accept<H: CqHandler>(
        self,
        pd: Pd,
        cq: Cq<H>,
        caps: QpCaps,
        param: AcceptParam<'_>,
        events: C,
        prepare: impl FnOnce(&Qp<H::SendCtx>) -> Result,
    ) -> (Handled, Result<Connection<C, H>>) {
        let id = self.id;
        match Self::try_accept(id, &pd, &cq, caps, param, events, prepare) {
            Ok((inner, rw)) => (
                Handled(true),
                Ok(Connection {
                    inner,
                    rw,
                    cq: ManuallyDrop::new(cq),
                    pd: ManuallyDrop::new(pd),
                }),
            ),
            Err(e) => {
                let _ = self.reject();
                (Handled(false), Err(e))
            }
        }
    }

    fn try_accept<H: CqHandler>(
        id: *mut bindings::rdma_cm_id,
        pd: &Pd,
        cq: &Cq<H>,
        caps: QpCaps,
        param: AcceptParam<'_>,
        events: C,
        prepare: impl FnOnce(&Qp<H::SendCtx>) -> Result,
    ) -> Result<(Arc<ConnInner<C>>, Arc<RwQp>)> {
        let AcceptParam {
            initiator_depth,
            private_data,
        } = param;
        let private_data_len = u8::try_from(private_data.len()).map_err(|_| EINVAL)?;
        let inner = Arc::pin_init(
            pin_init!(ConnInner {
                id,
                state: Atomic::new(OWNED),
                // The request is handled by this task, in the identifier's handler;
                // `ListenId::handler` clears it when the listener returns.
                handler_task: Atomic::new(Task::current_raw()),
                removed <- Completion::new(),
                events,
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: `id` is valid (type invariant of `ConnectRequest`).
        let port = unsafe { (*id).port_num };
        let mut attr = verbs::qp_init_attr(cq, caps, port);
        // SAFETY: `id` is valid and has no queue pair; `pd` and `attr` are valid for the call.
        to_result(unsafe { bindings::rdma_create_qp(id, pd.as_ptr(), &mut attr) })?;
        let destroy_qp = |id: *mut bindings::rdma_cm_id| {
            // SAFETY: `id` has the queue pair created above; it is not used any more.
            unsafe { bindings::rdma_destroy_qp(id) }
        };
        // SAFETY: `rdma_create_qp` set `id->qp`, which lives until `Connection::drop`
        // destroys it, which it only does once `RwQp::retire` allows it; it wrote the send
        // queue's size into `attr`; nothing is posted yet.
        let rw = match unsafe { RwQp::new((*id).qp, port, attr.cap.max_send_wr) } {
            Ok(rw) => rw,
            Err(e) => {
                destroy_qp(id);
                return Err(e);
            }
        };
        // SAFETY: `id->qp` is valid and not used by anyone else yet. The core reads
        // `qp_context` only for a registered event handler, and we register none.
        unsafe { (*(*id).qp).qp_context = Arc::as_ptr(&rw).cast_mut().cast::<c_void>() };
        // SAFETY: `id->qp` lives until `rdma_destroy_qp`; its queues complete on `cq`, whose
        // send contexts are `H::SendCtx`; its `qp_context` is its `RwQp`, which the connection
        // keeps longer than the queue pair.
        let qp = unsafe { Qp::<H::SendCtx>::from_raw((*id).qp) };
        if let Err(e) = prepare(qp) {
            destroy_qp(id);
            return Err(e);
        }
        let ctx = inner.clone().into_raw();
        // SAFETY: `id` is valid and its handler lock is held (type invariant); events after
        // this one see the new context. The tag tells `ListenId::handler` that the identifier
        // is a connection; the reference is released when the identifier is destroyed.
        unsafe { (*id).context = (ctx as usize | CONN_TAG) as *mut c_void };
        // SAFETY: All-zero is a valid `rdma_conn_param`.
        let mut param: bindings::rdma_conn_param = unsafe { core::mem::zeroed() };
        param.initiator_depth = initiator_depth;
        param.retry_count = 7;
        param.rnr_retry_count = 7;
        param.private_data = private_data.as_ptr().cast();
        param.private_data_len = private_data_len;
        // SAFETY: `id` is a connection identifier whose request is being handled, with a queue
        // pair; `param` and the private data are valid for the call.
        let ret = unsafe { bindings::rdma_accept(id, &mut param) };
        if ret != 0 {
            destroy_qp(id);
            // SAFETY: The identifier will be destroyed by the CM without further events, so its
            // reference goes back; `ctx` came from `into_raw` above.
            drop(unsafe { Arc::from_raw(ctx) });
            return Err(Error::from_errno(ret));
        }
        Ok((inner, rw))
    }

    /// Rejects the request (`rdma_reject()` with reason `IB_CM_REJ_CONSUMER_DEFINED`); the CM
    /// then destroys the connection identifier.
    pub fn reject(self) -> Handled {
        // SAFETY: By the type invariant `id` is a connection identifier whose request is being
        // handled, which is when `rdma_reject()` may be called.
        let ret = unsafe {
            bindings::rdma_reject(
                self.id,
                ptr::null(),
                0,
                bindings::ib_cm_rej_reason_IB_CM_REJ_CONSUMER_DEFINED as u8,
            )
        };
        if ret != 0 {
            // The CM still destroys the identifier; the peer times out instead of seeing a
            // reject.
            pr_warn!("rdma_cm: reject of a connection request failed: {}\n", ret);
        }
        Handled(false)
    }
}

/// `ListenIdInner::state`: the owner will destroy the identifier when it is dropped.
const OWNED: i32 = 0;
/// `ListenIdInner::state`: the owner is destroying the identifier (`rdma_destroy_id()`).
const OWNER_DESTROYS: i32 = 1;
/// `ListenIdInner::state`: a handler returned non-zero; the CM destroys the identifier.
const CM_DESTROYS: i32 = 2;
/// `ListenIdInner::state`: the owner dropped the identifier inside its own handler; a
/// [`DeferredDestroy`] destroys it.
const DEFERRED: i32 = 3;

struct ListenIdInner<L: Listener> {
    /// The listening identifier; set once, before it listens.
    id: Atomic<*mut bindings::rdma_cm_id>,
    /// Who destroys `id`: [`OWNED`], [`OWNER_DESTROYS`], [`CM_DESTROYS`] or [`DEFERRED`].
    state: Atomic<i32>,
    /// The task running the identifier's handler (for its own events or for a connection
    /// request), or null.
    handler_task: Atomic<*mut bindings::task_struct>,
    /// The module whose code the identifier's handler is.
    module: &'static ThisModule,
    listener: L,
}

/// The destruction of a listening identifier dropped inside its own handler, run by a work
/// item on the system workqueue.
///
/// It is not generic, so its code is in the kernel image: it may drop the last reference to
/// the module that owned the identifier.
///
/// # Invariants
///
/// `id` is a listening identifier whose state is [`DEFERRED`] (nobody else destroys it); `ctx`,
/// released by `release`, keeps its handler's context alive; `module` holds a reference
/// (`try_module_get()`) on the module of the handler and of `release`.
#[pin_data]
struct DeferredDestroy {
    #[pin]
    work: Work<DeferredDestroy>,
    id: *mut bindings::rdma_cm_id,
    ctx: *const c_void,
    release: unsafe fn(*const c_void),
    module: *mut bindings::module,
}

// SAFETY: The identifier may be destroyed from any process context; `ctx` is a reference to a
// `ListenIdInner`, which is `Send + Sync`, released by `release` from any thread.
unsafe impl Send for DeferredDestroy {}

impl_has_work! {
    impl HasWork<Self> for DeferredDestroy { self.work }
}

impl WorkItem for DeferredDestroy {
    type Pointer = Pin<KBox<Self>>;

    fn run(this: Pin<KBox<Self>>) {
        // SAFETY: By the type invariant the identifier is ours to destroy, and this is not one
        // of its handlers. This waits for running handlers; none runs afterwards.
        unsafe { bindings::rdma_destroy_id(this.id) };
        // SAFETY: By the type invariant `ctx` is the reference `release` takes back; the
        // identifier that used it is gone.
        unsafe { (this.release)(this.ctx) };
        // SAFETY: By the type invariant the reference is ours; nothing of the module runs
        // after this (this function is in the kernel image).
        unsafe { bindings::module_put(this.module) };
    }
}

impl DeferredDestroy {
    /// Queues the destruction of `id`; if the module is going away or memory is short, the
    /// identifier is kept for ever instead (its handler no longer calls the listener, but it
    /// is still the module's code: an event after the module is gone would run freed code, so
    /// that corner, a listener dropped in its own handler while its module unloads, is not
    /// closed).
    ///
    /// # Safety
    ///
    /// As for the type invariants, except the module reference, which this takes.
    #[inline(never)]
    unsafe fn queue(
        id: *mut bindings::rdma_cm_id,
        ctx: *const c_void,
        release: unsafe fn(*const c_void),
        module: &'static ThisModule,
    ) {
        // SAFETY: `module` is a module whose code is running (the caller's).
        if !unsafe { bindings::try_module_get(module.as_ptr()) } {
            pr_err!("rdma_cm: listener dropped in its handler while its module goes; leaking\n");
            return;
        }
        let work = KBox::pin_init(
            pin_init!(Self {
                work <- new_work!("rdma_cm::DeferredDestroy::work"),
                id,
                ctx,
                release,
                module: module.as_ptr(),
            }),
            GFP_KERNEL,
        );
        match work {
            // INVARIANT: The caller's guarantees, and the module reference taken above.
            Ok(work) => workqueue::system().enqueue(work),
            Err(_) => {
                pr_err!("rdma_cm: no memory to destroy a listener; leaking it\n");
                // SAFETY: The reference taken above, not used any more.
                unsafe { bindings::module_put(module.as_ptr()) };
            }
        }
    }
}

/// Releases a reference to a `ListenIdInner<L>` made by `Arc::into_raw`.
///
/// # Safety
///
/// `ctx` came from `Arc::into_raw` of an `Arc<ListenIdInner<L>>` and is not used afterwards.
unsafe fn release_listen_inner<L: Listener>(ctx: *const c_void) {
    // SAFETY: By the safety requirements.
    drop(unsafe { Arc::from_raw(ctx.cast::<ListenIdInner<L>>()) });
}

/// An RDMA identifier listening on a local address, for reliable-connected queue pairs in the
/// TCP port space (`RDMA_PS_TCP`, `IB_QPT_RC`), in the initial network namespace.
///
/// # Examples
///
/// A listener that accepts every connection and keeps it:
///
/// ```
/// use kernel::{
///     net::sockaddr::SockAddr,
///     new_mutex,
///     rdma::{
///         cm::{
///             AcceptParam, ConnEvents, ConnectRequest, Connection, Handled, ListenId, Listener,
///             Lost,
///         },
///         verbs::{Cq, CqHandler, DmaBuf, FromDevice, Pd, QpCaps, SendCtx, ToDevice},
///     },
///     sync::{Arc, Mutex},
/// };
///
/// /// What a send carries: its message.
/// struct Msg(DmaBuf<ToDevice>);
///
/// impl SendCtx for Msg {
///     fn dma_buf(&self) -> Option<&DmaBuf<ToDevice>> {
///         Some(&self.0)
///     }
/// }
///
/// /// Told of completions, in any context; a real one schedules the work that polls the queue.
/// struct Kick;
///
/// impl CqHandler for Kick {
///     type SendCtx = Msg;
///
///     fn notify(&self) {}
/// }
///
/// struct Events;
///
/// impl ConnEvents for Events {
///     fn established(&self) {}
///     fn disconnected(&self) {}
///     fn connect_error(&self) {}
///     fn device_removal(&self) {}
/// }
///
/// struct Server {
///     conns: Arc<Mutex<KVec<Connection<Events, Kick>>>>,
/// }
///
/// impl Listener for Server {
///     type Conn = Events;
///
///     fn connect_request(&self, req: ConnectRequest<'_, Events>) -> Handled {
///         let Some(dev) = req.device() else {
///             return req.reject();
///         };
///         let setup = || -> Result<(Pd, Cq<Kick>, KBox<DmaBuf<FromDevice>>)> {
///             let pd = Pd::alloc(&dev, c"server")?;
///             let cq = Cq::new(&dev, 64, 0, Arc::new(Kick, GFP_KERNEL)?, c"server")?;
///             let rx = KBox::new(DmaBuf::new(&dev, 4096)?, GFP_KERNEL)?;
///             Ok((pd, cq, rx))
///         };
///         let Ok((pd, cq, rx)) = setup() else {
///             return req.reject();
///         };
///         let caps = QpCaps {
///             send_wr: 32,
///             recv_wr: 32,
///             rdma_ctxs: 0,
///         };
///         let param = AcceptParam {
///             initiator_depth: 0,
///             private_data: &[],
///         };
///         // The peer may send as soon as it sees the accept: a receive is posted first.
///         let (handled, conn) = req.accept(pd, cq, caps, param, Events, |qp| qp.post_recv(rx));
///         if let Ok(conn) = conn {
///             // Notifications from now on; `true` asks for a poll right away.
///             let _ = conn.cq().arm();
///             // Dropped here if there is no memory to keep it.
///             let _ = self.conns.lock().push(conn, GFP_KERNEL);
///         }
///         handled
///     }
///
///     fn lost(&self, _why: Lost) {}
/// }
///
/// fn listen(module: &'static ThisModule, addr: &SockAddr) -> Result<ListenId<Server>> {
///     let conns = Arc::pin_init(new_mutex!(KVec::new()), GFP_KERNEL)?;
///     ListenId::listen(module, c"server", addr, Server { conns })
/// }
/// ```
///
/// # Invariants
///
/// `inner.id` is an identifier created with `ListenId::handler` as its event handler and
/// `Arc::as_ptr(&inner)` as its context. Unless `inner.state` is `CM_DESTROYS`, it is
/// destroyed only by `drop` (or by the `DeferredDestroy` that `drop` queues).
pub struct ListenId<L: Listener> {
    inner: Arc<ListenIdInner<L>>,
}

impl<L: Listener> ListenId<L> {
    /// Creates an identifier, binds it to `addr` (restricted to `addr`'s family) and listens.
    ///
    /// `name` is recorded by the RDMA resource tracker as the identifier's owner; `module` is
    /// the caller's module (`THIS_MODULE`), whose code handles the identifier's events.
    pub fn listen(
        module: &'static ThisModule,
        name: &'static CStr,
        addr: &SockAddr,
        listener: L,
    ) -> Result<Self> {
        let inner = Arc::new(
            ListenIdInner {
                id: Atomic::new(ptr::null_mut()),
                state: Atomic::new(OWNED),
                handler_task: Atomic::new(ptr::null_mut()),
                module,
                listener,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `init_net` lives forever; the handler is valid for the identifier's life; the
        // context stays valid because `inner` outlives the identifier (see `drop`); `name` is
        // `'static`, as the resource tracker keeps it.
        let id = from_err_ptr(unsafe {
            bindings::__rdma_create_kernel_id(
                &raw mut bindings::init_net,
                Some(Self::handler),
                Arc::as_ptr(&inner).cast_mut().cast::<c_void>(),
                bindings::rdma_ucm_port_space_RDMA_PS_TCP,
                bindings::ib_qp_type_IB_QPT_RC,
                name.as_char_ptr(),
            )
        })?;
        inner.id.store(id, Relaxed);
        // INVARIANT: `id` was created with our handler and context, and is destroyed by `drop`
        // from here on.
        let this = Self { inner };
        // SAFETY: `id` is a valid identifier that we own.
        to_result(unsafe { bindings::rdma_set_afonly(id, 1) })?;
        // SAFETY: `id` is valid; `rdma_bind_addr()` copies the address, which is a
        // `sockaddr_storage` and so large enough for its family.
        to_result(unsafe {
            bindings::rdma_bind_addr(
                id,
                ptr::from_ref(addr.as_raw())
                    .cast::<bindings::sockaddr>()
                    .cast_mut(),
            )
        })?;
        // SAFETY: `id` is valid and bound.
        to_result(unsafe { bindings::rdma_listen(id, 0) })?;
        Ok(this)
    }

    /// The listener.
    pub fn listener(&self) -> &L {
        &self.inner.listener
    }

    /// Whether the identifier still listens: false once [`Listener::lost`] was called.
    pub fn is_listening(&self) -> bool {
        self.inner.state.load(Relaxed) == OWNED
    }

    /// `rdma_cm_event_handler` of the listening identifier and of the connection identifiers
    /// created from it.
    ///
    /// # Safety
    ///
    /// Called by the CM with a valid identifier whose context is that of a live `ListenId<L>`
    /// (its own, or inherited from it by a connection identifier), and a valid event; the CM
    /// holds the identifier's handler lock (and, for a connect request, the listener's).
    unsafe extern "C" fn handler(
        id: *mut bindings::rdma_cm_id,
        event: *mut bindings::rdma_cm_event,
    ) -> c_int {
        // SAFETY: By the safety requirements `id` is valid.
        let ctx = unsafe { (*id).context } as usize;
        if ctx & CONN_TAG != 0 {
            // SAFETY: The tag is only set by `ConnectRequest::accept`, on a connection of this
            // listener, whose events are `L::Conn`.
            return unsafe { conn_handler::<L::Conn>(id, &*event, ctx & !CONN_TAG) };
        }
        // SAFETY: By the safety requirements `id` is valid and its context is the `ArcInner` of
        // a `ListenId<L>` that cannot be freed during this call: the owner's drop waits for the
        // handler in `rdma_destroy_id()`, or (when `state` is `CM_DESTROYS`) no event is
        // delivered any more. The clone keeps it alive even if the owner drops meanwhile.
        let inner: Arc<ListenIdInner<L>> =
            unsafe { ArcBorrow::from_raw((*id).context.cast::<ListenIdInner<L>>().cast_const()) }
                .into();
        // SAFETY: By the safety requirements `event` is valid for the call.
        let event = unsafe { &*event };

        if id != inner.id.load(Relaxed) {
            if event.event != bindings::rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST {
                // Nothing else reaches a connection identifier with the listener's context.
                return 0;
            }
            if inner.state.load(Relaxed) == DEFERRED {
                // The owner dropped the listener: refuse; the CM destroys the request's
                // identifier.
                return 1;
            }
            // The CM holds the listener's handler lock too: record the task, so that a drop of
            // the `ListenId` by the listener is recognised.
            inner.handler_task.store(Task::current_raw(), Relaxed);
            // INVARIANT: `id` is the request's new identifier, valid during the call.
            let Handled(accepted) = inner.listener.connect_request(ConnectRequest {
                id,
                event,
                _conn: PhantomData,
            });
            inner.handler_task.store(ptr::null_mut(), Relaxed);
            if !accepted {
                // A rejected request's identifier is destroyed by the CM.
                return 1;
            }
            // An accepted one now has its connection's context (and is handled above from now
            // on).
            // SAFETY: `id` is valid; `ConnectRequest::accept` set its context to a tagged
            // reference to the connection's `ConnInner`, which the identifier holds.
            let ctx = unsafe { (*id).context } as usize;
            // SAFETY: As just said; the events of the listener's connections are `L::Conn`.
            return unsafe { conn_handler_done::<L::Conn>(ctx & !CONN_TAG) };
        }

        let why = match event.event {
            bindings::rdma_cm_event_type_RDMA_CM_EVENT_DEVICE_REMOVAL => Lost::DeviceRemoval,
            bindings::rdma_cm_event_type_RDMA_CM_EVENT_ADDR_CHANGE => Lost::AddrChange,
            _ => return 0,
        };
        if inner.state.cmpxchg(OWNED, CM_DESTROYS, Full).is_err() {
            // The owner is in `rdma_destroy_id()`, waiting for this handler: let it finish.
            return 0;
        }
        inner.listener.lost(why);
        1
    }
}

impl<L: Listener> Drop for ListenId<L> {
    fn drop(&mut self) {
        if self.inner.handler_task.load(Relaxed) == Task::current_raw() {
            // Dropped by its listener, inside the handler: `rdma_destroy_id()` would wait for
            // this very handler. A work item destroys the identifier instead.
            if self.inner.state.cmpxchg(OWNED, DEFERRED, Full).is_ok() {
                let ctx = Arc::into_raw(self.inner.clone()).cast::<c_void>();
                // SAFETY: The identifier is ours to destroy (type invariant) and nobody else
                // will now that the state is `DEFERRED`; `ctx` keeps its context alive and is
                // released by `release_listen_inner::<L>`, code of the module `module`.
                unsafe {
                    DeferredDestroy::queue(
                        self.inner.id.load(Relaxed),
                        ctx,
                        release_listen_inner::<L>,
                        self.inner.module,
                    )
                };
            }
            return;
        }
        if self
            .inner
            .state
            .cmpxchg(OWNED, OWNER_DESTROYS, Full)
            .is_ok()
        {
            // SAFETY: By the type invariant the identifier is ours to destroy, and this is not
            // one of its handlers (a `Listener` does not own its `ListenId`). This waits for
            // running handlers, after which none runs again, so the context in `inner` is no
            // longer used once `inner` is dropped.
            unsafe { bindings::rdma_destroy_id(self.inner.id.load(Relaxed)) };
        }
    }
}

/// Receives the events of an accepted [`Connection`].
///
/// The methods run in the CM's process context and may sleep, one at a time for a connection.
/// They may drop the connection's [`Connection`]: the CM then destroys the identifier when the
/// method returns.
pub trait ConnEvents: Send + Sync + 'static {
    /// The connection is established (`RDMA_CM_EVENT_ESTABLISHED`).
    fn established(&self);

    /// The peer disconnected or the connection can no longer be used
    /// (`RDMA_CM_EVENT_DISCONNECTED`, `TIMEWAIT_EXIT`, `ADDR_CHANGE`).
    fn disconnected(&self);

    /// The connection could not be established (`RDMA_CM_EVENT_CONNECT_ERROR`, `UNREACHABLE`,
    /// `REJECTED`).
    fn connect_error(&self);

    /// The RDMA device is being removed (`RDMA_CM_EVENT_DEVICE_REMOVAL`). The removal waits
    /// until the [`Connection`] is dropped, which the implementation must arrange (from
    /// another context).
    fn device_removal(&self);
}

/// Low bit of a connection identifier's context (the context of a listening identifier is an
/// aligned pointer without it).
const CONN_TAG: usize = 1;

#[pin_data]
struct ConnInner<C: ConnEvents> {
    id: *mut bindings::rdma_cm_id,
    /// Who destroys `id`: [`OWNED`], [`OWNER_DESTROYS`] or [`CM_DESTROYS`].
    state: Atomic<i32>,
    /// The task running the identifier's handler, or null.
    handler_task: Atomic<*mut bindings::task_struct>,
    /// Completed when the owner has released everything after a device removal.
    #[pin]
    removed: Completion,
    events: C,
}

// SAFETY: `id` is only used through thread-safe CM calls; `events` is `Send + Sync`.
unsafe impl<C: ConnEvents> Send for ConnInner<C> {}

// SAFETY: As for `Send`.
unsafe impl<C: ConnEvents> Sync for ConnInner<C> {}

/// An accepted RDMA connection: the connection identifier with its queue pair, completion
/// queue and protection domain.
///
/// Dropping it destroys the queue pair and the identifier (`rdma_destroy_qp()`,
/// `rdma_destroy_id()`), then the completion queue and the protection domain. Work requests
/// still posted leak their buffers: drain first ([`Qp::start_drain`]). Dropped inside the
/// identifier's own handler ([`ConnEvents`]), it leaves the identifier to the CM, which destroys
/// it when the handler returns.
///
/// # Invariants
///
/// `inner.id` is a connection identifier with a queue pair on `cq` and `pd` (both dropped only
/// by `drop`, after the queue pair), whose context is `Arc::into_raw` of a reference to `inner`
/// tagged with `CONN_TAG`, and whose handler is `ListenId::handler`. Unless `inner.state` is
/// `CM_DESTROYS`, it is destroyed only by `drop`.
pub struct Connection<C: ConnEvents, H: CqHandler> {
    inner: Arc<ConnInner<C>>,
    rw: Arc<RwQp>,
    cq: ManuallyDrop<Cq<H>>,
    pd: ManuallyDrop<Pd>,
}

impl<C: ConnEvents, H: CqHandler> Connection<C, H> {
    fn id(&self) -> *mut bindings::rdma_cm_id {
        self.inner.id
    }

    /// The queue pair.
    pub fn qp(&self) -> &Qp<H::SendCtx> {
        // SAFETY: By the type invariant the identifier has a queue pair until `drop`, whose
        // queues complete on `cq`.
        unsafe { Qp::from_raw((*self.id()).qp) }
    }

    /// The completion queue of both queues of the queue pair.
    pub fn cq(&self) -> &Cq<H> {
        // The type invariant guarantees `Some` until `drop`.
        &self.cq
    }

    /// The protection domain.
    pub fn pd(&self) -> &Pd {
        &self.pd
    }

    /// The queue pair, for building RDMA read/write contexts.
    pub fn rw_qp(&self) -> &Arc<RwQp> {
        &self.rw
    }

    /// The connection's event handler.
    pub fn events(&self) -> &C {
        &self.inner.events
    }

    /// The peer's address.
    pub fn peer(&self) -> SockAddr {
        // SAFETY: By the type invariant `id` is valid; its route does not change once
        // connected.
        SockAddr::from_raw(unsafe { &(*self.id()).route.addr.dst_addr })
    }

    /// The local address.
    pub fn local(&self) -> SockAddr {
        // SAFETY: As in `peer`.
        SockAddr::from_raw(unsafe { &(*self.id()).route.addr.src_addr })
    }

    /// Starts a disconnection (`rdma_disconnect()`): the queue pair moves to the error state
    /// and the peer is told.
    pub fn disconnect(&self) -> Result {
        // SAFETY: By the type invariant `id` is valid.
        to_result(unsafe { bindings::rdma_disconnect(self.id()) })
    }
}

impl<C: ConnEvents, H: CqHandler> Drop for Connection<C, H> {
    fn drop(&mut self) {
        let id = self.id();
        if !self.rw.retire() {
            // A read/write context still uses the queue pair: keep the queue pair, its queues,
            // domain and identifier (and the identifier's reference to `inner`) forever.
            pr_err!(
                "rdma_cm: connection dropped with RDMA read/write contexts alive; leaking it\n"
            );
            // A device-removal handler waiting for this drop may go on: the identifier's
            // reference to `inner` is its own, and the queue pair (whose queues and domain are
            // leaked with it) is not reached through the identifier any more.
            self.inner.removed.complete_all();
            return;
        }
        // In the identifier's own handler, `rdma_destroy_id()` would wait for that handler:
        // the handler has the CM destroy the identifier when it returns.
        let next = if self.inner.handler_task.load(Relaxed) == Task::current_raw() {
            CM_DESTROYS
        } else {
            OWNER_DESTROYS
        };
        let owner = self.inner.state.cmpxchg(OWNED, next, Full).is_ok() && next == OWNER_DESTROYS;
        // SAFETY: By the type invariant `id` has a queue pair, which nobody uses any more.
        unsafe { bindings::rdma_destroy_qp(id) };
        if owner {
            // SAFETY: By the type invariant the identifier is ours to destroy; a connection is
            // not dropped from its own handler (see `ConnEvents`). This waits for running
            // handlers; none runs afterwards.
            unsafe { bindings::rdma_destroy_id(id) };
            // SAFETY: The identifier held this reference (type invariant); it is gone.
            drop(unsafe { Arc::from_raw(Arc::as_ptr(&self.inner)) });
        }
        // SAFETY: The queue pair that used them is destroyed; they are dropped once, here, and
        // not used again.
        unsafe {
            ManuallyDrop::drop(&mut self.cq);
            ManuallyDrop::drop(&mut self.pd);
        }
        if !owner {
            // The handler waits for this in a device removal, then lets the CM destroy the
            // identifier and releases its reference.
            self.inner.removed.complete_all();
        }
    }
}

/// The event handler of a connection identifier.
///
/// # Safety
///
/// Called from [`ListenId::handler`] with a valid identifier and event, and `ctx`, the
/// untagged context of the identifier, which holds a reference to a `ConnInner<C>`.
unsafe fn conn_handler<C: ConnEvents>(
    id: *mut bindings::rdma_cm_id,
    event: &bindings::rdma_cm_event,
    ctx: usize,
) -> c_int {
    let ptr = ctx as *const ConnInner<C>;
    // SAFETY: By the safety requirements the identifier holds a reference to `*ptr`, which it
    // releases only after `rdma_destroy_id()` returned, which waits for this handler.
    let inner = unsafe { &*ptr };
    let _ = id;
    // A drop of the `Connection` by the methods below is recognised by this.
    inner.handler_task.store(Task::current_raw(), Relaxed);
    match event.event {
        bindings::rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED => inner.events.established(),
        bindings::rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED
        | bindings::rdma_cm_event_type_RDMA_CM_EVENT_TIMEWAIT_EXIT
        | bindings::rdma_cm_event_type_RDMA_CM_EVENT_ADDR_CHANGE => inner.events.disconnected(),
        bindings::rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_ERROR
        | bindings::rdma_cm_event_type_RDMA_CM_EVENT_UNREACHABLE
        | bindings::rdma_cm_event_type_RDMA_CM_EVENT_REJECTED => inner.events.connect_error(),
        bindings::rdma_cm_event_type_RDMA_CM_EVENT_DEVICE_REMOVAL => {
            if inner.state.cmpxchg(OWNED, CM_DESTROYS, Full).is_err() {
                // The owner is in `rdma_destroy_id()`, waiting for this handler.
                inner.handler_task.store(ptr::null_mut(), Relaxed);
                return 0;
            }
            // A drop inside `device_removal` finds `CM_DESTROYS` and leaves the identifier to
            // the CM, as the owner's drop from elsewhere does.
            inner.events.device_removal();
            inner.handler_task.store(ptr::null_mut(), Relaxed);
            inner.removed.wait_for_completion();
            // SAFETY: The owner released the queue pair and will not touch the identifier
            // again; the CM destroys it when we return 1, so its reference goes back now.
            drop(unsafe { Arc::from_raw(ptr) });
            return 1;
        }
        _ => {}
    }
    // SAFETY: By the safety requirements.
    unsafe { conn_handler_done::<C>(ctx) }
}

/// Ends a run of a connection identifier's handler: if the [`Connection`] was dropped during
/// it, the handler returns 1 and the CM destroys the identifier.
///
/// # Safety
///
/// Called at the end of the identifier's handler; `ctx` is the untagged context of the
/// identifier, which holds a reference to a `ConnInner<C>`.
unsafe fn conn_handler_done<C: ConnEvents>(ctx: usize) -> c_int {
    let ptr = ctx as *const ConnInner<C>;
    // SAFETY: By the safety requirements the identifier holds a reference to `*ptr`.
    let inner = unsafe { &*ptr };
    inner.handler_task.store(ptr::null_mut(), Relaxed);
    // Only a drop inside the handler sets this outside a device removal (which does not come
    // here).
    if inner.state.load(Relaxed) != CM_DESTROYS {
        return 0;
    }
    // SAFETY: The owner released the queue pair and will not touch the identifier again; the
    // CM destroys it when we return 1, so its reference goes back now.
    drop(unsafe { Arc::from_raw(ptr) });
    1
}
