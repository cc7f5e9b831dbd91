// SPDX-License-Identifier: GPL-2.0

//! iSCSI target transports (`struct iscsit_transport`).
//!
//! The LIO iSCSI target carries iSCSI over TCP itself and over other networks through
//! transports that register with it. A network portal (`struct iscsi_np`) with a transport's
//! network type enabled (for iSER: writing 1 to `.../np/<address>/iser` in configfs) calls the
//! transport's [`Transport::setup_np`], then has a login thread call
//! [`Transport::accept_np`] for each connection, and [`Transport::free_np`] when it is removed.
//!
//! A connection the transport hands to the target in [`Transport::accept_np`] goes through the
//! login phase ([`Transport::get_login_rx`], [`Transport::put_login_tx`]) and then the
//! full-feature phase, in which the transport gives the target the PDUs it receives ([`Conn`]'s
//! `handle_*` methods) and sends what the target queues ([`Transport::response_queue`],
//! [`Transport::immediate_queue`]). SCSI data moves with RDMA read/write contexts
//! ([`Cmd::rdma_setup`]): an RDMA transport is the only kind this module serves.
//!
//! C header: [`include/target/iscsi/iscsi_transport.h`](srctree/include/target/iscsi/iscsi_transport.h)

use crate::{
    bindings,
    dma::DataDirection,
    error::to_result,
    ffi::{
        c_int,
        c_void, //
    },
    net::sockaddr::SockAddr,
    new_mutex,
    prelude::*,
    rdma::rw::{
        RwCtx,
        RwQp, //
    },
    sync::{
        Arc,
        ArcBorrow,
        Mutex, //
    },
    types::{
        ForeignOwnable,
        Opaque, //
    },
};
use core::{
    marker::PhantomData,
    mem::ManuallyDrop,
    ptr::NonNull, //
};

/// Length of an iSCSI basic header segment (`ISCSI_HDR_LEN`).
pub const HDR_LEN: usize = bindings::ISCSI_HDR_LEN as usize;

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

/// A connection of the iSCSI target (`struct iscsit_conn`), as its transport sees it.
///
/// # Invariants
///
/// The connection is valid while a transport callback that was given it runs, and from a
/// successful [`Transport::accept_np`] until [`Transport::free_conn`] returns.
#[repr(transparent)]
pub struct Conn(Opaque<bindings::iscsit_conn>);

// SAFETY: The methods below are called from the transport's threads and work items; they use
// the target's own locking.
unsafe impl Sync for Conn {}

// SAFETY: As for `Sync`.
unsafe impl Send for Conn {}

impl Conn {
    /// # Safety
    ///
    /// `conn` is a valid connection for `'a`.
    pub unsafe fn from_raw<'a>(conn: *mut bindings::iscsit_conn) -> &'a Self {
        // SAFETY: `Conn` is a transparent wrapper; valid for `'a` by the safety requirements.
        unsafe { &*conn.cast::<Self>() }
    }

    fn as_ptr(&self) -> *mut bindings::iscsit_conn {
        self.0.get()
    }

    /// Whether the connection belongs to a discovery session (`SessionType=Discovery`), in
    /// which only text and logout requests are allowed.
    pub fn is_discovery(&self) -> bool {
        // SAFETY: By the type invariant the connection is valid; `sess` and its operational
        // parameters are set during login and stay until the connection is freed.
        unsafe {
            let sess = (*self.as_ptr()).sess;
            !sess.is_null() && !(*sess).sess_ops.is_null() && (*(*sess).sess_ops).SessionType != 0
        }
    }

    /// Starts a connection reinstatement (`iscsit_cause_connection_reinstatement()`): the
    /// target closes the connection from its own threads.
    pub fn cause_reinstatement(&self) {
        // SAFETY: By the type invariant the connection is valid; `sleep == 0` does not wait.
        unsafe { bindings::iscsit_cause_connection_reinstatement(self.as_ptr(), 0) };
    }

    /// Delivers a login request PDU that arrived after the first one (`pdu`: the basic header
    /// segment followed by the data segment) and schedules the target's login work, which
    /// then calls [`Transport::get_login_rx`] (as `ib_isert` does with `login_work`).
    ///
    /// Fails with `EINVAL` when the connection is not in the login phase or the PDU is
    /// shorter than its header says.
    pub fn deliver_login_pdu(&self, pdu: &[u8]) -> Result {
        let c = self.as_ptr();
        // SAFETY: By the type invariant the connection is valid. `conn_login` is set during
        // the login phase; the target only reads the request after the login work, scheduled
        // below, starts.
        let login = unsafe { (*c).conn_login };
        if login.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: `login` is the connection's login state, valid during the login phase.
        let login = unsafe { Login::from_raw(login) };
        if login.first_request() {
            return Err(EINVAL);
        }
        login.fill_request(pdu)?;
        // SAFETY: `login_work` is initialized when the login phase starts.
        unsafe { bindings::schedule_delayed_work(&raw mut (*c).login_work, 0) };
        Ok(())
    }

