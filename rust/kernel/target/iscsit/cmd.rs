// SPDX-License-Identifier: GPL-2.0

//! Commands the transport holds.

use crate::{
    bindings,
    dma::DataDirection,
    error::to_result,
    ffi::c_int,
    prelude::*,
    rdma::rw::{
        RwCtx,
        RwQp, //
    },
    sync::Arc, //
};
use core::{
    mem::{
        ManuallyDrop,
        MaybeUninit, //
    },
    ptr::NonNull, //
};

use super::{
    bh::BhGuard,
    lend::{
        Lender,
        RxBuf, //
    },
    *, //
};

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
/// # Examples
///
/// A transport reads a WRITE's data by RDMA ([`Transport::get_dataout`]) and gives the command
/// to the target when the read completed:
///
/// ```
/// use kernel::{
///     rdma::{
///         rw::{RwCtx, RwQp},
///         verbs::{DmaBuf, PostError, Qp, SendCtx, ToDevice},
///     },
///     sync::Arc,
///     target::iscsit::{Cmd, QueueResult, Refused},
/// };
///
/// /// An RDMA transfer, with the command whose data it moves.
/// struct Transfer {
///     cmd: Option<Cmd>,
/// }
///
/// impl SendCtx for Transfer {
///     fn dma_buf(&self) -> Option<&DmaBuf<ToDevice>> {
///         None
///     }
///
///     fn rw(&mut self) -> Option<Pin<&mut RwCtx>> {
///         self.cmd.as_mut()?.rw_mut()
///     }
/// }
///
/// /// Posts the RDMA READ of `cmd`'s data on `qp`, whose read/write queue pair is `rw`.
/// fn get_dataout(qp: &Qp<Transfer>, rw: &Arc<RwQp>, mut cmd: Cmd) -> QueueResult {
///     let Ok(mut t) = KBox::new(Transfer { cmd: None }, GFP_KERNEL) else {
///         // The target tries again later.
///         return Err(Refused::new(cmd, ENOMEM));
///     };
///     if let Err(e) = cmd.rdma_setup(rw) {
///         return Err(Refused::new(cmd, e));
///     }
///     t.cmd = Some(cmd);
///     match qp.post_rw(t, None) {
///         Err(PostError {
///             error,
///             ctx: Some(mut t),
///         }) => match t.cmd.take() {
///             Some(cmd) => Err(Refused::new(cmd, error)),
///             None => Ok(()),
///         },
///         // Posted, or posted in part: the transfer comes back with a completion.
///         _ => Ok(()),
///     }
/// }
///
/// /// Takes back a completed transfer: the target executes the command, or frees it.
/// fn read_done(mut t: KBox<Transfer>, ok: bool) {
///     match t.cmd.take() {
///         Some(cmd) if ok => cmd.rdma_read_done(),
///         // Nothing is lent to a command whose data comes by RDMA.
///         Some(cmd) => drop(cmd.release(true)),
///         None => (),
///     }
/// }
/// ```
///
/// Whether a text exchange goes on is in the response header just sent:
///
/// ```
/// use kernel::target::iscsit::{Bhs, Cmd, HDR_LEN};
///
/// // A text response (0x24) with the Continue flag (`ISCSI_FLAG_TEXT_CONTINUE`).
/// let mut rsp = [0u8; HDR_LEN];
/// rsp[..2].copy_from_slice(&[0x24, 0x40]);
/// assert!(Cmd::text_continues(&Bhs::from(rsp)));
/// rsp[1] = 0x80;
/// assert!(!Cmd::text_continues(&Bhs::from(rsp)));
/// ```
///
/// # Invariants
///
/// `cmd` is valid; the target does not free it before [`Cmd::release`], or before the
/// connection is freed, which the transport's drain in [`Transport::wait_conn`] orders after
/// the release of every command it holds. Its transport area is a `CmdPriv`, which only
/// this handle uses while it exists.
pub struct Cmd {
    cmd: NonNull<bindings::iscsit_cmd>,
}

