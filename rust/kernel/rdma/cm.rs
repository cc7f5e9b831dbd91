// SPDX-License-Identifier: GPL-2.0

//! The RDMA connection manager (`rdma_cm`): listening for connections.
//!
//! A [`ListenId`] is an RDMA identifier (`struct rdma_cm_id`) bound to a local address and
//! listening on it, with a [`Listener`] that receives its events. Connection requests arrive on
//! new identifiers that the CM creates for each request; the listener decides about each one
//! through a [`ConnectRequest`].
//!
//! Lifetime rules of the C API that this module enforces:
//!
//! - `rdma_destroy_id()` must not be called from an identifier's own event handler, since it
//!   waits for that handler. Only dropping the [`ListenId`] destroys it, and a [`Listener`] never
//!   owns its [`ListenId`].
//! - A handler that returns non-zero makes the CM destroy the identifier itself; it must then not
//!   be destroyed again. For the listening identifier that happens when its device goes away or
//!   its address changes ([`Listener::lost`]); a state word decides, once, whether the CM or the
//!   owner destroys it.
//! - A connection identifier starts with the listener's context and handler. Rejected requests
//!   are destroyed by the CM when the handler returns, so no further event reaches them.
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
    sync::{
        atomic::{
            Atomic,
            Full,
            Relaxed, //
        },
        Arc,
        ArcBorrow, //
    },
};
use core::ptr;

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
    /// A peer asks to connect (`RDMA_CM_EVENT_CONNECT_REQUEST`).
    ///
    /// The request must be answered before returning: the only way to obtain the returned
    /// [`Handled`] is to answer `req`.
    fn connect_request(&self, req: ConnectRequest<'_>) -> Handled;

    /// The identifier stopped listening; the CM destroys it when this returns. A new
    /// [`ListenId`] is needed to listen again.
    fn lost(&self, why: Lost);
}

/// Proof that a connection request was answered, returned by [`Listener::connect_request`].
pub struct Handled(());

/// A connection request being handled by [`Listener::connect_request`].
///
/// # Invariants
///
/// `id` is the connection identifier the CM created for the request and `event` its
/// `RDMA_CM_EVENT_CONNECT_REQUEST` event; both are valid for `'a`, during which the CM holds the
/// identifier's handler lock.
pub struct ConnectRequest<'a> {
    id: *mut bindings::rdma_cm_id,
    event: &'a bindings::rdma_cm_event,
}

impl ConnectRequest<'_> {
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
        Handled(())
    }
}

/// `ListenIdInner::state`: the owner will destroy the identifier when it is dropped.
const OWNED: i32 = 0;
/// `ListenIdInner::state`: the owner is destroying the identifier (`rdma_destroy_id()`).
const OWNER_DESTROYS: i32 = 1;
/// `ListenIdInner::state`: a handler returned non-zero; the CM destroys the identifier.
const CM_DESTROYS: i32 = 2;

struct ListenIdInner<L: Listener> {
    /// The listening identifier; set once, before it listens.
    id: Atomic<*mut bindings::rdma_cm_id>,
    /// Who destroys `id`: [`OWNED`], [`OWNER_DESTROYS`] or [`CM_DESTROYS`].
    state: Atomic<i32>,
    listener: L,
}

/// An RDMA identifier listening on a local address, for reliable-connected queue pairs in the
/// TCP port space (`RDMA_PS_TCP`, `IB_QPT_RC`), in the initial network namespace.
///
/// # Invariants
///
/// `inner.id` is an identifier created with [`ListenId::handler`] as its event handler and
/// `Arc::as_ptr(&inner)` as its context. Unless `inner.state` is [`CM_DESTROYS`], it is
/// destroyed only by `drop`.
pub struct ListenId<L: Listener> {
    inner: Arc<ListenIdInner<L>>,
}

impl<L: Listener> ListenId<L> {
    /// Creates an identifier, binds it to `addr` (restricted to `addr`'s family) and listens.
    ///
    /// `name` is recorded by the RDMA resource tracker as the identifier's owner.
    pub fn listen(name: &'static CStr, addr: &SockAddr, listener: L) -> Result<Self> {
        let inner = Arc::new(
            ListenIdInner {
                id: Atomic::new(ptr::null_mut()),
                state: Atomic::new(OWNED),
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
            if event.event == bindings::rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST {
                // INVARIANT: `id` is the request's new identifier, valid during the call.
                let _: Handled = inner.listener.connect_request(ConnectRequest { id, event });
                // The only answer so far is a reject: the CM destroys the identifier.
                return 1;
            }
            // Nothing else reaches a connection identifier: every request is answered by a
            // reject, which destroys the identifier once this handler returns.
            return 0;
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