    /// Allocates a command (`iscsit_allocate_cmd()`), waiting (interruptibly) for a free tag.
    pub fn alloc_cmd(&self) -> Option<Cmd> {
        // SAFETY: By the type invariant the connection is valid.
        let cmd = unsafe {
            bindings::iscsit_allocate_cmd(self.as_ptr(), bindings::TASK_INTERRUPTIBLE as c_int)
        };
        // INVARIANT: A new command belongs to the transport until it gives it to the target.
        NonNull::new(cmd).map(|cmd| Cmd { cmd, rw: None })
    }

    /// Hands a SCSI command to the target (as `isert_handle_scsi_cmd()`): `imm` is its
    /// immediate data and `remote` the initiator's buffers from the iSER header. The target
    /// then asks for the rest of a WRITE's data ([`Transport::get_dataout`]), and sends READ
    /// data and the status ([`Transport::queue_data_in`], [`Transport::queue_status`]).
    ///
    /// The immediate data is copied into the command's buffer.
    pub fn handle_scsi_cmd(
        &self,
        cmd: Cmd,
        hdr: &[u8; HDR_LEN],
        imm: &[u8],
        remote: Remote,
    ) -> Result {
        let mut hdr = *hdr;
        // SAFETY: The transport area is ours until the command is given to the target.
        unsafe { cmd.remote_ptr().write(remote) };
        // From here on the target owns the command, also on error (it rejects it itself).
        let c = cmd.into_target();
        // SAFETY: The connection and command are valid; `hdr` is a full header, copied by the
        // target. From here on the target owns the command.
        let rc = unsafe { bindings::iscsit_setup_scsi_cmd(self.as_ptr(), c, hdr.as_mut_ptr()) };
        if rc < 0 {
            return to_result(rc);
        }
        // SAFETY: The command is valid; `iscsit_setup_scsi_cmd` filled these fields.
        let (imm_data, imm_len, unsol) = unsafe {
            (
                (*c).immediate_data != 0,
                (*c).first_burst_len as usize,
                (*c).unsolicited_data != 0,
            )
        };
        // SAFETY: As above.
        let rc =
            unsafe { bindings::iscsit_process_scsi_cmd(self.as_ptr(), c, hdr.as_mut_ptr().cast()) };
        if rc < 0 {
            // The target answered the command itself.
            return Ok(());
        }
        let dump = rc > 0;
        if !dump {
            if !imm_data {
                return Ok(());
            }
            if imm_len > imm.len() {
                return Err(EINVAL);
            }
            // SAFETY: `iscsit_process_scsi_cmd` allocated the data scatter list for the whole
            // transfer, of which the immediate data is the start.
            unsafe {
                let se = &raw mut (*c).se_cmd;
                let pages = imm_len.div_ceil(bindings::PAGE_SIZE as usize).max(1);
                let nents = (pages as u32).min((*se).t_data_nents);
                bindings::sg_copy_from_buffer((*se).t_data_sg, nents, imm.as_ptr().cast(), imm_len);
                (*c).write_data_done += imm_len as u32;
                if (*c).write_data_done == (*se).data_length {
                    bindings::iscsit_cmd_got_last_dataout(c);
                }
            }
        }
        let cmdsn = u32::from_ne_bytes([hdr[24], hdr[25], hdr[26], hdr[27]]);
        // SAFETY: As above; the command sequence number is passed in network order.
        let rc =
            unsafe { bindings::iscsit_sequence_cmd(self.as_ptr(), c, hdr.as_mut_ptr(), cmdsn) };
        if rc == 0 && !dump && unsol {
            // SAFETY: As above.
            unsafe { bindings::iscsit_set_unsolicited_dataout(c) };
        } else if dump && imm_data {
            // SAFETY: As above; the immediate data of a dumped command is not transferred.
            unsafe { bindings::target_put_sess_cmd(&raw mut (*c).se_cmd) };
        }
        Ok(())
    }

    /// Takes an unsolicited Data-Out PDU (`hdr` and its data segment `data`) for a WRITE that
    /// the target allows to send data before an R2T (`InitialR2T=No`): the target checks the
    /// header and finds the command (`iscsit_check_dataout_hdr()`), the data is copied into
    /// the command's buffer at the PDU's offset, and the target accounts for it
    /// (`iscsit_check_dataout_payload()`), executing the command once all data is there.
    ///
    /// Solicited data never comes as PDUs over iSER (the target reads it by RDMA): a Data-Out
    /// for a command that expects none is refused with `EINVAL`.
    pub fn handle_data_out(&self, hdr: &[u8; HDR_LEN], data: &[u8]) -> Result {
        let mut hdr = *hdr;
        let mut cmd: *mut bindings::iscsit_cmd = core::ptr::null_mut();
        // SAFETY: The connection is valid; `hdr` is a full header; `cmd` is valid for writes.
        let rc = unsafe {
            bindings::iscsit_check_dataout_hdr(self.as_ptr(), hdr.as_mut_ptr().cast(), &mut cmd)
        };
        if rc < 0 {
            return to_result(rc);
        }
        if cmd.is_null() {
            // The target dropped the PDU (recovery, or a command being aborted).
            return Ok(());
        }
        let offset = u32::from_be_bytes([hdr[40], hdr[41], hdr[42], hdr[43]]);
        // SAFETY: `iscsit_check_dataout_hdr` returned a command of this connection that expects
        // this data; it checked that `offset` plus the header's data length fits the command's
        // data length, and `data` is that long. The scatter list covers the data length.
        unsafe {
            if (*cmd).unsolicited_data == 0 {
                return Err(EINVAL);
            }
            let se = &raw mut (*cmd).se_cmd;
            let copied = bindings::sg_pcopy_from_buffer(
                (*se).t_data_sg,
                (*se).t_data_nents,
                data.as_ptr().cast(),
                data.len(),
                offset as bindings::off_t,
            );
            if copied != data.len() {
                return Err(EINVAL);
            }
            to_result(bindings::iscsit_check_dataout_payload(
                cmd,
                hdr.as_mut_ptr().cast(),
                false,
            ))
        }
    }

