// SPDX-License-Identifier: GPL-2.0

//! Socket addresses (`struct sockaddr_storage`).
//!
//! C header: [`include/linux/socket.h`](srctree/include/linux/socket.h)

use crate::{bindings, fmt};

/// An IPv4 or IPv6 socket address, or an address of another family that is only carried along.
///
/// A copy of a C `struct sockaddr_storage`, which is large enough for any family.
///
/// # Examples
///
/// ```
/// use kernel::{
///     bindings,
///     net::sockaddr::SockAddr,
///     str::CString, //
/// };
///
/// let addr = SockAddr::new_ipv4([192, 0, 2, 1], 3260);
/// assert_eq!(u32::from(addr.family()), bindings::AF_INET);
/// assert_eq!(addr.ipv4(), Some(([192, 0, 2, 1], 3260)));
/// assert_eq!(addr.ipv6(), None);
/// let text = CString::try_from_fmt(fmt!("{addr}"))?;
/// assert_eq!(text.to_bytes(), b"192.0.2.1:3260");
///
/// // The C layout: `struct sockaddr_in` (family, port in network order, address).
/// let copy = SockAddr::from_raw(addr.as_raw());
/// assert_eq!(copy.ipv4(), Some(([192, 0, 2, 1], 3260)));
///
/// let mut a6 = [0u8; 16];
/// a6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
/// a6[15] = 1;
/// let addr = SockAddr::new_ipv6(a6, 4420);
/// assert_eq!(addr.ipv4(), None);
/// let text = CString::try_from_fmt(fmt!("{addr}"))?;
/// assert_eq!(text.to_bytes(), b"[2001:db8:0:0:0:0:0:1]:4420");
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct SockAddr(bindings::__kernel_sockaddr_storage);

// SAFETY: A socket address is plain data; the pointer in its C union only sets the alignment
// and is never dereferenced.
unsafe impl Send for SockAddr {}

// SAFETY: As for `Send`; `&SockAddr` only reads the data.
unsafe impl Sync for SockAddr {}

impl SockAddr {
    /// Copies an address the C side handed over.
    pub fn from_raw(addr: &bindings::__kernel_sockaddr_storage) -> Self {
        Self(*addr)
    }

    /// An IPv4 address and port (`struct sockaddr_in`: family, port, address).
    pub fn new_ipv4(addr: [u8; 4], port: u16) -> Self {
        Self::inet(bindings::AF_INET, port, 4, &addr)
    }

    /// An IPv6 address and port, with no flow information or scope (`struct sockaddr_in6`:
    /// family, port, flow information in 4 bytes, address, scope id).
    pub fn new_ipv6(addr: [u8; 16], port: u16) -> Self {
        Self::inet(bindings::AF_INET6, port, 8, &addr)
    }

    /// An internet address: `family`, `port` in network order, `addr` at byte `at`, the rest
    /// zero.
    fn inet(family: u32, port: u16, at: usize, addr: &[u8]) -> Self {
        let mut raw = [0u8; SIZE];
        raw[..2].copy_from_slice(&(family as u16).to_ne_bytes());
        raw[2..4].copy_from_slice(&port.to_be_bytes());
        raw[at..at + addr.len()].copy_from_slice(addr);
        Self::from_bytes(raw)
    }

    /// The C representation, for the abstractions that pass it on.
    pub fn as_raw(&self) -> &bindings::__kernel_sockaddr_storage {
        &self.0
    }

    /// The address family (`AF_INET`, `AF_INET6`, ...).
    pub fn family(&self) -> u16 {
        let raw = self.bytes();
        u16::from_ne_bytes([raw[0], raw[1]])
    }

    /// The IPv4 address and port, if this is an `AF_INET` address.
    pub fn ipv4(&self) -> Option<([u8; 4], u16)> {
        if u32::from(self.family()) != bindings::AF_INET {
            return None;
        }
        let raw = self.bytes();
        // `struct sockaddr_in`: family (2 bytes), port (big endian), address (network order).
        Some((
            [raw[4], raw[5], raw[6], raw[7]],
            u16::from_be_bytes([raw[2], raw[3]]),
        ))
    }

    /// The IPv6 address and port, if this is an `AF_INET6` address.
    pub fn ipv6(&self) -> Option<([u8; 16], u16)> {
        if u32::from(self.family()) != bindings::AF_INET6 {
            return None;
        }
        let raw = self.bytes();
        let mut addr = [0u8; 16];
        // `struct sockaddr_in6`: family, port, flow info (4 bytes), address.
        addr.copy_from_slice(&raw[8..24]);
        Some((addr, u16::from_be_bytes([raw[2], raw[3]])))
    }

    fn from_bytes(raw: [u8; SIZE]) -> Self {
        // SAFETY: `raw` has the size of `sockaddr_storage`, which is plain data: every bit pattern
        // is valid for its family field, its byte array and the pointer of its union, which is
        // never dereferenced. The read is unaligned because `raw` is only aligned for bytes.
        Self(unsafe { core::ptr::read_unaligned(raw.as_ptr().cast()) })
    }

    fn bytes(&self) -> [u8; SIZE] {
        // SAFETY: `sockaddr_storage` is 128 bytes of plain data without padding (a family
        // field and a byte array, in a union with a pointer), fully initialized because it is
        // a copy of C memory; every bit pattern is a valid `u8`.
        unsafe { core::ptr::from_ref(&self.0).cast::<[u8; SIZE]>().read() }
    }
}

const SIZE: usize = core::mem::size_of::<bindings::__kernel_sockaddr_storage>();

impl fmt::Display for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((a, port)) = self.ipv4() {
            return write!(f, "{}.{}.{}.{}:{}", a[0], a[1], a[2], a[3], port);
        }
        if let Some((a, port)) = self.ipv6() {
            f.write_str("[")?;
            for (i, pair) in a.chunks(2).enumerate() {
                if i > 0 {
                    f.write_str(":")?;
                }
                write!(f, "{:x}", u16::from_be_bytes([pair[0], pair[1]]))?;
            }
            return write!(f, "]:{}", port);
        }
        write!(f, "(family {})", self.family())
    }
}
