// SPDX-License-Identifier: GPL-2.0

//! Typed views of the headers on the wire, shared by the abstraction and its transports: the
//! iSCSI basic header segment ([`Bhs`]) and the iSER header in front of it ([`IserCtrl`]).
//!
//! Both are plain bytes in network order: any bytes are a valid value ([`FromBytes`], so a
//! received header is read in place or copied out in one step), and a value is its bytes
//! ([`AsBytes`], so a header to send is written as one slice). Fields are read and written
//! through accessors that convert the byte order.

use super::{
    Remote,
    HDR_LEN, //
};
use crate::{
    bindings,
    transmute::{
        AsBytes,
        FromBytes, //
    },
};

/// An iSCSI basic header segment (`struct iscsi_hdr`, RFC 7143, 11.2.1).
///
/// # Examples
///
/// ```
/// use kernel::target::iscsit::Bhs;
/// use kernel::transmute::FromBytes;
///
/// // A text request (opcode 0x04, immediate) with 3 bytes of data, and its data.
/// let mut pdu = [0u8; 51];
/// pdu[0] = 0x44;
/// pdu[7] = 3;
/// let (bhs, data) = Bhs::from_bytes_copy_prefix(&pdu).unwrap();
/// assert_eq!(bhs.opcode(), 0x04);
/// assert!(bhs.immediate());
/// assert_eq!(bhs.dlength(), data.len());
/// assert!(Bhs::from_bytes_copy_prefix(&pdu[..47]).is_none());
/// ```
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Bhs([u8; HDR_LEN]);

// SAFETY: `Bhs` is a byte array: every bit pattern is a valid value.
unsafe impl FromBytes for Bhs {}

// SAFETY: `Bhs` is a byte array: no padding, every byte initialized.
unsafe impl AsBytes for Bhs {}

impl From<[u8; HDR_LEN]> for Bhs {
    fn from(bytes: [u8; HDR_LEN]) -> Self {
        Self(bytes)
    }
}

impl Default for Bhs {
    fn default() -> Self {
        Self([0; HDR_LEN])
    }
}

impl Bhs {
    /// The opcode (`hdr->opcode & ISCSI_OPCODE_MASK`).
    pub fn opcode(&self) -> u8 {
        self.0[0] & bindings::ISCSI_OPCODE_MASK as u8
    }

    /// Whether the immediate bit is set (`ISCSI_OP_IMMEDIATE`).
    pub fn immediate(&self) -> bool {
        self.0[0] & bindings::ISCSI_OP_IMMEDIATE as u8 != 0
    }

    /// The opcode-specific flags byte (byte 1).
    pub fn flags(&self) -> u8 {
        self.0[1]
    }

    /// The data segment length (`ntoh24(hdr->dlength)`).
    pub fn dlength(&self) -> usize {
        u32::from_be_bytes([0, self.0[5], self.0[6], self.0[7]]) as usize
    }

    /// Sets the data segment length (`hton24()`); lengths above 24 bits are cut.
    pub fn set_dlength(&mut self, len: usize) {
        self.0[5..8].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
    }

    /// The buffer offset of a Data-Out or Data-In PDU (bytes 40-43).
    pub fn buffer_offset(&self) -> u32 {
        u32::from_be_bytes([self.0[40], self.0[41], self.0[42], self.0[43]])
    }

    /// The command sequence number of a request (bytes 24-27).
    pub fn cmdsn(&self) -> u32 {
        u32::from_be_bytes([self.0[24], self.0[25], self.0[26], self.0[27]])
    }

    /// A pointer to the header for the target's functions, which take it as mutable (they
    /// write only headers they build).
    pub(super) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr()
    }
}

