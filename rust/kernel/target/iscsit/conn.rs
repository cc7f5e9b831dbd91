// SPDX-License-Identifier: GPL-2.0

//! Connections: handing received PDUs to the target, and the transport's slot for them.

use crate::{
    bindings,
    error::to_result,
    ffi::c_int,
    new_mutex,
    prelude::*,
    sync::Mutex,
    types::Opaque, //
};
use core::{
    ops::Range,
    ptr::NonNull, //
};

use super::{
    bh::BhGuard,
    clist::Nodes,
    *, //
};

/// A connection of the iSCSI target (`struct iscsit_conn`), as its transport sees it.
///
/// # Examples
///
/// A transport's receive path hands the control PDUs of the full-feature phase to the target:
///
/// ```
/// use kernel::target::iscsit::{Bhs, ConnSlot, RejectReason};
///
/// /// Hands a received PDU, `hdr` and its data segment `data`, to the target. `EAGAIN` when
/// /// every command tag is in use: the transport keeps the PDU and tries again later.
/// fn control_pdu(slot: &ConnSlot, hdr: &Bhs, data: &[u8]) -> Result {
///     slot.with(|conn| {
///         let cmd = conn.alloc_cmd().ok_or(EAGAIN)?;
///         match hdr.opcode() {
///             // NOP-Out, task management request, text request, logout request.
///             0x00 => conn.handle_nop_out(cmd, hdr),
///             0x02 if !conn.is_discovery() => conn.handle_tmf(cmd, hdr),
///             0x04 => conn.handle_text(cmd, hdr, data),
///             0x06 => conn.handle_logout(cmd, hdr),
///             _ => {
///                 conn.reject(cmd, hdr, RejectReason::CmdNotSupported);
///                 Ok(())
///             }
///         }
///     })
///     .unwrap_or(Err(ENOTCONN))
/// }
/// ```
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

    pub(super) fn as_ptr(&self) -> *mut bindings::iscsit_conn {
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

    /// Allocates a command (`iscsit_allocate_cmd()`) without waiting: `None` when every
    /// command tag of the session is in use.
    ///
    /// A transport that handles received PDUs in its completion context must not sleep for a
    /// tag there: the commands whose release would free one may be waiting for that same
    /// context to see their send completions. It keeps the PDU (and its receive buffer) and
    /// tries again after commands were released.
    pub fn alloc_cmd(&self) -> Option<Cmd> {
        // SAFETY: By the type invariant the connection is valid.
        let cmd = unsafe {
            bindings::iscsit_allocate_cmd(self.as_ptr(), bindings::TASK_RUNNING as c_int)
        };
        // SAFETY: A new command belongs to the transport until it gives it to the target.
        NonNull::new(cmd).map(|cmd| unsafe { Cmd::from_target(cmd) })
    }

    /// Hands a SCSI command to the target (as `isert_handle_scsi_cmd()`): `imm` is its
    /// immediate data and `remote` the initiator's buffers from the iSER header. The target
    /// then asks for the rest of a WRITE's data ([`Transport::get_dataout`]), and sends READ
    /// data and the status ([`Transport::queue_data_in`], [`Transport::queue_status`]).
    ///
    /// The immediate data is copied into the command's buffer.
    pub fn handle_scsi_cmd(&self, cmd: Cmd, hdr: &Bhs, imm: &[u8], remote: Remote) -> Result {
        self.scsi_cmd(cmd, hdr, Imm::Copy(imm), remote).0
    }

    /// [`Conn::handle_scsi_cmd`] for a PDU received in `rx`, whose immediate data is the bytes
    /// `imm` of `rx`. When that is all the command's data, the target executes the WRITE on
    /// the receive buffer itself (zero-copy, as `ib_isert` does): `rx` is lent to `lender` and
    /// [`Cmd::release`] gives it back. Otherwise the data is copied and `rx` comes back with
    /// the result, for posting again.
    ///
    /// `lender` lends only for commands of its own connection (it comes with this one from
    /// [`ConnSlot::with_lender`]); for another connection the data is copied.
    pub fn handle_scsi_cmd_in_place(
        &self,
        lender: &Lender,
        cmd: Cmd,
        hdr: &Bhs,
        rx: RxBuf,
        imm: Range<usize>,
        remote: Remote,
    ) -> (Result, Option<RxBuf>) {
        if imm.end > rx.len() || imm.start > imm.end {
            return (Err(EINVAL), Some(rx));
        }
        self.scsi_cmd(cmd, hdr, Imm::InPlace { lender, rx, imm }, remote)
    }

    fn scsi_cmd(
        &self,
        cmd: Cmd,
        hdr: &Bhs,
        imm: Imm<'_>,
        remote: Remote,
    ) -> (Result, Option<RxBuf>) {
        let mut hdr = *hdr;
        // SAFETY: The transport area is ours until the command is given to the target.
        unsafe { cmd.remote_ptr().write(remote) };
        // From here on the target owns the command, also on error (it rejects it itself).
        let c = cmd.into_target();
        // SAFETY: The connection and command are valid; `hdr` is a full header, copied by the
        // target. From here on the target owns the command.
        let rc = unsafe { bindings::iscsit_setup_scsi_cmd(self.as_ptr(), c, hdr.as_mut_ptr()) };
        if rc < 0 {
            return (to_result(rc), imm.give_back());
        }
        // SAFETY: The command is valid; `iscsit_setup_scsi_cmd` filled these fields.
        let (imm_data, imm_len, unsol, data_len) = unsafe {
            (
                (*c).immediate_data != 0,
                (*c).first_burst_len as usize,
                (*c).unsolicited_data != 0,
                (*c).se_cmd.data_length as usize,
            )
        };
        // The buffer is lent when its immediate data is all the data.
        let whole = imm_data && imm_len > 0 && imm_len == data_len;
        let fits = imm_len <= imm.len();
        let imm = imm.lend_if(whole && fits, self.as_ptr());
        if matches!(imm, Imm::Lent { .. }) {
            // SAFETY: The command is ours until it goes to the target's queues below; the
            // target core then allocates no buffer for the data (as with `ib_isert`).
            unsafe {
                (*c).se_cmd.se_cmd_flags |=
                    bindings::se_cmd_flags_table_SCF_PASSTHROUGH_SG_TO_MEM_NOALLOC;
            }
        }
        // SAFETY: As above.
        let rc =
            unsafe { bindings::iscsit_process_scsi_cmd(self.as_ptr(), c, hdr.as_mut_ptr().cast()) };
        if rc < 0 {
            // The target answered the command itself.
            return (Ok(()), imm.give_back());
        }
        let dump = rc > 0;
        if !dump && !imm_data {
            // Sequenced by `iscsit_process_scsi_cmd` already.
            return (Ok(()), imm.give_back());
        }
        let back = if dump {
            // Not transferred.
            imm.give_back()
        } else {
            let back = match imm {
                Imm::Lent { lender, idx, data } => {
                    // SAFETY: The command has no data buffer (the flag above); `data` is the
                    // immediate data, `imm_len` bytes (`lend_if` checked the length) of the
                    // kmalloc'ed buffer `lender` holds at `idx`; the lender serves this
                    // connection, so it lives until the command is freed; the command is not
                    // executed before `iscsit_sequence_cmd` below.
                    unsafe { cmd::Cmd::set_lent_data(c, lender, idx, data, imm_len as u32) };
                    None
                }
                imm => {
                    let data = imm.data();
                    if imm_len > data.len() {
                        return (Err(EINVAL), imm.give_back());
                    }
                    // SAFETY: `iscsit_process_scsi_cmd` allocated the data scatter list for
                    // the whole transfer, of which the immediate data is the start.
                    unsafe {
                        let se = &raw mut (*c).se_cmd;
                        let pages = imm_len.div_ceil(crate::page::PAGE_SIZE).max(1);
                        let nents = (pages as u32).min((*se).t_data_nents);
                        bindings::sg_copy_from_buffer(
                            (*se).t_data_sg,
                            nents,
                            data.as_ptr().cast(),
                            imm_len,
                        );
                    }
                    imm.give_back()
                }
            };
            // SAFETY: The command is valid and ours until it is sequenced below.
            unsafe {
                (*c).write_data_done += imm_len as u32;
                if (*c).write_data_done == (*c).se_cmd.data_length {
                    cmd::got_last_dataout(c);
                }
            }
            back
        };
        // In network order, as the target takes it (`hdr->cmdsn`).
        let cmdsn = hdr.cmdsn().to_be();
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
        (Ok(()), back)
    }

    /// Takes an unsolicited Data-Out PDU (`hdr` and its data segment `data`) for a WRITE that
    /// the target allows to send data before an R2T (`InitialR2T=No`): the target checks the
    /// header and finds the command (`iscsit_check_dataout_hdr()`), the data is copied into
    /// the command's buffer at the PDU's offset, and the target accounts for it
    /// (`iscsit_check_dataout_payload()`), executing the command once all data is there.
    ///
    /// Solicited data never comes as PDUs over iSER (the target reads it by RDMA): a Data-Out
    /// for a command that expects none is refused with `EINVAL`. A data segment longer than
    /// the initiator may send (`MaxXmitDataSegmentLength`) is refused with `EMSGSIZE` and not
    /// handed to the target, whose reject would wait for a command tag: the transport rejects
    /// it ([`Conn::reject`], [`RejectReason::ProtocolError`]).
    pub fn handle_data_out(&self, hdr: &Bhs, data: &[u8]) -> Result {
        // SAFETY: The connection is valid; its operational parameters are set at login.
        let max = unsafe { (*(*self.as_ptr()).conn_ops).MaxXmitDataSegmentLength };
        if data.len() > max as usize {
            return Err(EMSGSIZE);
        }
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
        let offset = hdr.buffer_offset();
        // SAFETY: `iscsit_check_dataout_hdr` returned a command of this connection that expects
        // this data; it checked that `offset` plus the header's data length fits the command's
        // data length, and `data` is that long. The scatter list covers the data length.
        let copied = unsafe {
            if (*cmd).unsolicited_data == 0 {
                return Err(EINVAL);
            }
            let se = &raw mut (*cmd).se_cmd;
            bindings::sg_pcopy_from_buffer(
                (*se).t_data_sg,
                (*se).t_data_nents,
                data.as_ptr().cast(),
                data.len(),
                offset as bindings::off_t,
            )
        };
        if copied != data.len() {
            return Err(EINVAL);
        }
        // SAFETY: As above; the header is a full one, read by the call.
        to_result(unsafe {
            bindings::iscsit_check_dataout_payload(cmd, hdr.as_mut_ptr().cast(), false)
        })
    }

    /// Hands a task management request to the target (`iscsit_handle_task_mgt_cmd()`); the
    /// response comes back with [`State::SendTaskMgtRsp`].
    pub fn handle_tmf(&self, cmd: Cmd, hdr: &Bhs) -> Result {
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
    pub fn handle_text(&self, cmd: Cmd, hdr: &Bhs, data: &[u8]) -> Result {
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
    pub fn handle_logout(&self, cmd: Cmd, hdr: &Bhs) -> Result {
        let mut hdr = *hdr;
        // The target takes ownership of `cmd`.
        let c = cmd.into_target();
        // SAFETY: The connection and `c` are valid; `hdr` is a full header.
        to_result(unsafe { bindings::iscsit_handle_logout_cmd(self.as_ptr(), c, hdr.as_mut_ptr()) })
    }

    /// Hands a NOP-Out to the target (`iscsit_setup_nop_out()`, `iscsit_process_nop_out()`);
    /// a ping is answered with [`State::SendNopin`]. The ping data is not echoed (the
    /// initiators send none).
    pub fn handle_nop_out(&self, cmd: Cmd, hdr: &Bhs) -> Result {
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

    /// Rejects a PDU with `reason` (`iscsit_reject_cmd()`), answering with `cmd`, a command
    /// from [`Conn::alloc_cmd`]: the target's own `iscsit_add_reject()` would wait for a
    /// command tag. The reject comes back with [`State::SendReject`].
    pub fn reject(&self, cmd: Cmd, hdr: &Bhs, reason: RejectReason) {
        let mut hdr = *hdr;
        let c = cmd.into_target();
        // SAFETY: `c` is a new command of this connection, now the target's; `hdr` is a full
        // header, copied by the target. The call queues the reject, or frees the command if it
        // cannot copy the header, and returns -1 either way.
        let _ = unsafe { bindings::iscsit_reject_cmd(c, reason as u8, hdr.as_mut_ptr()) };
    }
}

/// Why a PDU is rejected (the reason codes of the iSCSI Reject PDU that a transport uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectReason {
    /// An opcode the transport does not handle (`ISCSI_REASON_CMD_NOT_SUPPORTED`).
    CmdNotSupported = bindings::ISCSI_REASON_CMD_NOT_SUPPORTED as u8,
    /// A PDU that breaks the protocol (`ISCSI_REASON_PROTOCOL_ERROR`).
    ProtocolError = bindings::ISCSI_REASON_PROTOCOL_ERROR as u8,
}

/// A connection the target is closing, as [`Transport::wait_conn`] is given it.
///
/// # Invariants
///
/// The target is in `iscsit_close_connection()` for the connection, or ends a failed login
/// of it: its receive and transmit threads have stopped (or never started), so nothing takes
/// commands from the connection's response and immediate queues any more. The transport's
/// [`ConnSlot`] is empty, so none of its contexts hands the target PDUs of the connection
/// either: no command is added to the connection, or deferred, meanwhile.
#[repr(transparent)]
pub struct Closing(Conn);

impl core::ops::Deref for Closing {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl Closing {
    /// # Safety
    ///
    /// `conn` is a valid connection for `'a`, which the target is closing (its threads have
    /// stopped or never started: the call comes from `iscsit_close_connection()` or from the
    /// end of a failed login), and whose transport slot is empty.
    pub(super) unsafe fn from_raw<'a>(conn: *mut bindings::iscsit_conn) -> &'a Self {
        // SAFETY: `Closing` is a transparent wrapper of `Conn`, which is one of the connection;
        // valid for `'a` and closing by the safety requirements.
        unsafe { &*conn.cast::<Self>() }
    }

    /// Stops new commands and waits for the running ones (`target_stop_cmd_counter()`,
    /// `target_wait_for_cmds()`), when the connection has a session.
    ///
    /// Commands the target queued for its stopped transmit thread (a status with sense data,
    /// a task management or reject response, a command to remove) would hold the wait
    /// forever: the target frees them only after this returns
    /// (`iscsit_release_commands_from_conn()`). They are freed here, as that function does,
    /// while the wait goes on.
    pub fn wait_for_cmds(&self) {
        // SAFETY: By the type invariant the connection is valid; `cmd_cnt` is set with the
        // session.
        let cnt = unsafe {
            let c = self.as_ptr();
            if (*c).sess.is_null() {
                return;
            }
            (*c).cmd_cnt
        };
        if cnt.is_null() {
            return;
        }
        // SAFETY: `cnt` is the session's command counter, valid while the connection is.
        unsafe { bindings::target_stop_cmd_counter(cnt) };
        self.free_deferred_cmds();
        let mut waited = 0u32;
        loop {
            self.free_queued_cmds();
            // SAFETY: As above.
            if unsafe { bindings::percpu_ref_is_zero(&raw mut (*cnt).refcnt) } {
                break;
            }
            crate::time::delay::fsleep(crate::time::Delta::from_millis(10));
            waited += 1;
            if waited == 1000 {
                self.show_cmds();
            }
        }
        // SAFETY: As above.
        unsafe { bindings::target_wait_for_cmds(cnt) };
    }

    /// Prints the connection's commands (once its wait for them has taken 10 s).
    fn show_cmds(&self) {
        let conn = self.as_ptr();
        // SAFETY: By the type invariant the connection, and its lock, are valid.
        let _guard = unsafe { BhGuard::lock(&raw mut (*conn).cmd_lock) };
        pr_warn!("iscsit: commands still running after 10 s:\n");
        // SAFETY: As above; the list is read, and not changed, under its lock.
        let nodes = unsafe { Nodes::new(&raw mut (*conn).conn_cmd_list) };
        for node in nodes {
            // SAFETY: The nodes of the list are the `i_conn_node` fields of its commands, which
            // are valid while on it.
            let (itt, op, state, t_state, flags) = unsafe {
                let c = crate::container_of!(node, bindings::iscsit_cmd, i_conn_node);
                (
                    u32::from_be((*c).init_task_tag),
                    (*c).iscsi_opcode,
                    (*c).i_state,
                    (*c).se_cmd.t_state,
                    (*c).se_cmd.transport_state,
                )
            };
            pr_warn!(
                "iscsit:   itt {:#x} opcode {:#x} i_state {} t_state {} transport_state {:#x}\n",
                itt,
                op,
                state,
                t_state,
                flags
            );
        }
    }

    /// Frees the connection's commands that wait for earlier command numbers
    /// (`ISTATE_DEFERRED_CMD`): an initiator that leaves a gap in its CmdSN never gets them
    /// executed, and the target frees them only after [`Closing::wait_for_cmds`] returns. As
    /// the target does then (`iscsit_clear_ooo_cmdsns_for_conn()`), the session's list of
    /// deferred commands first forgets those of this connection.
    fn free_deferred_cmds(&self) {
        let conn = self.as_ptr();
        // SAFETY: By the type invariant the connection is valid, and has a session (checked by
        // the caller), whose mutex is valid.
        let (sess, cid) = unsafe { ((*conn).sess, (*conn).cid) };
        // SAFETY: As above.
        let mutex = unsafe { &raw mut (*sess).cmdsn_mutex };
        // SAFETY: As above.
        unsafe { bindings::mutex_lock(mutex) };
        // SAFETY: As above; the list is read under the mutex, and only its entries change.
        let nodes = unsafe { Nodes::new(&raw mut (*sess).sess_ooo_cmdsn_list) };
        for node in nodes {
            // SAFETY: The nodes of the list are the `ooo_list` fields of its entries.
            let ooo = unsafe { crate::container_of!(node, bindings::iscsi_ooo_cmdsn, ooo_list) };
            // SAFETY: `ooo` is a valid entry, changed under the mutex; an entry without a
            // command is one the target skips.
            unsafe {
                if (*ooo).cid == cid {
                    (*ooo).cmd = core::ptr::null_mut();
                }
            }
        }
        // SAFETY: Locked above.
        unsafe { bindings::mutex_unlock(mutex) };
        while let Some(c) = self.take_cmd(bindings::cmd_i_state_table_ISTATE_DEFERRED_CMD) {
            // SAFETY: `c` is a valid command of the connection, off its list, that nothing
            // refers to any more: the session's list forgot it above, and by the type invariant
            // the connection's threads have stopped and its slot is empty, so no command was
            // deferred since. Freeing waits for the target core (which never executed it) and
            // drops its references.
            unsafe { bindings::iscsit_free_cmd(c, true) };
        }
    }

    /// Takes the first command in state `state` off the connection's list.
    fn take_cmd(&self, state: bindings::cmd_i_state_table) -> Option<*mut bindings::iscsit_cmd> {
        let conn = self.as_ptr();
        // SAFETY: By the type invariant the connection, and its lock, are valid.
        let _guard = unsafe { BhGuard::lock(&raw mut (*conn).cmd_lock) };
        // SAFETY: As above; the list is read under its lock, and changes only by the removal of
        // the node just returned.
        let nodes = unsafe { Nodes::new(&raw mut (*conn).conn_cmd_list) };
        for node in nodes {
            // SAFETY: The nodes of the list are the `i_conn_node` fields of its commands.
            let c = unsafe { crate::container_of!(node, bindings::iscsit_cmd, i_conn_node) };
            // SAFETY: `c` is a valid command on the list.
            if unsafe { (*c).i_state } == state {
                // SAFETY: As above; the list is changed under its lock.
                unsafe { bindings::list_del_init(node) };
                return Some(c);
            }
        }
        None
    }

    /// Frees the connection's commands that wait in its response or immediate queue.
    fn free_queued_cmds(&self) {
        let conn = self.as_ptr();
        loop {
            // SAFETY: By the type invariant the connection is valid; the queue and its lock
            // are fields of it.
            let immediate = unsafe {
                first_queued(
                    &raw mut (*conn).immed_queue_list,
                    &raw mut (*conn).immed_queue_lock,
                )
            };
            let c = immediate.or_else(|| {
                // SAFETY: As above.
                unsafe {
                    first_queued(
                        &raw mut (*conn).response_queue_list,
                        &raw mut (*conn).response_queue_lock,
                    )
                }
            });
            let Some(c) = c else {
                return;
            };
            // SAFETY: `c` is a valid command of the connection; by the type invariant no thread
            // of the target takes it from a queue any more, so only this frees the transport's
            // share of it (a target-core worker that has just queued it still holds a reference
            // of its own, as for `iscsit_release_commands_from_conn()`, which frees commands
            // the same way). It first leaves the connection's list, as there.
            unsafe { cmd::unlink(conn, c) };
            // SAFETY: As above; freeing takes it off the queues and waits for the target core
            // to be done with it.
            unsafe { bindings::iscsit_free_cmd(c, true) };
        }
    }

    /// Waits up to `SECONDS_FOR_LOGOUT_COMP` seconds for the target to finish a logout
    /// (`conn_logout_comp`), after a logout response was sent.
    pub fn wait_for_logout(&self) {
        // Not `bindings::HZ`, which is the user-visible `USER_HZ`, not the kernel's tick rate.
        let timeout = crate::time::msecs_to_jiffies(bindings::SECONDS_FOR_LOGOUT_COMP * 1000);
        // SAFETY: By the type invariant the connection is valid; the completion lives in it.
        unsafe {
            bindings::wait_for_completion_timeout(
                &raw mut (*self.as_ptr()).conn_logout_comp,
                timeout,
            )
        };
    }
}

/// Where a SCSI command's immediate data is.
enum Imm<'a> {
    /// To be copied from here.
    Copy(&'a [u8]),
    /// At `imm` in the receive buffer `rx`, which may be lent to `lender`.
    InPlace {
        lender: &'a Lender,
        rx: RxBuf,
        imm: Range<usize>,
    },
    /// In the buffer `lender` holds at `idx`, at `data`.
    Lent {
        lender: &'a Lender,
        idx: usize,
        data: *const u8,
    },
}

impl Imm<'_> {
    /// How many bytes there are.
    fn len(&self) -> usize {
        match self {
            Self::Copy(d) => d.len(),
            Self::InPlace { imm, .. } => imm.len(),
            Self::Lent { .. } => 0,
        }
    }

    /// The data, to copy (nothing once lent).
    fn data(&self) -> &[u8] {
        match self {
            Self::Copy(d) => d,
            Self::InPlace { rx, imm, .. } => rx.as_slice().get(imm.clone()).unwrap_or(&[]),
            Self::Lent { .. } => &[],
        }
    }

    /// Lends the receive buffer if `lend` and the lender serves `conn`; keeps it otherwise (or
    /// when the lender has no memory for it).
    fn lend_if(self, lend: bool, conn: *mut bindings::iscsit_conn) -> Self {
        match self {
            Self::InPlace { lender, rx, imm } if lend && lender.serves(conn) => {
                match lender.lend(rx) {
                    Ok((idx, base)) => Self::Lent {
                        lender,
                        idx,
                        data: base.wrapping_add(imm.start),
                    },
                    Err(rx) => Self::InPlace { lender, rx, imm },
                }
            }
            other => other,
        }
    }

    /// The receive buffer, back from wherever it is.
    fn give_back(self) -> Option<RxBuf> {
        match self {
            Self::Copy(_) => None,
            Self::InPlace { rx, .. } => Some(rx),
            Self::Lent { lender, idx, .. } => lender.take(idx),
        }
    }
}

/// The transport's way to reach a connection from its own contexts (completion work, CM
/// events): it holds the connection from [`Transport::accept_np`] until
/// [`Transport::free_conn`], which waits for [`ConnSlot::with`] calls to finish. It also keeps
/// the receive buffers the connection lent to its commands ([`Lender`]).
///
/// # Examples
///
/// ```
/// use kernel::{sync::Arc, target::iscsit::ConnSlot};
///
/// /// A transport's state of a connection (its `Transport::ConnData`).
/// #[pin_data]
/// struct MyConn {
///     #[pin]
///     conn: ConnSlot,
///     id: u64,
/// }
///
/// let my = Arc::pin_init(
///     pin_init!(MyConn {
///         conn <- ConnSlot::new(),
///         id: 1,
///     }),
///     GFP_KERNEL,
/// )?;
/// // Until the target accepts the connection, the transport's contexts do not reach it.
/// assert!(my.conn.with(|c| c.is_discovery()).is_none());
/// assert_eq!(my.conn.lent(), 0);
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// While `conn` holds a pointer, it is a valid connection. `lender` is bound to the first
/// connection the slot is set to, whose context (the transport's [`Transport::ConnData`])
/// owns the slot and is kept by the target until it frees that connection.
#[pin_data]
pub struct ConnSlot {
    #[pin]
    conn: Mutex<Option<ConnPtr>>,
    #[pin]
    lender: Lender,
}

struct ConnPtr(NonNull<bindings::iscsit_conn>);

// SAFETY: The pointer is only dereferenced under the slot's lock, while valid.
unsafe impl Send for ConnPtr {}

impl ConnSlot {
    /// An empty slot.
    // The lock is made here, not inside `pin_init!`'s closure, and this function is not inlined
    // into other crates: its class key is a static of this crate, and lockdep requires every lock
    // of a class to carry the same name pointer. Code that other crates instantiate (the closure,
    // or an inlined copy of this function) would bring their own copy of the name literal, and
    // lockdep warns when a second copy initialises a lock of the class (the doctests and risert,
    // or risert reloaded at another address).
    #[inline(never)]
    pub fn new() -> impl PinInit<Self> {
        let conn = new_mutex!(None, "iscsit_conn_slot");
        pin_init!(Self {
            conn <- conn,
            lender <- Lender::new(),
        })
    }

    /// Runs `f` with the connection if it was accepted and not yet freed. `f` may sleep; it
    /// must not wait for the connection's teardown (see [`Cmd::logout_post_handler`]).
    pub fn with<R>(&self, f: impl FnOnce(&Conn) -> R) -> Option<R> {
        self.with_lender(|c, _| f(c))
    }

    /// [`ConnSlot::with`], also handing over the connection's [`Lender`], for
    /// [`Conn::handle_scsi_cmd_in_place`].
    pub fn with_lender<R>(&self, f: impl FnOnce(&Conn, &Lender) -> R) -> Option<R> {
        let guard = self.conn.lock();
        guard.as_ref().map(|c| {
            // SAFETY: By the type invariant the pointer is valid while it is in the slot, and
            // it stays there while we hold the lock.
            f(unsafe { Conn::from_raw(c.0.as_ptr()) }, &self.lender)
        })
    }

    /// The receive buffers lent now.
    pub fn lent(&self) -> usize {
        self.lender.outstanding()
    }

    pub(super) fn set(&self, conn: *mut bindings::iscsit_conn) {
        // INVARIANT: Called by `accept_np` with the valid connection it accepted, whose context
        // owns the slot; only the first connection binds the lender.
        self.lender.bind(conn);
        *self.conn.lock() = NonNull::new(conn).map(ConnPtr);
    }

    pub(super) fn revoke(&self) {
        // INVARIANT: Emptied before the connection is freed.
        *self.conn.lock() = None;
    }
}

/// The command of the first request in a queue of the target (`struct iscsi_queue_req`).
///
/// # Safety
///
/// `head` is a valid queue of requests, protected by `lock`.
unsafe fn first_queued(
    head: *mut bindings::list_head,
    lock: *mut bindings::spinlock_t,
) -> Option<*mut bindings::iscsit_cmd> {
    // SAFETY: By the safety requirements the lock is valid.
    let _guard = unsafe { BhGuard::lock(lock) };
    // SAFETY: The queue is valid by the safety requirements, and read, not changed, under its
    // lock.
    let nodes = unsafe { Nodes::new(head) };
    for node in nodes {
        // SAFETY: The nodes of the queue are the `qr_list` fields of its requests.
        let qr = unsafe { crate::container_of!(node, bindings::iscsi_queue_req, qr_list) };
        // SAFETY: `qr` is a valid request on the queue.
        let c = unsafe { (*qr).cmd };
        if !c.is_null() {
            return Some(c);
        }
    }
    None
}
