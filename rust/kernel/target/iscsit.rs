// SPDX-License-Identifier: GPL-2.0

//! iSCSI target transports (`struct iscsit_transport`).
//!
//! The LIO iSCSI target carries iSCSI over TCP itself and over other networks through
//! transports that register with it. A network portal (`struct iscsi_np`) with a transport's
//! network type enabled (for iSER: writing 1 to `.../np/<address>/iser` in configfs) calls the
//! transport's [`Transport::setup_np`], then has a login thread call
//! [`Transport::accept_np`] for each connection, and [`Transport::free_np`] when it is removed.
//!
//! So far the abstraction covers the portal: a transport listens and decides about connection
//! requests, but cannot hand a connection to the target yet ([`Transport::accept_np`] returns
//! the reason why not). The connection-level callbacks, which the target only calls for a
//! connection a transport accepted, are therefore never reached; they fail with `EOPNOTSUPP`.
//!
//! C header: [`include/target/iscsi/iscsi_transport.h`](srctree/include/target/iscsi/iscsi_transport.h)

use crate::{
    bindings,
    ffi::{
        c_int,
        c_void, //
    },
    net::sockaddr::SockAddr,
    prelude::*,
    types::{
        ForeignOwnable,
        Opaque, //
    },
};
use core::marker::PhantomData;

/// The network a transport carries iSCSI over (`enum iscsit_transport_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum NetworkType {
    /// iSER over an RDMA network (`ISCSI_INFINIBAND`, the `iser` portal attribute).
    Infiniband = bindings::iscsit_transport_type_ISCSI_INFINIBAND as i32,
}

/// A network portal of the iSCSI target (`struct iscsi_np`), as its transport sees it.
///
/// # Invariants
///
/// The target keeps the portal alive while a transport callback that was given it runs.
#[repr(transparent)]
pub struct Np(Opaque<bindings::iscsi_np>);

impl Np {
    /// # Safety
    ///
    /// `np` is a valid portal for `'a`.
    unsafe fn from_raw<'a>(np: *mut bindings::iscsi_np) -> &'a Self {
        // SAFETY: `Np` is a transparent wrapper of `iscsi_np`, valid for `'a` by the safety
        // requirements.
        unsafe { &*np.cast::<Self>() }
    }

    /// The portal's address (`np_sockaddr`).
    pub fn addr(&self) -> SockAddr {
        // SAFETY: By the type invariant the portal is valid; the address is set when the portal
        // is created and not changed while it exists.
        SockAddr::from_raw(unsafe { &(*self.0.get()).np_sockaddr })
    }

    /// Whether the portal's login thread is being reset or stopped (its state is
    /// `ISCSI_NP_THREAD_RESET` or later), in which case [`Transport::accept_np`] should return.
    pub fn thread_stopping(&self) -> bool {
        // SAFETY: By the type invariant the portal is valid; the helper reads the state under
        // `np_thread_lock`.
        let state = unsafe { bindings::iscsit_np_thread_state(self.0.get()) };
        state >= bindings::np_thread_state_table_ISCSI_NP_THREAD_RESET
    }
}

/// An iSCSI transport.
///
/// Its callbacks run in process context and may sleep.
pub trait Transport: Sized + Send + Sync + 'static {
    /// The transport's name, shown by the target (at most 15 bytes).
    const NAME: &'static CStr;
    /// The network the transport serves.
    const NETWORK: NetworkType;
    /// What the transport keeps for a portal while it is enabled (`np_context`).
    type Portal: ForeignOwnable + Send + Sync;

    /// Starts serving the portal `np` on `addr` (`iscsit_setup_np`).
    fn setup_np(np: &Np, addr: &SockAddr) -> Result<Self::Portal>;

    /// Waits for the next connection on the portal (`iscsit_accept_np`), on the portal's login
    /// thread. The wait must end when the thread is signalled or [`Np::thread_stopping`].
    ///
    /// Returns why no connection was accepted: `ENODEV` makes the login thread try again,
    /// `ENOSYS` stops it.
    fn accept_np(np: &Np, portal: <Self::Portal as ForeignOwnable>::Borrowed<'_>) -> Error;

    /// Stops serving the portal (`iscsit_free_np`); the login thread has stopped.
    fn free_np(np: &Np, portal: Self::Portal);
}