    /// Hands a task management request to the target (`iscsit_handle_task_mgt_cmd()`); the
    /// response comes back with [`State::SendTaskMgtRsp`].
    pub fn handle_tmf(&self, cmd: Cmd, hdr: &[u8; HDR_LEN]) -> Result {
        let mut hdr = *hdr;
        let c = cmd.into_target();
        // SAFETY: As in `handle_logout`.
        to_result(unsafe {
            bindings::iscsit_handle_task_mgt_cmd(self.as_ptr(), c, hdr.as_mut_ptr())
        })
    }

    /// Hands a text request (`hdr` and its data segment `data`) to the target
    /// (`iscsit_setup_text_cmd()`, `iscsit_process_text_cmd()`); the response comes back
    /// through [`Transport::response_queue`] with [`State::SendTextRsp`].
    pub fn handle_text(&self, cmd: Cmd, hdr: &[u8; HDR_LEN], data: &[u8]) -> Result {
        let mut hdr = *hdr;
        let h = hdr.as_mut_ptr().cast::<bindings::iscsi_text>();
        // The target takes ownership of `cmd` (on error it releases or rejects it itself).
        let c = cmd.into_target();
        // SAFETY: The connection and `c` are valid; `hdr` is a full header.
        let ret = unsafe { bindings::iscsit_setup_text_cmd(self.as_ptr(), c, h) };
        if ret < 0 {
            return to_result(ret);
        }
        let mut text = KVec::new();
        if !data.is_empty() {
            text.extend_from_slice(data, GFP_KERNEL)?;
            // The target parses the keys as a NUL-terminated string.
            text.push(0, GFP_KERNEL)?;
        }
        let (ptr, _, _) = text.into_raw_parts();
        // SAFETY: The command is valid; the target frees `text_in_ptr` with `kfree()` when it
        // releases the command, and `KVec` memory comes from `kmalloc` (a zero-capacity vector
        // holds a dangling pointer, which we do not hand over).
        unsafe {
            (*c).text_in_ptr = if data.is_empty() {
                core::ptr::null_mut()
            } else {
                ptr.cast()
            }
        };
        // SAFETY: As for `iscsit_setup_text_cmd`.
        to_result(unsafe { bindings::iscsit_process_text_cmd(self.as_ptr(), c, h) })
    }

    /// Hands a logout request to the target (`iscsit_handle_logout_cmd()`); the response
    /// comes back with [`State::SendLogoutRsp`].
    pub fn handle_logout(&self, cmd: Cmd, hdr: &[u8; HDR_LEN]) -> Result {
        let mut hdr = *hdr;
        // The target takes ownership of `cmd`.
        let c = cmd.into_target();
        // SAFETY: The connection and `c` are valid; `hdr` is a full header.
        to_result(unsafe { bindings::iscsit_handle_logout_cmd(self.as_ptr(), c, hdr.as_mut_ptr()) })
    }

    /// Hands a NOP-Out to the target (`iscsit_setup_nop_out()`, `iscsit_process_nop_out()`);
    /// a ping is answered with [`State::SendNopin`]. The ping data is not echoed (the
    /// initiators send none).
    pub fn handle_nop_out(&self, cmd: Cmd, hdr: &[u8; HDR_LEN]) -> Result {
        let mut hdr = *hdr;
        let h = hdr.as_mut_ptr().cast::<bindings::iscsi_nopout>();
        let c = cmd.into_target();
        // SAFETY: As in `handle_logout`.
        let ret = unsafe { bindings::iscsit_setup_nop_out(self.as_ptr(), c, h) };
        if ret < 0 {
            return to_result(ret);
        }
        // SAFETY: As in `handle_logout`.
        to_result(unsafe { bindings::iscsit_process_nop_out(self.as_ptr(), c, h) })
    }

    /// Rejects a PDU the transport does not handle (`iscsit_add_reject()` with reason
    /// `ISCSI_REASON_CMD_NOT_SUPPORTED`); the reject comes back with [`State::SendReject`].
    pub fn reject(&self, hdr: &[u8; HDR_LEN]) {
        let mut hdr = *hdr;
        // SAFETY: The connection is valid; `hdr` is a full header, copied by the target. The
        // call returns -1 once the reject is queued (or could not be allocated).
        let _ = unsafe {
            bindings::iscsit_add_reject(
                self.as_ptr(),
                bindings::ISCSI_REASON_CMD_NOT_SUPPORTED as u8,
                hdr.as_mut_ptr(),
            )
        };
    }

