// SPDX-License-Identifier: GPL-2.0

//! The iSER wire format (RFC 7145): the iSER header in front of each iSCSI PDU, decoded from
//! the kernel crate's typed view ([`IserCtrl`]), and the CM private data.

use kernel::{
    prelude::*,
    target::iscsit::IserCtrl,
    transmute::{
        AsBytes,
        FromBytes, //
    },
};

/// Length of the iSER header (`struct iser_ctrl`).
pub(crate) const ISER_HDR_LEN: usize = IserCtrl::LEN;
/// Length of the iSER and iSCSI headers together (`ISER_HEADERS_LEN`).
pub(crate) const HEADERS_LEN: usize = ISER_HDR_LEN + 48;
/// Largest data segment received (`ISER_DEF_MAX_RECV_SEG_LEN`, 8 KiB).
pub(crate) const MAX_RECV_SEG: usize = 8192;
/// Size of a receive buffer (`ISER_RX_PAYLOAD_SIZE`).
pub(crate) const RX_SIZE: usize = HEADERS_LEN + MAX_RECV_SEG;

const ISCSI_CTRL: u8 = IserCtrl::ISCSI_CTRL;
const ISER_HELLO: u8 = IserCtrl::HELLO;

/// What an iSER header says a received message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An iSCSI PDU.
    Control,
    /// An iSER Hello (only sent by iWARP initiators that ask for it).
    Hello,
    /// Anything else.
    Unknown(u8),
}

impl Kind {
    /// What the header `h` says its message is.
    pub(crate) fn of(h: &IserCtrl) -> Self {
        match h.flags() & 0xf0 {
            ISCSI_CTRL => Kind::Control,
            ISER_HELLO => Kind::Hello,
            f => Kind::Unknown(f),
        }
    }
}

/// Parses the iSER header at the start of `b` (at least [`ISER_HDR_LEN`] bytes).
pub(crate) fn parse_iser(b: &[u8]) -> Option<IserCtrl> {
    IserCtrl::from_bytes_copy_prefix(b).map(|(h, _)| h)
}

/// Writes the header of a PDU the target sends (iSCSI control, no STags) into `b`
/// ([`ISER_HDR_LEN`] bytes).
pub(crate) fn write_control_hdr(b: &mut [u8]) {
    b[..ISER_HDR_LEN].copy_from_slice(IserCtrl::with_flags(ISCSI_CTRL).as_bytes());
}

/// iSER CM response flags (`struct iser_cm_hdr`): the target does not use zero-based virtual
/// addresses (`ISERT_ZBVA_NOT_USED`), or send with invalidate (`ISERT_SEND_W_INV_NOT_USED`).
pub(crate) const ZBVA_NOT_USED: u8 = 0x80;
pub(crate) const SEND_W_INV_NOT_USED: u8 = 0x40;
/// iSER CM request flag: the initiator cannot take send with invalidate
/// (`ISER_SEND_W_INV_NOT_SUP`).
const SEND_W_INV_NOT_SUP: u8 = 0x40;

/// Whether the initiator's CM request header (`private`, the request's private data) lets the
/// target send with invalidate. A request without one does not.
pub(crate) fn peer_takes_send_w_inv(private: &[u8]) -> bool {
    private.first().is_some_and(|f| f & SEND_W_INV_NOT_SUP == 0)
}

/// iSCSI opcodes the transport handles (RFC 7143, 11.1.1).
pub(crate) const OP_NOOP_OUT: u8 = 0x00;
pub(crate) const OP_SCSI_CMD: u8 = 0x01;
pub(crate) const OP_SCSI_TMFUNC: u8 = 0x02;
pub(crate) const OP_SCSI_DATA_OUT: u8 = 0x05;
pub(crate) const OP_TEXT: u8 = 0x04;
pub(crate) const OP_LOGOUT: u8 = 0x06;

#[kunit_tests(risert_wire)]
mod tests {
    use super::*;
    use kernel::target::iscsit::Remote;

    #[test]
    fn header_kinds() {
        let mut b = [0xffu8; ISER_HDR_LEN];
        write_control_hdr(&mut b);
        let h = parse_iser(&b).unwrap();
        assert_eq!(Kind::of(&h), Kind::Control);
        assert_eq!(h.remote(), Remote::default());
        assert!(parse_iser(&b[..ISER_HDR_LEN - 1]).is_none());
        b[0] = ISER_HELLO;
        assert_eq!(Kind::of(&parse_iser(&b).unwrap()), Kind::Hello);
        b[0] = 0x70;
        assert_eq!(Kind::of(&parse_iser(&b).unwrap()), Kind::Unknown(0x70));
    }

    #[test]
    fn stags_only_when_valid() {
        let mut b = [0xffu8; ISER_HDR_LEN];
        b[0] = ISCSI_CTRL | IserCtrl::RSV;
        let r = parse_iser(&b).unwrap().remote();
        assert_eq!((r.write_stag, r.write_va), (0, 0));
        assert_eq!(r.read_stag, 0xffff_ffff);
    }

    #[test]
    fn send_w_inv_negotiation() {
        // The kernel initiator with `always_register` (its default): ZBVA not supported only.
        assert!(peer_takes_send_w_inv(&[0x80, 0, 0, 0]));
        assert!(!peer_takes_send_w_inv(&[0xc0, 0, 0, 0]));
        assert!(!peer_takes_send_w_inv(&[]));
    }

    #[test]
    fn bhs_fields() {
        use kernel::target::iscsit::Bhs;
        let mut b = [0u8; 48];
        b[0] = 0x40 | OP_TEXT;
        b[5..8].copy_from_slice(&[0x01, 0x02, 0x03]);
        let bhs = Bhs::from_bytes_copy(&b).unwrap();
        assert_eq!(bhs.opcode(), OP_TEXT);
        assert!(bhs.immediate());
        assert_eq!(bhs.dlength(), 0x010203);
        let mut out = Bhs::default();
        out.set_dlength(0x010203);
        assert_eq!(out.as_bytes()[5..8], [0x01, 0x02, 0x03]);
    }
}