/// A registered transport (`iscsit_register_transport()`).
///
/// # Invariants
///
/// `t` is registered with the iSCSI target from creation until drop, with the callbacks of
/// `Adapter<T>`.
#[pin_data(PinnedDrop)]
pub struct Registration<T: Transport> {
    #[pin]
    t: Opaque<bindings::iscsit_transport>,
    _p: PhantomData<T>,
}

// SAFETY: The registration is only touched at creation and drop; the target core serializes
// its own use of the transport list.
unsafe impl<T: Transport> Send for Registration<T> {}

// SAFETY: `&Registration` exposes nothing.
unsafe impl<T: Transport> Sync for Registration<T> {}

impl<T: Transport> Registration<T> {
    /// Registers the transport `T`, pinned by `module` while a portal uses it.
    pub fn register(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        const { assert!(T::NAME.to_bytes().len() < bindings::ISCSIT_TRANSPORT_NAME as usize) };
        try_pin_init!(Self {
            _p: PhantomData,
            t <- Opaque::ffi_init(move |t: *mut bindings::iscsit_transport| {
                // SAFETY: `t` is valid for writes; all-zero is a valid `iscsit_transport`
                // (no callbacks, an unlinked list node the target initializes).
                unsafe { t.write(core::mem::zeroed()) };
                // SAFETY: `t` was just initialized and is not shared yet.
                let t = unsafe { &mut *t };
                for (dst, src) in t.name.iter_mut().zip(T::NAME.to_bytes()) {
                    *dst = *src as _;
                }
                t.transport_type = T::NETWORK as c_int;
                t.rdma_shutdown = matches!(T::NETWORK, NetworkType::Infiniband);
                t.owner = module.as_ptr();
                t.iscsit_setup_np = Some(Adapter::<T>::setup_np);
                t.iscsit_accept_np = Some(Adapter::<T>::accept_np);
                t.iscsit_free_np = Some(Adapter::<T>::free_np);
                t.iscsit_get_login_rx = Some(Adapter::<T>::get_login_rx);
                t.iscsit_put_login_tx = Some(Adapter::<T>::put_login_tx);
                t.iscsit_immediate_queue = Some(Adapter::<T>::queue_state);
                t.iscsit_response_queue = Some(Adapter::<T>::queue_state);
                t.iscsit_get_dataout = Some(Adapter::<T>::get_dataout);
                t.iscsit_queue_data_in = Some(Adapter::<T>::queue_cmd);
                t.iscsit_queue_status = Some(Adapter::<T>::queue_cmd);
                t.iscsit_aborted_task = Some(Adapter::<T>::aborted_task);
                t.iscsit_get_sup_prot_ops = Some(Adapter::<T>::get_sup_prot_ops);
            }),
        })
        .pin_chain(|this| {
            // SAFETY: `this.t` is initialized and pinned; it stays registered until `drop`.
            unsafe { bindings::iscsit_register_transport(this.t.get()) };
            Ok(())
        })
    }
}

#[pinned_drop]
impl<T: Transport> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant `t` is registered. A portal using the transport holds a
        // reference on the owner module, so none does when the module goes away.
        unsafe { bindings::iscsit_unregister_transport(self.t.get()) };
    }
}

/// The C callbacks of a transport `T`.
struct Adapter<T>(PhantomData<T>);