    /// Stops new commands and waits for the running ones (`target_stop_cmd_counter()`,
    /// `target_wait_for_cmds()`), when the connection has a session.
    pub fn wait_for_cmds(&self) {
        // SAFETY: By the type invariant the connection is valid; `cmd_cnt` is set with the
        // session.
        unsafe {
            let c = self.as_ptr();
            if !(*c).sess.is_null() && !(*c).cmd_cnt.is_null() {
                bindings::target_stop_cmd_counter((*c).cmd_cnt);
                bindings::target_wait_for_cmds((*c).cmd_cnt);
            }
        }
    }

    /// Waits up to `SECONDS_FOR_LOGOUT_COMP` seconds for the target to finish a logout
    /// (`conn_logout_comp`), after a logout response was sent.
    pub fn wait_for_logout(&self) {
        // SAFETY: By the type invariant the connection is valid; the completion lives in it.
        unsafe {
            bindings::wait_for_completion_timeout(
                &raw mut (*self.as_ptr()).conn_logout_comp,
                (bindings::SECONDS_FOR_LOGOUT_COMP * bindings::HZ) as _,
            )
        };
    }
}

/// The login state of a connection (`struct iscsi_login`).
///
/// # Invariants
///
/// Valid while the callback or method that was given it runs.
#[repr(transparent)]
pub struct Login(Opaque<bindings::iscsi_login>);

impl Login {
    /// # Safety
    ///
    /// `login` is valid for `'a`, and nobody else accesses it meanwhile.
    unsafe fn from_raw<'a>(login: *mut bindings::iscsi_login) -> &'a Self {
        // SAFETY: Transparent wrapper; valid by the safety requirements.
        unsafe { &*login.cast::<Self>() }
    }

    fn raw(&self) -> *mut bindings::iscsi_login {
        self.0.get()
    }

    /// Whether the next request is the connection's first login request.
    pub fn first_request(&self) -> bool {
        // SAFETY: By the type invariant `login` is valid.
        unsafe { (*self.raw()).first_request != 0 }
    }

    /// Whether the response about to be sent ends the login phase successfully.
    pub fn complete(&self) -> bool {
        // SAFETY: As above.
        unsafe { (*self.raw()).login_complete != 0 }
    }

    /// Whether the response about to be sent fails the login.
    pub fn failed(&self) -> bool {
        // SAFETY: As above.
        unsafe { (*self.raw()).login_failed != 0 }
    }

    /// The header of the response to send.
    pub fn rsp(&self) -> [u8; HDR_LEN] {
        // SAFETY: As above.
        let rsp = unsafe { (*self.raw()).rsp };
        rsp.map(|b| b as u8)
    }

    /// The first `len` bytes of the response's data segment (at most `MAX_KEY_VALUE_PAIRS`).
    pub fn rsp_data(&self, len: usize) -> &[u8] {
        // SAFETY: As above; `rsp_buf` holds `MAX_KEY_VALUE_PAIRS` bytes during the login phase.
        unsafe {
            let buf = (*self.raw()).rsp_buf;
            if buf.is_null() {
                return &[];
            }
            core::slice::from_raw_parts(
                buf.cast::<u8>(),
                len.min(bindings::MAX_KEY_VALUE_PAIRS as usize),
            )
        }
    }

    /// Stores the received login request `pdu` (header and data segment) for the target, and
    /// for the first request also the session fields it carries (as `isert_rx_login_req()`).
    ///
    /// Fails with `EINVAL` when `pdu` is shorter than its header says.
    pub fn fill_request(&self, pdu: &[u8]) -> Result {
        if pdu.len() < HDR_LEN {
            return Err(EINVAL);
        }
        let (hdr, data) = pdu.split_at(HDR_LEN);
        let dlength = u32::from_be_bytes([0, hdr[5], hdr[6], hdr[7]]) as usize;
        if dlength > data.len() {
            return Err(EINVAL);
        }
        let l = self.raw();
        // SAFETY: By the type invariant `login` is valid and not accessed by the target while
        // a request is being stored (it is stored before the login thread or work reads it).
        unsafe {
            if (*l).first_request != 0 {
                let be16 = |o: usize| u16::from_be_bytes([hdr[o], hdr[o + 1]]);
                let be32 =
                    |o: usize| u32::from_be_bytes([hdr[o], hdr[o + 1], hdr[o + 2], hdr[o + 3]]);
                let tsih = be16(14);
                (*l).leading_connection = (tsih == 0) as u8;
                (*l).current_stage =
                    (hdr[1] & bindings::ISCSI_FLAG_LOGIN_CURRENT_STAGE_MASK as u8) >> 2;
                (*l).version_max = hdr[2];
                (*l).version_min = hdr[3];
                for (d, s) in (*l).isid.iter_mut().zip(&hdr[8..14]) {
                    *d = *s as _;
                }
                (*l).tsih = tsih;
                (*l).init_task_tag = u32::from_ne_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
                (*l).cid = be16(20);
                (*l).cmd_sn = be32(24);
                (*l).initial_exp_statsn = be32(28);
            }
            for (d, s) in (*l).req.iter_mut().zip(hdr) {
                *d = *s as _;
            }
            let n = data.len().min(bindings::MAX_KEY_VALUE_PAIRS as usize);
            core::ptr::copy_nonoverlapping(data.as_ptr(), (*l).req_buf.cast::<u8>(), n);
        }
        Ok(())
    }
}

