// SPDX-License-Identifier: GPL-2.0

//! Registering a transport, and its C callbacks.

use crate::{
    bindings,
    ffi::{
        c_int,
        c_void, //
    },
    net::sockaddr::SockAddr,
    prelude::*,
    sync::{
        Arc,
        ArcBorrow, //
    },
    types::{
        ForeignOwnable,
        Opaque, //
    }, //
};
use core::{
    marker::PhantomData,
    ptr::NonNull, //
};

use super::*;

/// A registered transport (`iscsit_register_transport()`).
///
/// # Examples
///
/// A module keeps its transport registered while it is loaded:
///
/// ```
/// use kernel::{
///     target::iscsit::{Registration, Transport},
///     InPlaceModule,
/// };
///
/// #[pin_data]
/// struct TransportModule<T: Transport> {
///     #[pin]
///     transport: Registration<T>,
/// }
///
/// impl<T: Transport> InPlaceModule for TransportModule<T> {
///     fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
///         try_pin_init!(Self {
///             transport <- Registration::register(module),
///         })
///         .pin_chain(|_| {
///             pr_info!("iSCSI transport registered\n");
///             Ok(())
///         })
///     }
/// }
/// ```
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
                    *dst = *src;
                }
                t.transport_type = T::NETWORK as c_int;
                t.rdma_shutdown = matches!(T::NETWORK, NetworkType::Infiniband);
                t.owner = module.as_ptr();
                t.priv_size = core::mem::size_of::<cmd::CmdPriv>() as c_int;
                t.iscsit_setup_np = Some(Adapter::<T>::setup_np);
                t.iscsit_accept_np = Some(Adapter::<T>::accept_np);
                t.iscsit_free_np = Some(Adapter::<T>::free_np);
                t.iscsit_wait_conn = Some(Adapter::<T>::wait_conn);
                t.iscsit_free_conn = Some(Adapter::<T>::free_conn);
                t.iscsit_get_login_rx = Some(Adapter::<T>::get_login_rx);
                t.iscsit_put_login_tx = Some(Adapter::<T>::put_login_tx);
                t.iscsit_get_rx_pdu = Some(Adapter::<T>::get_rx_pdu);
                t.iscsit_immediate_queue = Some(Adapter::<T>::immediate_queue);
                t.iscsit_response_queue = Some(Adapter::<T>::response_queue);
                t.iscsit_get_dataout = Some(Adapter::<T>::get_dataout);
                t.iscsit_queue_data_in = Some(Adapter::<T>::queue_data_in);
                t.iscsit_queue_status = Some(Adapter::<T>::queue_status);
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
    /// Called by the target with a valid portal that `setup_np` set up, and a new connection
    /// not yet shared.
    unsafe extern "C" fn accept_np(
        np: *mut bindings::iscsi_np,
        conn: *mut bindings::iscsit_conn,
    ) -> c_int {
        // SAFETY: By the safety requirements `np` is valid and `np_context` came from
        // `into_foreign` in `setup_np`; `free_np`, which takes it back, runs only after the login
        // thread, which calls this, has stopped.
        let portal = unsafe { T::Portal::borrow((*np).np_context.cast()) };
        // SAFETY: By the safety requirements `np` and `conn` are valid for the call.
        let (npr, c) = unsafe { (Np::from_raw(np), Conn::from_raw(conn)) };
        match T::accept_np(npr, portal, c) {
            Ok(a) => {
                // The slot is emptied in `free_conn`, before the connection is freed.
                T::conn_slot(&a.ctx).set(conn);
                // SAFETY: `conn` is valid and not shared yet. The context is taken back by
                // `free_conn`, which the target calls for every accepted connection.
                unsafe {
                    (*conn).context = a.ctx.into_foreign().cast();
                    (*conn).login_family = Np::from_raw(np).addr().family().into();
                    (*conn).login_sockaddr = *a.peer.as_raw();
                    (*conn).local_sockaddr = *a.local.as_raw();
                }
                0
            }
            Err(e) => e.to_errno(),
        }
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

    /// # Safety
    ///
    /// `conn` is a valid connection accepted by `accept_np`, not yet given to `free_conn`.
    unsafe fn ctx<'a>(conn: *mut bindings::iscsit_conn) -> (&'a Conn, ArcBorrow<'a, T::ConnData>) {
        // SAFETY: By the safety requirements the context came from `into_foreign` in
        // `accept_np` and is taken back only by `free_conn`, which runs after every other
        // callback of the connection.
        unsafe {
            (
                Conn::from_raw(conn),
                <Arc<T::ConnData>>::borrow((*conn).context.cast()),
            )
        }
    }

    /// # Safety
    ///
    /// Called by the target with an accepted connection, from `iscsit_close_connection()`
    /// (the connection's threads have stopped) or from a failed login
    /// (`iscsi_target_login_sess_out()`: they never started).
    unsafe extern "C" fn wait_conn(conn: *mut bindings::iscsit_conn) {
        // SAFETY: By the safety requirements.
        let (_, ctx) = unsafe { Self::ctx(conn) };
        // INVARIANT: From here on the transport's own contexts no longer reach the connection
        // (waiting for those that do), so nothing hands the target PDUs any more: with its
        // threads stopped, that is what `Closing` needs.
        T::conn_slot(&ctx).revoke();
        // SAFETY: By the safety requirements the target is closing the connection; its slot is
        // empty.
        let closing = unsafe { Closing::from_raw(conn) };
        T::wait_conn(closing, ctx);
        // Every command of the connection is freed before the connection is: the receive
        // buffers lent to commands (`Lender`) live until then. Returns at once if the
        // transport waited already.
        closing.wait_for_cmds();
    }

    /// # Safety
    ///
    /// Called by the target with an accepted connection, once, last.
    unsafe extern "C" fn free_conn(conn: *mut bindings::iscsit_conn) {
        // SAFETY: By the safety requirements the context came from `into_foreign` and this is
        // the only place that takes it back.
        let ctx = unsafe { <Arc<T::ConnData>>::from_foreign((*conn).context.cast()) };
        // SAFETY: `conn` is valid.
        unsafe { (*conn).context = core::ptr::null_mut() };
        // Emptied by `wait_conn` already, if the target called it; waits for the transport's
        // contexts that are using the connection otherwise.
        T::conn_slot(&ctx).revoke();
        // SAFETY: By the safety requirements `conn` is valid for the call.
        T::free_conn(unsafe { Conn::from_raw(conn) }, ctx);
    }

    /// # Safety
    ///
    /// Called by the target with an accepted connection and its login state.
    unsafe extern "C" fn get_login_rx(
        conn: *mut bindings::iscsit_conn,
        login: *mut bindings::iscsi_login,
    ) -> c_int {
        // SAFETY: By the safety requirements.
        let (c, ctx) = unsafe { Self::ctx(conn) };
        // SAFETY: The login state is valid during the call and the target waits for it.
        let login = unsafe { Login::from_raw(login) };
        match T::get_login_rx(c, ctx, login) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// As for `get_login_rx`.
    unsafe extern "C" fn put_login_tx(
        conn: *mut bindings::iscsit_conn,
        login: *mut bindings::iscsi_login,
        len: u32,
    ) -> c_int {
        // SAFETY: By the safety requirements.
        let (c, ctx) = unsafe { Self::ctx(conn) };
        // SAFETY: As in `get_login_rx`.
        let login = unsafe { Login::from_raw(login) };
        match T::put_login_tx(c, ctx, login, len) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by the target with an accepted connection.
    unsafe extern "C" fn get_rx_pdu(conn: *mut bindings::iscsit_conn) {
        // SAFETY: By the safety requirements.
        let (c, ctx) = unsafe { Self::ctx(conn) };
        T::get_rx_pdu(c, ctx);
    }

    /// Runs a transport callback that the target hands a command to.
    ///
    /// # Safety
    ///
    /// Called by the target with an accepted connection and one of its commands, which the
    /// target hands over to the transport.
    unsafe fn cmd_call(
        conn: *mut bindings::iscsit_conn,
        cmd: *mut bindings::iscsit_cmd,
        f: impl FnOnce(&Conn, ArcBorrow<'_, T::ConnData>, Cmd) -> QueueResult,
    ) -> c_int {
        // SAFETY: By the safety requirements.
        let (c, ctx) = unsafe { Self::ctx(conn) };
        let Some(cmd) = NonNull::new(cmd) else {
            return EINVAL.to_errno();
        };
        // SAFETY: The target hands the command to the transport until it is released.
        let cmd = unsafe { Cmd::from_target(cmd) };
        match f(c, ctx, cmd) {
            Ok(()) => 0,
            Err(refused) => refused.into_errno(),
        }
    }

    /// # Safety
    ///
    /// As for `cmd_call`.
    unsafe extern "C" fn response_queue(
        conn: *mut bindings::iscsit_conn,
        cmd: *mut bindings::iscsit_cmd,
        state: c_int,
    ) -> c_int {
        // SAFETY: By the safety requirements.
        unsafe {
            Self::cmd_call(conn, cmd, |c, ctx, cmd| {
                T::response_queue(c, ctx, cmd, State::from_raw(state))
            })
        }
    }

    /// # Safety
    ///
    /// As for `cmd_call`.
    unsafe extern "C" fn immediate_queue(
        conn: *mut bindings::iscsit_conn,
        cmd: *mut bindings::iscsit_cmd,
        state: c_int,
    ) -> c_int {
        // SAFETY: By the safety requirements.
        unsafe {
            Self::cmd_call(conn, cmd, |c, ctx, cmd| {
                T::immediate_queue(c, ctx, cmd, State::from_raw(state))
            })
        }
    }

    /// # Safety
    ///
    /// As for `cmd_call`.
    unsafe extern "C" fn queue_data_in(
        conn: *mut bindings::iscsit_conn,
        cmd: *mut bindings::iscsit_cmd,
    ) -> c_int {
        // SAFETY: By the safety requirements.
        unsafe { Self::cmd_call(conn, cmd, T::queue_data_in) }
    }

    /// # Safety
    ///
    /// As for `cmd_call`.
    unsafe extern "C" fn queue_status(
        conn: *mut bindings::iscsit_conn,
        cmd: *mut bindings::iscsit_cmd,
    ) -> c_int {
        // SAFETY: By the safety requirements.
        unsafe { Self::cmd_call(conn, cmd, T::queue_status) }
    }

    /// # Safety
    ///
    /// As for `cmd_call`.
    unsafe extern "C" fn get_dataout(
        conn: *mut bindings::iscsit_conn,
        cmd: *mut bindings::iscsit_cmd,
        _recovery: bool,
    ) -> c_int {
        // SAFETY: By the safety requirements.
        unsafe { Self::cmd_call(conn, cmd, T::get_dataout) }
    }

    /// # Safety
    ///
    /// Called by the target with an accepted connection and one of its commands, which it
    /// is aborting (`isert_aborted_task()`): take it off the connection and stop its data-out
    /// timer. A transfer still posted completes through the drain at teardown.
    unsafe extern "C" fn aborted_task(
        conn: *mut bindings::iscsit_conn,
        cmd: *mut bindings::iscsit_cmd,
    ) {
        // SAFETY: By the safety requirements both are valid.
        unsafe { cmd::unlink(conn, cmd) };
        // SAFETY: As above.
        if unsafe { (*cmd).data_direction } == bindings::dma_data_direction::DMA_TO_DEVICE {
            // SAFETY: As above.
            unsafe { bindings::iscsit_stop_dataout_timer(cmd) };
        }
    }

    extern "C" fn get_sup_prot_ops(_conn: *mut bindings::iscsit_conn) -> bindings::target_prot_op {
        bindings::target_prot_op_TARGET_PROT_NORMAL
    }
}