impl<T: Transport> Adapter<T> {
    /// # Safety
    ///
    /// Called by the target with a valid portal and address.
    unsafe extern "C" fn setup_np(
        np: *mut bindings::iscsi_np,
        addr: *mut bindings::__kernel_sockaddr_storage,
    ) -> c_int {
        // SAFETY: By the safety requirements `addr` is valid.
        let addr = SockAddr::from_raw(unsafe { &*addr });
        // SAFETY: By the safety requirements `np` is valid; the target records the address in
        // the portal through the transport (`np_sockaddr`).
        unsafe { (*np).np_sockaddr = *addr.as_raw() };
        // SAFETY: By the safety requirements `np` is valid for the call.
        let npr = unsafe { Np::from_raw(np) };
        match T::setup_np(npr, &addr) {
            Ok(portal) => {
                // SAFETY: `np` is valid; the context is taken back by `free_np`.
                unsafe { (*np).np_context = portal.into_foreign().cast::<c_void>() };
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by the target with a valid portal that `setup_np` set up, and a connection.
    unsafe extern "C" fn accept_np(
        np: *mut bindings::iscsi_np,
        _conn: *mut bindings::iscsit_conn,
    ) -> c_int {
        // SAFETY: By the safety requirements `np` is valid and `np_context` came from
        // `into_foreign` in `setup_np`; `free_np`, which takes it back, runs only after the login
        // thread, which calls this, has stopped.
        let portal = unsafe { T::Portal::borrow((*np).np_context.cast()) };
        // SAFETY: By the safety requirements `np` is valid for the call.
        let e = T::accept_np(unsafe { Np::from_raw(np) }, portal);
        e.to_errno()
    }

    /// # Safety
    ///
    /// Called by the target with a valid portal that `setup_np` set up, once, after its login
    /// thread stopped.
    unsafe extern "C" fn free_np(np: *mut bindings::iscsi_np) {
        // SAFETY: By the safety requirements `np` is valid and `np_context` came from
        // `into_foreign`; this is the only place that takes it back.
        let portal = unsafe { T::Portal::from_foreign((*np).np_context.cast()) };
        // SAFETY: `np` is valid.
        unsafe { (*np).np_context = core::ptr::null_mut() };
        // SAFETY: By the safety requirements `np` is valid for the call.
        T::free_np(unsafe { Np::from_raw(np) }, portal);
    }

    // The connection-level callbacks. The target calls them only for a connection that
    // `accept_np` accepted, which a `Transport` cannot do yet.

    extern "C" fn get_login_rx(
        _conn: *mut bindings::iscsit_conn,
        _login: *mut bindings::iscsi_login,
    ) -> c_int {
        EOPNOTSUPP.to_errno()
    }

    extern "C" fn put_login_tx(
        _conn: *mut bindings::iscsit_conn,
        _login: *mut bindings::iscsi_login,
        _len: u32,
    ) -> c_int {
        EOPNOTSUPP.to_errno()
    }

    extern "C" fn queue_state(
        _conn: *mut bindings::iscsit_conn,
        _cmd: *mut bindings::iscsit_cmd,
        _state: c_int,
    ) -> c_int {
        EOPNOTSUPP.to_errno()
    }

    extern "C" fn get_dataout(
        _conn: *mut bindings::iscsit_conn,
        _cmd: *mut bindings::iscsit_cmd,
        _recovery: bool,
    ) -> c_int {
        EOPNOTSUPP.to_errno()
    }

    extern "C" fn queue_cmd(
        _conn: *mut bindings::iscsit_conn,
        _cmd: *mut bindings::iscsit_cmd,
    ) -> c_int {
        EOPNOTSUPP.to_errno()
    }

    extern "C" fn aborted_task(_conn: *mut bindings::iscsit_conn, _cmd: *mut bindings::iscsit_cmd) {
    }

    extern "C" fn get_sup_prot_ops(_conn: *mut bindings::iscsit_conn) -> bindings::target_prot_op {
        bindings::target_prot_op_TARGET_PROT_NORMAL
    }
}