/// A command (`struct iscsit_cmd`) that the transport holds: allocated for a received PDU, or
/// queued by the target for sending, until the transport gives it to the target or releases
/// it.
///
/// Every way out is explicit: the `Conn::handle_*` methods, [`Cmd::rdma_read_done`] and
/// [`Cmd::logout_post_handler`] give the command to the target, [`Cmd::release`] frees it, and
/// a [`Refused`] hands it back to the target from a [`Transport`] callback that could not queue
/// it. A command that is simply dropped (an early return) is released as failed
/// (`release(true)`), so its tag goes back and the connection's teardown does not wait for it
/// for ever (the owned-command pattern of the SCSI abstraction).
///
/// # Invariants
///
/// `cmd` is valid; the target does not free it before [`Cmd::release`], or before the
/// connection is freed, which the transport's drain in [`Transport::wait_conn`] orders after
/// the release of every command it holds.
pub struct Cmd {
    cmd: NonNull<bindings::iscsit_cmd>,
    /// The command's RDMA read/write context while its data moves.
    rw: Option<Pin<KBox<RwCtx>>>,
}

/// The initiator's buffers for a SCSI command, from the iSER header of its PDU; kept in the
/// command's transport area (`iscsit_priv_cmd()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Remote {
    /// Key of the buffer the target writes read data to (`read_stag`), 0 if none.
    pub read_stag: u32,
    /// Its address (`read_va`).
    pub read_va: u64,
    /// Key of the buffer the target reads write data from (`write_stag`), 0 if none.
    pub write_stag: u32,
    /// Its address, past any immediate data (`write_va`).
    pub write_va: u64,
}

// SAFETY: A command may be handed between the transport's threads.
unsafe impl Send for Cmd {}

impl Drop for Cmd {
    fn drop(&mut self) {
        self.release_now(true);
    }
}

/// A command that a [`Transport`] callback could not queue now, handed back to the target with
/// the error: for `ENOMEM` and `EAGAIN` the target queues it again later (its queue-full
/// handling); otherwise it fails the command or the connection. The only way to return an
/// error from such a callback is to give the command back, so a command cannot be both released
/// by the transport and retried by the target.
pub struct Refused {
    cmd: Cmd,
    err: Error,
}

impl Refused {
    /// Gives `cmd` back to the target, which sees `err`.
    pub fn new(cmd: Cmd, err: Error) -> Self {
        Self { cmd, err }
    }

    /// The error the target sees.
    pub fn error(&self) -> Error {
        self.err
    }

    /// Hands the command back to the target and returns the error code for it.
    fn into_errno(self) -> c_int {
        let Self { cmd, err } = self;
        cmd.into_target();
        err.to_errno()
    }
}

/// What a [`Transport`] callback that is handed a command returns: `Ok` when the transport keeps
/// the command (it releases it later, or has released it), or the command given back.
pub type QueueResult = core::result::Result<(), Refused>;

/// The state a command is queued in (`enum cmd_i_state_table`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// A text response is to be sent.
    SendTextRsp,
    /// A logout response is to be sent.
    SendLogoutRsp,
    /// A NOP-In answering a ping is to be sent.
    SendNopin,
    /// A NOP-In asking for a ping is to be sent.
    SendNopinWantResponse,
    /// A reject is to be sent.
    SendReject,
    /// A SCSI response is to be sent.
    SendStatus,
    /// A task management response is to be sent.
    SendTaskMgtRsp,
    /// The command is to be released.
    Remove,
    /// Another state.
    Other(i32),
}

impl State {
    fn from_raw(s: c_int) -> Self {
        match s as u32 {
            bindings::cmd_i_state_table_ISTATE_SEND_TEXTRSP => Self::SendTextRsp,
            bindings::cmd_i_state_table_ISTATE_SEND_LOGOUTRSP => Self::SendLogoutRsp,
            bindings::cmd_i_state_table_ISTATE_SEND_NOPIN => Self::SendNopin,
            bindings::cmd_i_state_table_ISTATE_SEND_NOPIN_WANT_RESPONSE => {
                Self::SendNopinWantResponse
            }
            bindings::cmd_i_state_table_ISTATE_SEND_REJECT => Self::SendReject,
            bindings::cmd_i_state_table_ISTATE_SEND_STATUS => Self::SendStatus,
            bindings::cmd_i_state_table_ISTATE_SEND_TASKMGTRSP => Self::SendTaskMgtRsp,
            bindings::cmd_i_state_table_ISTATE_REMOVE => Self::Remove,
            _ => Self::Other(s),
        }
    }
}

impl Cmd {
    fn raw(&self) -> *mut bindings::iscsit_cmd {
        self.cmd.as_ptr()
    }

    /// Gives the command to the target without releasing it: its RDMA context (built again
    /// if the target retries) is dropped, then `self` is forgotten.
    fn into_target(self) -> *mut bindings::iscsit_cmd {
        let mut this = ManuallyDrop::new(self);
        drop(this.rw.take());
        this.raw()
    }

