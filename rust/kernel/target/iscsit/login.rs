// SPDX-License-Identifier: GPL-2.0

//! The login phase of a connection.

use crate::{
    bindings,
    prelude::*,
    types::Opaque, //
};

use super::*;

/// The login state of a connection (`struct iscsi_login`).
///
/// # Examples
///
/// The login callbacks of a transport ([`Transport::get_login_rx`],
/// [`Transport::put_login_tx`]) store the requests it received and send the responses:
///
/// ```
/// use kernel::{
///     target::iscsit::{Login, HDR_LEN},
///     transmute::AsBytes,
/// };
///
/// /// Stores the first login request `pdu` (header and data segment); the later ones are
/// /// delivered with `Conn::deliver_login_pdu` when they arrive.
/// fn get_login_rx(login: &Login, pdu: &[u8]) -> Result {
///     if !login.first_request() {
///         return Ok(());
///     }
///     login.fill_request(pdu)
/// }
///
/// /// Builds the login response to send: its header, then `len` bytes of data.
/// fn put_login_tx(login: &Login, len: u32) -> Result<KVec<u8>> {
///     let data = login.rsp_data(len as usize);
///     let mut pdu = KVec::with_capacity(HDR_LEN + data.len(), GFP_KERNEL)?;
///     pdu.extend_from_slice(login.rsp().as_bytes(), GFP_KERNEL)?;
///     pdu.extend_from_slice(data, GFP_KERNEL)?;
///     if login.complete() {
///         pr_info!("login complete: the full-feature phase starts\n");
///     }
///     Ok(pdu)
/// }
/// ```
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
    pub(super) unsafe fn from_raw<'a>(login: *mut bindings::iscsi_login) -> &'a Self {
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
    pub fn rsp(&self) -> Bhs {
        // SAFETY: As above.
        let rsp = unsafe { (*self.raw()).rsp };
        Bhs::from(rsp)
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
                (*l).leading_connection = u8::from(tsih == 0);
                (*l).current_stage =
                    (hdr[1] & bindings::ISCSI_FLAG_LOGIN_CURRENT_STAGE_MASK as u8) >> 2;
                (*l).version_max = hdr[2];
                (*l).version_min = hdr[3];
                for (d, s) in (*l).isid.iter_mut().zip(&hdr[8..14]) {
                    *d = *s;
                }
                (*l).tsih = tsih;
                (*l).init_task_tag = u32::from_ne_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
                (*l).cid = be16(20);
                (*l).cmd_sn = be32(24);
                (*l).initial_exp_statsn = be32(28);
            }
            for (d, s) in (*l).req.iter_mut().zip(hdr) {
                *d = *s;
            }
            let n = data.len().min(bindings::MAX_KEY_VALUE_PAIRS as usize);
            core::ptr::copy_nonoverlapping(data.as_ptr(), (*l).req_buf.cast::<u8>(), n);
        }
        Ok(())
    }
}
