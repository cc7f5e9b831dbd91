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
