// SPDX-License-Identifier: GPL-2.0

//! The transport trait.

use crate::{
    net::sockaddr::SockAddr,
    prelude::*,
    sync::{
        Arc,
        ArcBorrow, //
    },
    types::ForeignOwnable, //
};

use super::*;

/// Where a transport accepted a connection from.
pub struct Accepted<C> {
    /// The transport's state for the connection (`iscsit_conn.context`).
    pub ctx: C,
    /// The initiator's address.
    pub peer: SockAddr,
    /// The local address.
    pub local: SockAddr,
}

/// An iSCSI transport.
///
/// Its callbacks run in process context and may sleep.
///
/// # Examples
///
/// The outline of a transport; the methods of its portal and connection types, which do the
/// work on the network, are left out.
///
/// ```
/// use kernel::net::sockaddr::SockAddr;
/// use kernel::sync::{Arc, ArcBorrow};
/// use kernel::target::iscsit::{
///     Accepted, Bhs, Closing, Cmd, Conn, ConnSlot, Login, NetworkType, Np, QueueResult, Refused,
///     State, Transport,
/// };
///
/// /// A portal: its listener, and the connections it accepted from the network.
/// struct MyPortal;
///
/// /// The transport's state of a connection.
/// #[pin_data]
/// struct MyConn {
///     #[pin]
///     conn: ConnSlot,
///     peer: SockAddr,
///     local: SockAddr,
/// }
/// # impl MyPortal {
/// #     fn listen(_addr: &SockAddr) -> Result<KBox<Self>> { Err(ENOSYS) }
/// #     fn next_conn(&self, _np: &Np) -> Result<Arc<MyConn>> { Err(ENODEV) }
/// # }
/// # impl MyConn {
/// #     fn first_login_pdu(&self) -> Result<KVec<u8>> { Err(ENOTCONN) }
/// #     fn send(&self, _hdr: &Bhs, _data: &[u8]) -> Result { Err(ENOTCONN) }
/// #     fn send_cmd(&self, _hdr: &Bhs, cmd: Cmd) -> QueueResult { Err(Refused::new(cmd, EIO)) }
/// #     fn send_status(&self, _c: &Conn, cmd: Cmd, _: bool) -> QueueResult { self.read(cmd) }
/// #     fn read(&self, cmd: Cmd) -> QueueResult { Err(Refused::new(cmd, EIO)) }
/// #     fn wait_closed(&self) {}
/// #     fn drain(&self) {}
/// # }
///
/// struct MyTransport;
///
/// impl Transport for MyTransport {
///     const NAME: &'static CStr = c"my-iser";
///     const NETWORK: NetworkType = NetworkType::Infiniband;
///     type Portal = KBox<MyPortal>;
///     type ConnData = MyConn;
///
///     fn conn_slot(data: &MyConn) -> &ConnSlot {
///         &data.conn
///     }
///
///     fn setup_np(_np: &Np, addr: &SockAddr) -> Result<KBox<MyPortal>> {
///         MyPortal::listen(addr)
///     }
///
///     fn accept_np(np: &Np, portal: &MyPortal, _conn: &Conn) -> Result<Accepted<Arc<MyConn>>> {
///         // Sleeps until the portal accepted a connection or `np.thread_stopping()`.
///         let ctx = portal.next_conn(np)?;
///         Ok(Accepted {
///             peer: ctx.peer,
///             local: ctx.local,
///             ctx,
///         })
///     }
///
///     fn free_np(_np: &Np, _portal: KBox<MyPortal>) {}
///
///     fn get_login_rx(_conn: &Conn, ctx: ArcBorrow<'_, MyConn>, login: &Login) -> Result {
///         if login.first_request() {
///             login.fill_request(&ctx.first_login_pdu()?)?;
///         }
///         Ok(())
///     }
///
///     fn put_login_tx(_: &Conn, ctx: ArcBorrow<'_, MyConn>, login: &Login, len: u32) -> Result {
///         ctx.send(&login.rsp(), login.rsp_data(len as usize))
///     }
///
///     fn get_rx_pdu(_conn: &Conn, ctx: ArcBorrow<'_, MyConn>) {
///         // The completion work hands received PDUs to the target until the teardown.
///         ctx.wait_closed();
///     }
///
///     fn response_queue(c: &Conn, ctx: ArcBorrow<'_, MyConn>, cmd: Cmd, s: State) -> QueueResult {
///         let mut hdr = Bhs::default();
///         let built = match s {
///             State::SendLogoutRsp => cmd.build_logout_rsp(c, &mut hdr),
///             State::SendTaskMgtRsp => {
///                 cmd.build_tm_rsp(c, &mut hdr);
///                 Ok(())
///             }
///             _ => Err(EINVAL),
///         };
///         match built {
///             Ok(()) => ctx.send_cmd(&hdr, cmd),
///             Err(e) => Err(Refused::new(cmd, e)),
///         }
///     }
///
///     fn immediate_queue(_: &Conn, _: ArcBorrow<'_, MyConn>, cmd: Cmd, s: State) -> QueueResult {
///         if s != State::Remove {
///             return Err(Refused::new(cmd, EINVAL));
///         }
///         drop(cmd.release(true));
///         Ok(())
///     }
///
///     fn queue_data_in(c: &Conn, ctx: ArcBorrow<'_, MyConn>, cmd: Cmd) -> QueueResult {
///         ctx.send_status(c, cmd, true)
///     }
///
///     fn queue_status(c: &Conn, ctx: ArcBorrow<'_, MyConn>, cmd: Cmd) -> QueueResult {
///         ctx.send_status(c, cmd, false)
///     }
///
///     fn get_dataout(_conn: &Conn, ctx: ArcBorrow<'_, MyConn>, cmd: Cmd) -> QueueResult {
///         // An RDMA READ, whose completion calls `Cmd::rdma_read_done`.
///         ctx.read(cmd)
///     }
///
///     fn wait_conn(_conn: &Closing, ctx: ArcBorrow<'_, MyConn>) {
///         // Disconnects, and takes back what the queue pair still holds.
///         ctx.drain();
///     }
///
///     fn free_conn(_conn: &Conn, _ctx: Arc<MyConn>) {}
/// }
/// ```
pub trait Transport: Sized + Send + Sync + 'static {
    /// The transport's name, shown by the target (at most 15 bytes).
    const NAME: &'static CStr;
    /// The network the transport serves.
    const NETWORK: NetworkType;
    /// What the transport keeps for a portal while it is enabled (`np_context`).
    type Portal: ForeignOwnable + Send + Sync;
    /// What the transport keeps for a connection (`iscsit_conn.context`).
    type ConnData: Send + Sync;

    /// The slot in `data` through which the transport's own contexts reach the connection.
    fn conn_slot(data: &Self::ConnData) -> &ConnSlot;

    /// Starts serving the portal `np` on `addr` (`iscsit_setup_np`).
    fn setup_np(np: &Np, addr: &SockAddr) -> Result<Self::Portal>;

    /// Waits for the next connection on the portal (`iscsit_accept_np`), on the portal's login
    /// thread. The wait must end when the thread is signalled or [`Np::thread_stopping`].
    ///
    /// Errors: `ENODEV` makes the login thread try again, `ENOSYS` stops it.
    fn accept_np(
        np: &Np,
        portal: <Self::Portal as ForeignOwnable>::Borrowed<'_>,
        conn: &Conn,
    ) -> Result<Accepted<Arc<Self::ConnData>>>;

    /// Stops serving the portal (`iscsit_free_np`); the login thread has stopped.
    fn free_np(np: &Np, portal: Self::Portal);

    /// Stores the next login request in `login` (`iscsit_get_login_rx`). For the first request
    /// it waits for it and calls [`Login::fill_request`]; later requests were delivered with
    /// [`Conn::deliver_login_pdu`] already.
    fn get_login_rx(conn: &Conn, ctx: ArcBorrow<'_, Self::ConnData>, login: &Login) -> Result;

    /// Sends a login response: [`Login::rsp`] and `len` bytes of [`Login::rsp_data`]
    /// (`iscsit_put_login_tx`).
    fn put_login_tx(
        conn: &Conn,
        ctx: ArcBorrow<'_, Self::ConnData>,
        login: &Login,
        len: u32,
    ) -> Result;

    /// Runs on the connection's receive thread in the full-feature phase
    /// (`iscsit_get_rx_pdu`); returns when the thread is signalled at teardown.
    fn get_rx_pdu(conn: &Conn, ctx: ArcBorrow<'_, Self::ConnData>);

    /// Sends what the target queued on the response queue (`iscsit_response_queue`).
    ///
    /// This and the other callbacks that are handed a [`Cmd`] keep it on success and give it
    /// back in the [`Refused`] on failure (see [`QueueResult`]).
    fn response_queue(
        conn: &Conn,
        ctx: ArcBorrow<'_, Self::ConnData>,
        cmd: Cmd,
        state: State,
    ) -> QueueResult;

    /// Handles what the target queued on the immediate queue (`iscsit_immediate_queue`).
    fn immediate_queue(
        conn: &Conn,
        ctx: ArcBorrow<'_, Self::ConnData>,
        cmd: Cmd,
        state: State,
    ) -> QueueResult;

    /// Sends a SCSI READ's data and its status (`iscsit_queue_data_in`). `ENOMEM` or `EAGAIN`
    /// in the [`Refused`] makes the target call again later.
    fn queue_data_in(conn: &Conn, ctx: ArcBorrow<'_, Self::ConnData>, cmd: Cmd) -> QueueResult;

    /// Sends a SCSI command's status (`iscsit_queue_status`); errors as for
    /// [`Transport::queue_data_in`].
    fn queue_status(conn: &Conn, ctx: ArcBorrow<'_, Self::ConnData>, cmd: Cmd) -> QueueResult;

    /// Fetches the rest of a SCSI WRITE's data (`iscsit_get_dataout`), then gives the command
    /// back with [`Cmd::rdma_read_done`]; errors as for [`Transport::queue_data_in`].
    fn get_dataout(conn: &Conn, ctx: ArcBorrow<'_, Self::ConnData>, cmd: Cmd) -> QueueResult;

    /// Stops the connection and waits until nothing of it runs any more
    /// (`iscsit_wait_conn`): every [`Cmd`] the transport holds is released. The target's
    /// threads of the connection have stopped ([`Closing`]). When this returns, the target's
    /// commands of the connection are waited for ([`Closing::wait_for_cmds`], at once if the
    /// transport did it already), so none outlives the receive buffers lent to commands
    /// ([`Lender`]).
    fn wait_conn(conn: &Closing, ctx: ArcBorrow<'_, Self::ConnData>);

    /// Frees the connection's transport state (`iscsit_free_conn`).
    fn free_conn(conn: &Conn, ctx: Arc<Self::ConnData>);
}
