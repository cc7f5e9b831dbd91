// SPDX-License-Identifier: GPL-2.0

//! Receive buffers lent to the commands whose immediate data they hold.

use crate::{
    bindings,
    new_mutex,
    prelude::*,
    rdma::verbs::{
        DmaBuf,
        FromDevice, //
    },
    sync::Mutex, //
};
use core::sync::atomic::{
    AtomicPtr,
    Ordering::Relaxed, //
};

/// A receive buffer of an RDMA transport, as its queue pair gives it back.
pub type RxBuf = KBox<DmaBuf<FromDevice>>;

/// The receive buffers a connection lent to its SCSI commands (see
/// [`Conn::handle_scsi_cmd_in_place`](super::Conn::handle_scsi_cmd_in_place)).
///
/// A WRITE whose data all came as immediate data is executed on the receive buffer itself, as
/// `ib_isert` does: the command's data scatter list points into the buffer, and the buffer is
/// not posted again until the command is released ([`Cmd::release`](super::Cmd::release)
/// gives it back).
///
/// The buffers are kept here, not in the command, because the target may free a command
/// without the transport (at a connection's teardown, or after an abort) while its backend
/// still reads the data: a buffer in a command's area would then be freed, or forgotten,
/// under the backend. Kept here, a buffer lives until the command gives it back or until the
/// lender is dropped. The lender lives in the connection's [`ConnSlot`], whose owner the
/// target keeps (`iscsit_conn.context`) until it frees the connection, after every command of
/// the connection was freed ([`Transport::wait_conn`] waits for them). A buffer whose command
/// the target freed itself stays here until then: the initiator has one receive buffer less
/// for the rest of the connection, as with `ib_isert`, whose aborted commands do not post
/// their receive descriptors again either.
///
/// A lender lends only to commands of the connection it is bound to (the first one its slot
/// was set to): another connection's commands copy their immediate data.
///
/// # Examples
///
/// A transport hands a received SCSI command to the target with its receive buffer, which the
/// target may keep, lent, until the command is released:
///
/// ```
/// use core::ops::Range;
/// use kernel::target::iscsit::{Bhs, ConnSlot, Remote, RxBuf};
///
/// /// Hands the SCSI command PDU `hdr`, received in `rx` with its immediate data at `imm`,
/// /// to the target. Returns the buffer to post again unless it was lent, or gives it back
/// /// (`Err`) to wait for a free command tag.
/// fn scsi_cmd(
///     slot: &ConnSlot,
///     hdr: &Bhs,
///     rx: RxBuf,
///     imm: Range<usize>,
///     remote: Remote,
/// ) -> Result<Option<RxBuf>, RxBuf> {
///     // The buffer of a connection that is gone is dropped.
///     slot.with_lender(|conn, lender| {
///         let Some(cmd) = conn.alloc_cmd() else {
///             return Err(rx);
///         };
///         let (res, back) = conn.handle_scsi_cmd_in_place(lender, cmd, hdr, rx, imm, remote);
///         if let Err(e) = res {
///             pr_warn!("SCSI command refused: {:?}\n", e);
///         }
///         Ok(back)
///     })
///     .unwrap_or(Ok(None))
/// }
///
/// // A connection not yet accepted has lent nothing, and its lender is not handed out.
/// let slot = KBox::pin_init(ConnSlot::new(), GFP_KERNEL)?;
/// assert_eq!(slot.lent(), 0);
/// assert!(slot.with_lender(|_, lender| lender.outstanding()).is_none());
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// A buffer in `slots` is neither dropped, moved out, nor written before it is taken back by
/// the [`Cmd`] it was lent to, or the lender is dropped. `conn` is null or the connection
/// whose context owns the lender (see [`ConnSlot`]); once set it does not change.
///
/// [`ConnSlot`]: super::ConnSlot
/// [`Transport::wait_conn`]: super::Transport::wait_conn
/// [`Cmd`]: super::Cmd
#[pin_data]
pub struct Lender {
    #[pin]
    slots: Mutex<Slots>,
    conn: AtomicPtr<bindings::iscsit_conn>,
}

/// The places of a [`Lender`]'s buffers.
///
/// # Invariants
///
/// `free` holds, once each, the indices of the empty places of `bufs`, and its capacity is at
/// least `bufs.len()`, so that a place given back always fits in it. So the full places are
/// `bufs.len() - free.len()`.
struct Slots {
    bufs: KVec<Option<RxBuf>>,
    free: KVec<usize>,
}

impl Lender {
    // The lock is made outside `pin_init!`'s closure and this function is not inlined elsewhere,
    // so that the lock name is this crate's one copy (see `ConnSlot::new`).
    #[inline(never)]
    pub(super) fn new() -> impl PinInit<Self> {
        let slots = new_mutex!(
            Slots {
                bufs: KVec::new(),
                free: KVec::new(),
            },
            "iscsit_lender"
        );
        pin_init!(Self {
            // INVARIANT: No places, none free.
            slots <- slots,
            conn: AtomicPtr::new(core::ptr::null_mut()),
        })
    }

    /// Binds the lender to `conn`, if it is not bound yet.
    pub(super) fn bind(&self, conn: *mut bindings::iscsit_conn) {
        // INVARIANT: Only the first binding holds (see `ConnSlot`).
        let _ = self
            .conn
            .compare_exchange(core::ptr::null_mut(), conn, Relaxed, Relaxed);
    }

    /// Whether the lender may lend to commands of `conn`.
    pub(super) fn serves(&self, conn: *mut bindings::iscsit_conn) -> bool {
        !conn.is_null() && self.conn.load(Relaxed) == conn
    }

    /// Keeps `buf` and returns its place and the address of its contents, which stay valid and
    /// unwritten until [`Lender::take`] gives the buffer back (or the lender is dropped). Gives
    /// `buf` back when there is no memory to keep it.
    pub(super) fn lend(&self, buf: RxBuf) -> Result<(usize, *const u8), RxBuf> {
        let mut guard = self.slots.lock();
        let s = &mut *guard;
        let idx = match s.free.pop() {
            Some(i) => i,
            None => {
                // A new place, and room in `free` for it to come back to.
                if s.bufs.push(None, GFP_KERNEL).is_err() {
                    return Err(buf);
                }
                if s.free
                    .reserve(s.bufs.len() - s.free.len(), GFP_KERNEL)
                    .is_err()
                {
                    s.bufs.pop();
                    return Err(buf);
                }
                s.bufs.len() - 1
            }
        };
        let data = buf.as_slice().as_ptr();
        // INVARIANT: The buffer is kept in the heap memory of its box, which does not move
        // when `bufs` grows; only `take` gives it back. Its place left `free` above.
        s.bufs[idx] = Some(buf);
        Ok((idx, data))
    }

    /// Gives back the buffer lent at `idx`.
    pub(super) fn take(&self, idx: usize) -> Option<RxBuf> {
        let mut guard = self.slots.lock();
        let s = &mut *guard;
        let buf = s.bufs.get_mut(idx).and_then(Option::take)?;
        // INVARIANT: The place was full, so it is not in `free`, which has room for it (its
        // capacity is at least `bufs.len()`, and it holds fewer indices than that).
        let _ = s.free.push_within_capacity(idx);
        Some(buf)
    }

    /// How many buffers are lent now.
    pub fn outstanding(&self) -> usize {
        let s = self.slots.lock();
        s.bufs.len() - s.free.len()
    }
}