/// The iSER header in front of each iSCSI PDU (`struct iser_ctrl`, RFC 7145, 9.2): the
/// message's kind and the initiator's buffers for RDMA (the write and read STags with their
/// virtual addresses), each valid only when its flag is set.
///
/// # Examples
///
/// ```
/// use kernel::target::iscsit::IserCtrl;
/// use kernel::transmute::{AsBytes, FromBytes};
///
/// let mut h = IserCtrl::with_flags(IserCtrl::ISCSI_CTRL | IserCtrl::WSV);
/// h.set_write(0x1234_5678, 0x0102_0304_0506_0708);
/// let b = h.as_bytes();
/// assert_eq!(b.len(), 28);
/// assert_eq!(b[4..8], [0x12, 0x34, 0x56, 0x78]);
/// let (r, _) = IserCtrl::from_bytes_copy_prefix(b).unwrap();
/// assert_eq!(r.write(), Some((0x1234_5678, 0x0102_0304_0506_0708)));
/// assert_eq!(r.read(), None);
/// assert_eq!((r.remote().write_stag, r.remote().read_stag), (0x1234_5678, 0));
/// ```
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IserCtrl {
    flags: u8,
    rsvd: [u8; 3],
    write_stag: [u8; 4],
    write_va: [u8; 8],
    read_stag: [u8; 4],
    read_va: [u8; 8],
}

// SAFETY: `IserCtrl` is made of bytes and byte arrays (alignment 1, no padding): every bit
// pattern is a valid value.
unsafe impl FromBytes for IserCtrl {}

// SAFETY: As above: no padding, every byte initialized.
unsafe impl AsBytes for IserCtrl {}

impl IserCtrl {
    /// Length of the header on the wire.
    pub const LEN: usize = core::mem::size_of::<Self>();
    /// The message carries an iSCSI PDU (`ISCSI_CTRL`, in the high nibble).
    pub const ISCSI_CTRL: u8 = 0x10;
    /// The message is an iSER Hello (`ISER_HELLO`).
    pub const HELLO: u8 = 0x20;
    /// The write STag and VA are valid (`ISER_WSV`).
    pub const WSV: u8 = 0x08;
    /// The read STag and VA are valid (`ISER_RSV`).
    pub const RSV: u8 = 0x04;

    /// A header with `flags` and no buffers.
    pub fn with_flags(flags: u8) -> Self {
        Self {
            flags,
            ..Self::default()
        }
    }

    /// The flags byte: the kind in the high nibble, the valid bits in the low one.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The write STag and virtual address (the initiator's buffer a SCSI WRITE's data is read
    /// from), if valid.
    pub fn write(&self) -> Option<(u32, u64)> {
        (self.flags & Self::WSV != 0).then(|| {
            (
                u32::from_be_bytes(self.write_stag),
                u64::from_be_bytes(self.write_va),
            )
        })
    }

    /// The read STag and virtual address (the initiator's buffer a SCSI READ's data is
    /// written to), if valid.
    pub fn read(&self) -> Option<(u32, u64)> {
        (self.flags & Self::RSV != 0).then(|| {
            (
                u32::from_be_bytes(self.read_stag),
                u64::from_be_bytes(self.read_va),
            )
        })
    }

    /// The initiator's buffers the header names, for a command (a buffer whose flag is clear
    /// is named by zeroes).
    pub fn remote(&self) -> Remote {
        let (write_stag, write_va) = self.write().unwrap_or_default();
        let (read_stag, read_va) = self.read().unwrap_or_default();
        Remote {
            read_stag,
            read_va,
            write_stag,
            write_va,
        }
    }

    /// Sets the write STag and virtual address (the flag is the caller's).
    pub fn set_write(&mut self, stag: u32, va: u64) {
        self.write_stag = stag.to_be_bytes();
        self.write_va = va.to_be_bytes();
    }

    /// Sets the read STag and virtual address (the flag is the caller's).
    pub fn set_read(&mut self, stag: u32, va: u64) {
        self.read_stag = stag.to_be_bytes();
        self.read_va = va.to_be_bytes();
    }
}

const _: () = assert!(IserCtrl::LEN == 28);
