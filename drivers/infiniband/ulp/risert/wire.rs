// SPDX-License-Identifier: GPL-2.0

//! The iSER wire format (RFC 7145): the iSER header in front of each iSCSI PDU, decoded from
//! the kernel crate's typed view ([`IserCtrl`]), and the CM private data.

use kernel::{
    prelude::*,
    target::iscsit::{
        IserCtrl,
        Remote, //
    },
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

/// An iSER header (`struct iser_ctrl`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IserHdr {
    pub(crate) flags: u8,
    pub(crate) write_stag: u32,
    pub(crate) write_va: u64,
    pub(crate) read_stag: u32,
    pub(crate) read_va: u64,
}

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

impl IserHdr {
    /// The header of a PDU the target sends: iSCSI control, no STags.
    pub(crate) fn control() -> Self {
        Self {
            flags: ISCSI_CTRL,
            ..Self::default()
        }
    }

    /// The initiator's buffers it names, for the command.
    pub(crate) fn remote(&self) -> Remote {
        Remote {
            read_stag: self.read_stag,
            read_va: self.read_va,
            write_stag: self.write_stag,
            write_va: self.write_va,
        }
    }

    /// Parses the header at the start of `b` (at least [`ISER_HDR_LEN`] bytes).
    pub(crate) fn parse(b: &[u8]) -> Option<Self> {
        let (c, _) = IserCtrl::from_bytes_copy_prefix(b)?;
        let (write_stag, write_va) = c.write().unwrap_or_default();
        let (read_stag, read_va) = c.read().unwrap_or_default();
        Some(Self {
            flags: c.flags(),
            write_stag,
            write_va,
            read_stag,
            read_va,
        })
    }

    /// The kind of message.
    pub(crate) fn kind(&self) -> Kind {
        match self.flags & 0xf0 {
            ISCSI_CTRL => Kind::Control,
            ISER_HELLO => Kind::Hello,
            f => Kind::Unknown(f),
        }
    }

    /// Writes the header into `b` ([`ISER_HDR_LEN`] bytes).
    pub(crate) fn write(&self, b: &mut [u8]) {
        let mut c = IserCtrl::with_flags(self.flags);
        c.set_write(self.write_stag, self.write_va);
        c.set_read(self.read_stag, self.read_va);
        b[..ISER_HDR_LEN].copy_from_slice(c.as_bytes());
    }
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

    #[test]
    fn header_round_trip() {
        let h = IserHdr {
            flags: ISCSI_CTRL | IserCtrl::WSV | IserCtrl::RSV,
            write_stag: 0x1234_5678,
            write_va: 0x0102_0304_0506_0708,
            read_stag: 0x9abc_def0,
            read_va: 0x1112_1314_1516_1718,
        };
        let mut b = [0u8; ISER_HDR_LEN];
        h.write(&mut b);
        assert_eq!(b[4..8], [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(IserHdr::parse(&b), Some(h));
        assert_eq!(h.kind(), Kind::Control);
    }

    #[test]
    fn stags_only_when_valid() {
        let mut b = [0xffu8; ISER_HDR_LEN];
        b[0] = ISCSI_CTRL;
        let h = IserHdr::parse(&b).unwrap();
        assert_eq!((h.write_stag, h.read_stag), (0, 0));
        assert_eq!(IserHdr::parse(&b[..ISER_HDR_LEN - 1]), None);
        b[0] = ISER_HELLO;
        assert_eq!(IserHdr::parse(&b).unwrap().kind(), Kind::Hello);
        b[0] = 0x70;
        assert_eq!(IserHdr::parse(&b).unwrap().kind(), Kind::Unknown(0x70));
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