    fn remote_ptr(&self) -> *mut Remote {
        // SAFETY: The transport area follows the command (`iscsit_priv_cmd()`); the command is
        // cache-line aligned, so the area is aligned for `Remote`, and `Registration` sizes it
        // for one.
        unsafe { self.raw().add(1).cast::<Remote>() }
    }

    /// The initiator's buffers recorded by [`Conn::handle_scsi_cmd`].
    pub fn remote(&self) -> Remote {
        // SAFETY: The area is zeroed at allocation, and all-zero is a valid `Remote`.
        unsafe { self.remote_ptr().read() }
    }

    /// Whether the command reads data from the initiator (a SCSI WRITE).
    pub fn is_write(&self) -> bool {
        // SAFETY: By the type invariant the command is valid.
        unsafe { (*self.raw()).data_direction == bindings::dma_data_direction::DMA_TO_DEVICE }
    }

    /// The SCSI data length.
    pub fn data_length(&self) -> u32 {
        // SAFETY: By the type invariant the command is valid.
        unsafe { (*self.raw()).se_cmd.data_length }
    }

    /// Builds the RDMA context that moves the command's data: for a SCSI READ, an RDMA WRITE
    /// of the data to the initiator's read buffer; for a WRITE, an RDMA READ of what is left
    /// after the immediate data from its write buffer (as `isert_rdma_rw_ctx_post()`).
    pub fn rdma_setup(&mut self, qp: &Arc<RwQp>) -> Result {
        if self.rw.is_some() {
            return Ok(());
        }
        let remote = self.remote();
        let c = self.raw();
        // SAFETY: By the type invariant the command is valid; the target allocated its data
        // scatter list before handing it to the transport for data transfer.
        let (sg, nents, done) = unsafe {
            (
                (*c).se_cmd.t_data_sg,
                (*c).se_cmd.t_data_nents,
                (*c).write_data_done,
            )
        };
        let (addr, rkey, offset, dir) = if self.is_write() {
            (
                remote.write_va,
                remote.write_stag,
                done,
                DataDirection::FromDevice,
            )
        } else {
            (remote.read_va, remote.read_stag, 0, DataDirection::ToDevice)
        };
        if rkey == 0 || sg.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: The scatter list belongs to the command, which the target does not free, nor
        // change, before the transport releases it; the context is dropped before that
        // (`release` and `rdma_read_done` drop it first).
        self.rw = Some(unsafe { RwCtx::new(qp, sg, nents, offset, addr, rkey, dir) }?);
        Ok(())
    }

    /// The RDMA context built by [`Cmd::rdma_setup`].
    pub fn rw(&self) -> Option<&RwCtx> {
        self.rw.as_deref()
    }

    /// The RDMA context built by [`Cmd::rdma_setup`], for posting it.
    pub fn rw_mut(&mut self) -> Option<Pin<&mut RwCtx>> {
        self.rw.as_mut().map(|rw| rw.as_mut())
    }

    /// The RDMA READ of a WRITE's data completed: the target executes the command
    /// (`target_execute_cmd()`), and later queues its status.
    pub fn rdma_read_done(self) {
        let c = self.into_target();
        // SAFETY: By the type invariant the command is valid; its data is complete; the target
        // takes the command back.
        unsafe {
            bindings::iscsit_stop_dataout_timer(c);
            (*c).write_data_done = 0;
            bindings::iscsit_cmd_got_last_dataout(c);
            bindings::target_execute_cmd(&raw mut (*c).se_cmd);
        }
    }

    /// Builds the SCSI response header into `hdr` (`iscsit_build_rsp_pdu()`) and returns its
    /// data segment: the sense data, with its length in front, padded to 4 bytes.
    pub fn build_rsp(&mut self, conn: &Conn, hdr: &mut [u8; HDR_LEN]) -> &[u8] {
        let c = self.raw();
        // SAFETY: By the type invariants both are valid; `hdr` is a full header. The sense
        // buffer is the command's own array, of `ISCSI_SENSE_BUFFER_LEN` bytes, into which the
        // target wrote at most `TRANSPORT_SENSE_BUFFER` bytes after the 2-byte length.
        unsafe {
            bindings::iscsit_build_rsp_pdu(c, conn.as_ptr(), true, hdr.as_mut_ptr().cast());
            let se = &raw mut (*c).se_cmd;
            let flags = bindings::se_cmd_flags_table_SCF_TRANSPORT_TASK_SENSE
                | bindings::se_cmd_flags_table_SCF_EMULATED_TASK_SENSE;
            if (*se).sense_buffer.is_null() || (*se).se_cmd_flags & flags == 0 {
                return &[];
            }
            let sense = &mut (*c).sense_buffer;
            let len = usize::from((*se).scsi_sense_length);
            sense[..2].copy_from_slice(&((*se).scsi_sense_length).to_be_bytes());
            let len = (len + 2).min(sense.len());
            (*se).scsi_sense_length = len as u16;
            hdr[5..8].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
            let padded = (len + 3) & !3;
            &sense[..padded.min(sense.len())]
        }
    }