/// The transport's area of a command (`iscsit_priv_cmd()`: `priv_size` bytes after it, zeroed
/// when the target allocates the command): the initiator's buffers, and the command's RDMA
/// read/write context while its data moves, built in place so that a transfer allocates
/// nothing (as `ib_isert` keeps its `rdma_rw_ctx` in its command).
///
/// It also holds the scatter list entry through which the target reads immediate data in
/// place, and where the receive buffer holding it was lent
/// ([`Conn::handle_scsi_cmd_in_place`]).
///
/// # Invariants
///
/// `rw` is initialized exactly while `rw_live` is true; it is never moved. `lender` is null, or
/// the [`Lender`] that holds at `lent` the receive buffer `sg` points into; that lender lives
/// until the command is freed (see [`Lender`]).
#[repr(C)]
pub(super) struct CmdPriv {
    remote: Remote,
    rw_live: bool,
    rw: MaybeUninit<RwCtx>,
    sg: bindings::scatterlist,
    lender: *const Lender,
    lent: usize,
}

// The area follows the command, whose size is a multiple of the cache line it is aligned to.
const _: () = assert!(core::mem::align_of::<CmdPriv>() <= bindings::L1_CACHE_BYTES as usize);

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
    pub(super) fn into_errno(self) -> c_int {
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
    pub(super) fn from_raw(s: c_int) -> Self {
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
    pub(super) fn into_target(self) -> *mut bindings::iscsit_cmd {
        let mut this = ManuallyDrop::new(self);
        this.drop_rw();
        this.raw()
    }

    /// Takes a command from the target.
    ///
    /// # Safety
    ///
    /// `cmd` is a valid command that the target hands to the transport, and does not free
    /// before [`Cmd::release`] (or the connection's teardown, which waits for the transport).
    pub(super) unsafe fn from_target(cmd: NonNull<bindings::iscsit_cmd>) -> Self {
        // INVARIANT: By the safety requirements; the zeroed area has no RDMA context.
        Self { cmd }
    }

    /// The transport area.
    fn priv_ptr(&self) -> *mut CmdPriv {
        // SAFETY: The transport area follows the command (`iscsit_priv_cmd()`); the command is
        // cache-line aligned and sized, so the area is aligned for `CmdPriv`, and
        // `Registration` sizes it for one.
        unsafe { self.raw().add(1).cast::<CmdPriv>() }
    }

    pub(super) fn remote_ptr(&self) -> *mut Remote {
        // SAFETY: The area is valid (`priv_ptr`).
        unsafe { &raw mut (*self.priv_ptr()).remote }
    }

    /// Drops the RDMA context in place, if there is one.
    fn drop_rw(&mut self) {
        let p = self.priv_ptr();
        // SAFETY: The area is valid and ours (type invariant); by its invariant `rw` is
        // initialized while `rw_live` is true; it is not posted any more (a posted context is
        // held, with its command, by the queue pair until it completes).
        unsafe {
            if (*p).rw_live {
                // INVARIANT: Dropped just below.
                (*p).rw_live = false;
                (*p).rw.assume_init_drop();
            }
        }
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
        if self.rw().is_some() {
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
        let init = unsafe { RwCtx::init(qp, sg, nents, offset, addr, rkey, dir) };
        let p = self.priv_ptr();
        // SAFETY: The area is valid and ours; `rw` is not initialized (checked above), and the
        // area does not move while the command exists, so the context is pinned there.
        unsafe { pin_init::raw_try_init((*p).rw.as_mut_ptr(), init) }?;
        // INVARIANT: Initialized just above.
        // SAFETY: As above.
        unsafe { (*p).rw_live = true };
        Ok(())
    }

    /// The RDMA context built by [`Cmd::rdma_setup`].
    pub fn rw(&self) -> Option<&RwCtx> {
        let p = self.priv_ptr();
        // SAFETY: The area is valid and ours; `rw` is initialized while `rw_live` is (type
        // invariant of `CmdPriv`).
        unsafe { (*p).rw_live.then(|| (*p).rw.assume_init_ref()) }
    }

    /// The RDMA context built by [`Cmd::rdma_setup`], for posting it.
    pub fn rw_mut(&mut self) -> Option<Pin<&mut RwCtx>> {
        let p = self.priv_ptr();
        // SAFETY: As in `rw`, and the handle is held exclusively; the context never moves out
        // of the area (it is dropped in place), so it may be pinned.
        unsafe {
            (*p).rw_live
                .then(|| Pin::new_unchecked((*p).rw.assume_init_mut()))
        }
    }

    /// The RDMA READ of a WRITE's data completed: the target executes the command
    /// (`target_execute_cmd()`), and later queues its status.
    pub fn rdma_read_done(self) {
        let c = self.into_target();
        // SAFETY: By the type invariant the command is valid.
        unsafe { bindings::iscsit_stop_dataout_timer(c) };
        // SAFETY: As above; the command is ours until it goes back below.
        unsafe { (*c).write_data_done = 0 };
        // SAFETY: As above; its data is complete.
        unsafe { got_last_dataout(c) };
        // SAFETY: As above; the target takes the command back.
        unsafe { bindings::target_execute_cmd(&raw mut (*c).se_cmd) };
    }

    /// Builds the SCSI response header into `hdr` (`iscsit_build_rsp_pdu()`) and returns its
    /// data segment: the sense data, with its length in front, padded to 4 bytes.
    pub fn build_rsp(&mut self, conn: &Conn, hdr: &mut Bhs) -> &[u8] {
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
            hdr.set_dlength(len);
            let padded = (len + 3) & !3;
            &sense[..padded.min(sense.len())]
        }
    }

    /// Builds the task management response header (`iscsit_build_task_mgt_rsp()`).
    pub fn build_tm_rsp(&self, conn: &Conn, hdr: &mut Bhs) {
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
    pub fn build_text_rsp(&self, conn: &Conn, hdr: &mut Bhs) -> Result<&[u8]> {
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
    pub fn build_logout_rsp(&self, conn: &Conn, hdr: &mut Bhs) -> Result {
        // SAFETY: As in `build_text_rsp`.
        to_result(unsafe {
            bindings::iscsit_build_logout_rsp(self.raw(), conn.as_ptr(), hdr.as_mut_ptr().cast())
        })
    }

    /// Builds a NOP-In header (`iscsit_build_nopin_rsp()`); `response` when it answers a ping.
    /// Returns the data segment: the ping data echoed back.
    pub fn build_nopin(&self, conn: &Conn, hdr: &mut Bhs, response: bool) -> &[u8] {
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
    pub fn build_reject(&self, conn: &Conn, hdr: &mut Bhs) -> &[u8] {
        // SAFETY: As in `build_text_rsp`.
        unsafe {
            bindings::iscsit_build_reject(self.raw(), conn.as_ptr(), hdr.as_mut_ptr().cast())
        };
        // The data segment length is the rejected header.
        hdr.set_dlength(HDR_LEN);
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
    pub fn text_continues(hdr: &Bhs) -> bool {
        hdr.flags() & bindings::ISCSI_FLAG_TEXT_CONTINUE as u8 != 0
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
    ///
    /// Returns the receive buffer lent to the command ([`Conn::handle_scsi_cmd_in_place`]),
    /// for posting again. A command dropped without `release` leaves its buffer with the
    /// [`Lender`] until the connection is freed. May sleep (the lender's lock is a mutex).
    #[must_use = "a lent receive buffer is to be posted again"]
    pub fn release(self, failed: bool) -> Option<RxBuf> {
        let mut this = ManuallyDrop::new(self);
        // Taken back before the command is freed: once it is, the connection, and its lender,
        // may go. The target no longer reads the data: it hands a command back to the
        // transport only after executing it (or failing it unexecuted).
        let buf = this.take_lent();
        this.release_now(failed);
        buf
    }

    /// Takes back the receive buffer lent to the command, if there is one.
    fn take_lent(&mut self) -> Option<RxBuf> {
        let p = self.priv_ptr();
        // SAFETY: The area is valid and ours (type invariant); all-zero (a null lender) is a
        // valid value of both fields.
        let (lender, idx) = unsafe { ((*p).lender, (*p).lent) };
        // SAFETY: By the invariant of `CmdPriv` a non-null `lender` lives until the command is
        // freed, and this handle keeps it from being freed.
        let lender = unsafe { lender.as_ref() }?;
        // INVARIANT: The command no longer holds a buffer; its scatter list is not read again.
        // SAFETY: As above.
        unsafe { (*p).lender = core::ptr::null() };
        lender.take(idx)
    }

    /// Points the command's data at `len` bytes at `data`, the contents of the receive buffer
    /// lent to `lender` at `idx`: the target reads the data there instead of allocating a
    /// buffer for it.
    ///
    /// # Safety
    ///
    /// The command has no data buffer of its own (`SCF_PASSTHROUGH_SG_TO_MEM_NOALLOC`); `data`
    /// is kmalloc'ed memory of `len` bytes held by `lender` at `idx`, which lives until the
    /// command is freed; the command is not yet executed nor handed to another context.
    pub(super) unsafe fn set_lent_data(
        c: *mut bindings::iscsit_cmd,
        lender: &Lender,
        idx: usize,
        data: *const u8,
        len: u32,
    ) {
        // SAFETY: The transport area follows the command (see `priv_ptr`).
        let p = unsafe { c.add(1).cast::<CmdPriv>() };
        // SAFETY: The area is valid; nothing else uses it now (safety requirements). The entry
        // describes memory that stays valid while the command exists.
        unsafe { bindings::sg_init_one(&raw mut (*p).sg, data.cast(), len) };
        // SAFETY: As above.
        unsafe {
            // INVARIANT: `lender` holds the buffer at `idx` and lives until the command is
            // freed (safety requirements).
            (*p).lender = lender;
            (*p).lent = idx;
            (*c).se_cmd.t_data_sg = &raw mut (*p).sg;
            (*c).se_cmd.t_data_nents = 1;
        }
    }

    /// [`Cmd::release`], for `release` and `drop`: the command is not used afterwards.
    fn release_now(&mut self, failed: bool) {
        self.drop_rw();
        let c = self.raw();
        // SAFETY: By the type invariant the command and its connection are valid and the
        // command is ours; both callers make sure it is not used again.
        unsafe { unlink((*c).conn, c) };
        // SAFETY: As above.
        let (opcode, t_state, core_cmd) = unsafe {
            (
                u32::from((*c).iscsi_opcode),
                (*c).se_cmd.t_state,
                !(*c).se_cmd.se_tfo.is_null(),
            )
        };
        if opcode == bindings::ISCSI_OP_SCSI_CMD && self.is_write() {
            // SAFETY: As above.
            unsafe { bindings::iscsit_stop_dataout_timer(c) };
            if failed && t_state == bindings::transport_state_table_TRANSPORT_WRITE_PENDING {
                // SAFETY: As above; a WRITE that waits for its data holds a reference that its
                // data would have dropped.
                unsafe { bindings::target_put_sess_cmd(&raw mut (*c).se_cmd) };
            }
        }
        if core_cmd {
            // SAFETY: As above; the target core knows the command and frees it.
            unsafe { bindings::transport_generic_free_cmd(&raw mut (*c).se_cmd, 0) };
        } else {
            // SAFETY: As above; the command never reached the target core.
            unsafe { bindings::iscsit_release_cmd(c) };
        }
    }
}

/// Marks `c`'s data-out as complete, under its state lock (as `ib_isert` does).
///
/// # Safety
///
/// `c` is a valid command.
pub(super) unsafe fn got_last_dataout(c: *mut bindings::iscsit_cmd) {
    // SAFETY: By the safety requirements the command, and its lock, are valid.
    let _guard = unsafe { BhGuard::lock(&raw mut (*c).istate_lock) };
    // SAFETY: As above; the state is written under its lock.
    unsafe {
        (*c).cmd_flags |= bindings::cmd_flags_table_ICF_GOT_LAST_DATAOUT;
        (*c).i_state = bindings::cmd_i_state_table_ISTATE_RECEIVED_LAST_DATAOUT;
    }
}

/// Takes `c` off its connection's command list, if it is on it, under the list's lock (as the
/// C transports do).
///
/// # Safety
///
/// `conn` is a valid connection and `c` a valid command of it.
pub(super) unsafe fn unlink(conn: *mut bindings::iscsit_conn, c: *mut bindings::iscsit_cmd) {
    // SAFETY: By the safety requirements the connection, and its lock, are valid.
    let _guard = unsafe { BhGuard::lock(&raw mut (*conn).cmd_lock) };
    // SAFETY: As above, for the command; its list node is only changed under this lock.
    let node = unsafe { &raw mut (*c).i_conn_node };
    // SAFETY: `node` is a valid, initialized list node, read under its list's lock.
    if unsafe { bindings::list_empty(node) } == 0 {
        // SAFETY: As above; it is on the list, which is changed under its lock.
        unsafe { bindings::list_del_init(node) };
    }
}