    /// Builds the task management response header (`iscsit_build_task_mgt_rsp()`).
    pub fn build_tm_rsp(&self, conn: &Conn, hdr: &mut [u8; HDR_LEN]) {
        // SAFETY: By the type invariants both are valid; `hdr` is a full header.
        unsafe {
            bindings::iscsit_build_task_mgt_rsp(self.raw(), conn.as_ptr(), hdr.as_mut_ptr().cast())
        };
    }

    /// Runs the target's handling after a task management response was sent
    /// (`iscsit_tmr_post_handler()`).
    pub fn tmr_post_handler(&self) {
        let c = self.raw();
        // SAFETY: By the type invariant the command and its connection are valid.
        unsafe { bindings::iscsit_tmr_post_handler(c, (*c).conn) };
    }

    /// Builds the text response header into `hdr` (`iscsit_build_text_rsp()`) and returns the
    /// response's data segment.
    pub fn build_text_rsp(&self, conn: &Conn, hdr: &mut [u8; HDR_LEN]) -> Result<&[u8]> {
        // SAFETY: By the type invariants the command and connection are valid; `hdr` is a full
        // header.
        let len = unsafe {
            bindings::iscsit_build_text_rsp(
                self.raw(),
                conn.as_ptr(),
                hdr.as_mut_ptr().cast(),
                bindings::iscsit_transport_type_ISCSI_INFINIBAND,
            )
        };
        let len = usize::try_from(len).map_err(|_| Error::from_errno(len))?;
        // SAFETY: `iscsit_build_text_rsp` put the response, `len` bytes with padding, in
        // `buf_ptr` (`iscsit_build_sendtargets_response()` allocates at least that much).
        Ok(unsafe { self.buf(len) })
    }

    /// Builds the logout response header (`iscsit_build_logout_rsp()`).
    pub fn build_logout_rsp(&self, conn: &Conn, hdr: &mut [u8; HDR_LEN]) -> Result {
        // SAFETY: As in `build_text_rsp`.
        to_result(unsafe {
            bindings::iscsit_build_logout_rsp(self.raw(), conn.as_ptr(), hdr.as_mut_ptr().cast())
        })
    }

    /// Builds a NOP-In header (`iscsit_build_nopin_rsp()`); `response` when it answers a ping.
    /// Returns the data segment: the ping data echoed back.
    pub fn build_nopin(&self, conn: &Conn, hdr: &mut [u8; HDR_LEN], response: bool) -> &[u8] {
        // SAFETY: As in `build_text_rsp`.
        unsafe {
            bindings::iscsit_build_nopin_rsp(
                self.raw(),
                conn.as_ptr(),
                hdr.as_mut_ptr().cast(),
                response,
            )
        };
        // SAFETY: The command is valid; the header's data segment length is `buf_ptr_size`,
        // the length of the ping data the target keeps in `buf_ptr` (none for an unsolicited
        // NOP-In).
        unsafe {
            let len = (*self.raw()).buf_ptr_size as usize;
            self.buf(len)
        }
    }

    /// Builds a reject header (`iscsit_build_reject()`) and returns its data segment, the
    /// rejected PDU's header.
    pub fn build_reject(&self, conn: &Conn, hdr: &mut [u8; HDR_LEN]) -> &[u8] {
        // SAFETY: As in `build_text_rsp`.
        unsafe {
            bindings::iscsit_build_reject(self.raw(), conn.as_ptr(), hdr.as_mut_ptr().cast())
        };
        // The data segment length is the rejected header.
        hdr[5..8].copy_from_slice(&[0, 0, HDR_LEN as u8]);
        // SAFETY: A reject keeps a copy of the rejected header in `buf_ptr`
        // (`iscsit_add_reject()`).
        unsafe { self.buf(HDR_LEN) }
    }

    /// The first `len` bytes of the command's PDU buffer (`buf_ptr`), or nothing if it has
    /// none.
    ///
    /// # Safety
    ///
    /// A non-null `buf_ptr` holds at least `len` bytes.
    unsafe fn buf(&self, len: usize) -> &[u8] {
        // SAFETY: By the type invariant the command is valid; the buffer lives until the
        // command is released, which takes `self`; its length is guaranteed by the caller.
        unsafe {
            let p = (*self.raw()).buf_ptr;
            if p.is_null() || len == 0 {
                return &[];
            }
            core::slice::from_raw_parts(p.cast::<u8>(), len)
        }
    }

    /// Whether the command is a text exchange that continues (`ISCSI_FLAG_TEXT_CONTINUE` in the
    /// response `hdr` just sent): the target keeps it for the next text request.
    pub fn text_continues(hdr: &[u8; HDR_LEN]) -> bool {
        hdr[1] & bindings::ISCSI_FLAG_TEXT_CONTINUE as u8 != 0
    }

    /// The command's queue state.
    pub fn state(&self) -> State {
        // SAFETY: By the type invariant the command is valid.
        State::from_raw(unsafe { (*self.raw()).i_state } as c_int)
    }

    /// Marks the response as sent (`ISTATE_SENT_STATUS`).
    pub fn set_sent(&self) {
        // SAFETY: As above; the transport owns the command's state while it holds it.
        unsafe { (*self.raw()).i_state = bindings::cmd_i_state_table_ISTATE_SENT_STATUS };
    }

    /// Completes a logout after its response was sent (`iscsit_logout_post_handler()`); the
    /// target closes the connection or session, and waits for it: call it from a context that
    /// [`Transport::wait_conn`] does not wait for, and not inside [`ConnSlot::with`].
    pub fn logout_post_handler(self) {
        let c = self.into_target();
        // SAFETY: By the type invariant the command is valid; its connection is kept by the
        // usage count the target took when it accepted the logout, which this call drops.
        unsafe { bindings::iscsit_logout_post_handler(c, (*c).conn) };
    }

    /// Releases a command whose response was sent or failed (as `isert_put_cmd()` does for
    /// control commands): takes it off the connection's list and frees it
    /// (`transport_generic_free_cmd()` when it has a target-core part, else
    /// `iscsit_release_cmd()`).
    ///
    /// `failed` says the response (or data transfer) did not complete; a WRITE still waiting
    /// for its data then gives back the reference the target took for the transfer.
    pub fn release(self, failed: bool) {
        ManuallyDrop::new(self).release_now(failed);
    }

    /// [`Cmd::release`], for `release` and `drop`: the command is not used afterwards.
    fn release_now(&mut self, failed: bool) {
        drop(self.rw.take());
        let c = self.raw();
        // SAFETY: By the type invariant the command and its connection are valid and the
        // command is ours; both callers make sure it is not used again.
        unsafe {
            bindings::iscsit_conn_unlink_cmd((*c).conn, c);
            if u32::from((*c).iscsi_opcode) == bindings::ISCSI_OP_SCSI_CMD && self.is_write() {
                bindings::iscsit_stop_dataout_timer(c);
                if failed
                    && (*c).se_cmd.t_state
                        == bindings::transport_state_table_TRANSPORT_WRITE_PENDING
                {
                    bindings::target_put_sess_cmd(&raw mut (*c).se_cmd);
                }
            }
            if !(*c).se_cmd.se_tfo.is_null() {
                bindings::transport_generic_free_cmd(&raw mut (*c).se_cmd, 0);
            } else {
                bindings::iscsit_release_cmd(c);
            }
        }
    }
}

/// The transport's way to reach a connection from its own contexts (completion work, CM
/// events): it holds the connection from [`Transport::accept_np`] until
/// [`Transport::free_conn`], which waits for [`ConnSlot::with`] calls to finish.
///
/// # Invariants
///
/// While `conn` holds a pointer, it is a valid connection.
#[pin_data]
pub struct ConnSlot {
    #[pin]
    conn: Mutex<Option<ConnPtr>>,
}

struct ConnPtr(NonNull<bindings::iscsit_conn>);

// SAFETY: The pointer is only dereferenced under the slot's lock, while valid.
unsafe impl Send for ConnPtr {}

impl ConnSlot {
    /// An empty slot.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            conn <- new_mutex!(None),
        })
    }

    /// Runs `f` with the connection if it was accepted and not yet freed. `f` may sleep; it
    /// must not wait for the connection's teardown (see [`Cmd::logout_post_handler`]).
    pub fn with<R>(&self, f: impl FnOnce(&Conn) -> R) -> Option<R> {
        let guard = self.conn.lock();
        guard.as_ref().map(|c| {
            // SAFETY: By the type invariant the pointer is valid while it is in the slot, and
            // it stays there while we hold the lock.
            f(unsafe { Conn::from_raw(c.0.as_ptr()) })
        })
    }

    fn set(&self, conn: *mut bindings::iscsit_conn) {
        // INVARIANT: Called by `accept_np` with the valid connection it accepted.
        *self.conn.lock() = NonNull::new(conn).map(ConnPtr);
    }

    fn revoke(&self) {
        // INVARIANT: Emptied before the connection is freed.
        *self.conn.lock() = None;
    }
}

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
    /// (`iscsit_wait_conn`): every [`Cmd`] the transport holds is released.
    fn wait_conn(conn: &Conn, ctx: ArcBorrow<'_, Self::ConnData>);

    /// Frees the connection's transport state (`iscsit_free_conn`).
    fn free_conn(conn: &Conn, ctx: Arc<Self::ConnData>);
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
                t.priv_size = core::mem::size_of::<Remote>() as c_int;
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
    /// Called by the target with an accepted connection.
    unsafe extern "C" fn wait_conn(conn: *mut bindings::iscsit_conn) {
        // SAFETY: By the safety requirements.
        let (c, ctx) = unsafe { Self::ctx(conn) };
        T::wait_conn(c, ctx);
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
        // Waits for the transport's contexts that are using the connection.
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
        // INVARIANT: The target hands the command to the transport until it is released.
        match f(c, ctx, Cmd { cmd, rw: None }) {
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
        unsafe {
            bindings::iscsit_conn_unlink_cmd(conn, cmd);
            if (*cmd).data_direction == bindings::dma_data_direction::DMA_TO_DEVICE {
                bindings::iscsit_stop_dataout_timer(cmd);
            }
        }
    }

    extern "C" fn get_sup_prot_ops(_conn: *mut bindings::iscsit_conn) -> bindings::target_prot_op {
        bindings::target_prot_op_TARGET_PROT_NORMAL
    }
}
