// SPDX-License-Identifier: GPL-2.0

//! Socket buffers.
//!
//! Two types, one per direction:
//!
//! - An [`SkBuff`] is a frame the driver builds: allocated by it, its head private and written
//!   with [`SkBuff::put`], then optionally followed by pages lent under a
//!   [`PageLoan`] ([`SkBuff::add_lent_page`]), which it never
//!   writes. Transmitting it ([`crate::net::netdevice::NetDevice::queue_xmit`]) consumes it;
//!   dropping it frees it.
//! - An [`RxSkBuff`] is a frame a packet handler received (see
//!   [`crate::net::netdevice::PacketHandler`]). Its data may be shared with other receivers (a
//!   packet socket gets the same buffer) and may lie partly in page fragments, so it is read
//!   only, and never made linear: reads copy out of it, and only its linear part can be
//!   borrowed.
//!
//! C header: [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h)

use crate::{
    alloc::{
        AllocError,
        Flags, //
    },
    bindings,
    error::{
        code::{
            EINVAL,
            EMSGSIZE,
            EOPNOTSUPP, //
        },
        to_result,
        Result, //
    },
    net::zerocopy::{
        LoanReturn,
        PageLoan, //
    },
};
use core::ptr::NonNull;

/// A socket buffer the driver builds: owned, with a private head.
///
/// # Examples
///
/// ```
/// use kernel::net::skbuff::SkBuff;
///
/// const ETH_P_AOE: u16 = 0x88a2;
///
/// // Room for a 64-byte frame, behind 16 bytes of headroom.
/// let mut skb = SkBuff::alloc(16, 64, GFP_KERNEL)?;
/// assert!(skb.is_empty());
/// let eth = skb.put(14)?;
/// eth[..6].fill(0xff);
/// eth[12..].copy_from_slice(&ETH_P_AOE.to_be_bytes());
/// skb.set_protocol(ETH_P_AOE);
/// skb.put(50)?[0] = 0x10;
/// assert_eq!(skb.len(), 64);
/// assert_eq!(skb.data()[12..15], [0x88, 0xa2, 0x10]);
/// // More than the room left.
/// assert_eq!(skb.put(4096).err(), Some(EMSGSIZE));
/// assert_eq!(skb.len(), 64);
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// `self.0` points to a valid `struct sk_buff` that this object owns (nobody
/// else holds a reference to it, and its data is not shared with a clone).
/// Its page fragments, if any, were added by [`SkBuff::add_lent_page`]: they
/// are lent under one loan, hold their own page references, and this type
/// never writes them.
pub struct SkBuff(NonNull<bindings::sk_buff>);

// SAFETY: An owned `sk_buff` may be handed to and freed from any thread.
unsafe impl Send for SkBuff {}

// SAFETY: `&SkBuff` only allows reading the buffer.
unsafe impl Sync for SkBuff {}

impl SkBuff {
    /// Allocates a buffer for a frame of up to `len` bytes, with `headroom`
    /// bytes reserved in front for lower layers (`alloc_skb()`,
    /// `skb_reserve()`). The data starts empty; the MAC and network headers
    /// point at its start.
    pub fn alloc(headroom: usize, len: usize, flags: Flags) -> Result<Self, AllocError> {
        let size = u32::try_from(headroom + len).map_err(|_| AllocError)?;
        // SAFETY: `alloc_skb` has no preconditions.
        let skb = unsafe { bindings::alloc_skb(size, flags.as_raw()) };
        let skb = NonNull::new(skb).ok_or(AllocError)?;
        // SAFETY: `skb` is a new buffer with `headroom + len` bytes of room.
        unsafe {
            bindings::skb_reserve(skb.as_ptr(), headroom as i32);
            bindings::skb_reset_mac_header(skb.as_ptr());
            bindings::skb_reset_network_header(skb.as_ptr());
        }
        // INVARIANT: A freshly allocated buffer is owned and linear.
        Ok(Self(skb))
    }

    /// Gives up ownership of the buffer.
    pub(crate) fn into_raw(self) -> *mut bindings::sk_buff {
        let skb = self.0.as_ptr();
        core::mem::forget(self);
        skb
    }

    /// The length of the data.
    pub fn len(&self) -> usize {
        // SAFETY: By the type invariant `self.0` is valid and ours.
        unsafe { (*self.0.as_ptr()).len as usize }
    }

    /// Whether the buffer holds no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data in the head (without lent pages).
    pub fn data(&self) -> &[u8] {
        let skb = self.0.as_ptr();
        // SAFETY: By the type invariant the head is private, so `headlen`
        // bytes at `data` are initialized and owned by this buffer for as long
        // as `self` is borrowed.
        unsafe { core::slice::from_raw_parts((*skb).data, bindings::skb_headlen(skb) as usize) }
    }

    /// Appends `len` bytes to the head and returns them for filling
    /// (`skb_put()`). Fails with `EMSGSIZE` when the buffer has less room,
    /// and with `EINVAL` once page fragments follow the head.
    pub fn put(&mut self, len: usize) -> Result<&mut [u8]> {
        let skb = self.0.as_ptr();
        // SAFETY: `skb` is valid and ours.
        if unsafe { (*skb).data_len } != 0 {
            return Err(EINVAL);
        }
        // SAFETY: `skb` is valid and ours.
        let room = unsafe { bindings::skb_tailroom(skb) };
        if len > usize::try_from(room).unwrap_or(0) {
            return Err(EMSGSIZE);
        }
        // SAFETY: There are `len` bytes of tail room, so `skb_put` does not
        // fail; the bytes it returns belong to this buffer and nothing else
        // refers to them while `self` is borrowed mutably. Zero them first so
        // the slice is initialized.
        unsafe {
            let p = bindings::skb_put(skb, len as u32).cast::<u8>();
            core::ptr::write_bytes(p, 0, len);
            Ok(core::slice::from_raw_parts_mut(p, len))
        }
    }

    /// Appends `len` bytes at `offset` in `page` as a page fragment lent under `loan`
    /// (`skb_zcopy_set()`, `get_page()`, `skb_add_rx_frag()`).
    ///
    /// All of a buffer's fragments belong to one loan. Fails with `EINVAL` if the buffer
    /// already carries another loan or the piece is empty or does not lie in the page, with
    /// `EMSGSIZE` when the buffer has `MAX_SKB_FRAGS` fragments, and with `EOPNOTSUPP` for a
    /// page that may not be sent in place (`!sendpage_ok()`, a slab page for one). After a
    /// failure the buffer holds the fragments added before it.
    ///
    /// # Safety
    ///
    /// `page` must point to a valid `struct page` for the duration of the call.
    pub unsafe fn add_lent_page<T: LoanReturn>(
        &mut self,
        loan: &PageLoan<T>,
        page: *mut bindings::page,
        offset: u32,
        len: u32,
    ) -> Result {
        let skb = self.0.as_ptr();
        match offset.checked_add(len) {
            Some(end) if len > 0 && end as usize <= bindings::PAGE_SIZE => {}
            _ => return Err(EINVAL),
        }
        // SAFETY: `skb` is valid and ours (`SkBuff`'s invariant).
        let shinfo = unsafe { bindings::skb_shinfo(skb) };
        // SAFETY: `shinfo` is the buffer's own shared info; the data is not shared.
        let nr = unsafe { (*shinfo).nr_frags };
        if u32::from(nr) >= bindings::MAX_SKB_FRAGS {
            return Err(EMSGSIZE);
        }
        // SAFETY: `page` is valid (safety requirements).
        if !unsafe { bindings::sendpage_ok(page) } {
            return Err(EOPNOTSUPP);
        }
        // SAFETY: `skb` is valid and ours.
        let cur = unsafe { bindings::skb_zcopy(skb) };
        if cur.is_null() {
            // SAFETY: `skb` carries no loan; `skb_zcopy_set` takes a reference on the loan for
            // it, which the networking core drops when the buffer's data is freed or copied.
            unsafe { bindings::skb_zcopy_set(skb, loan.as_ubuf(), core::ptr::null_mut()) };
        } else if cur != loan.as_ubuf() {
            return Err(EINVAL);
        }
        // SAFETY: `page` is valid; the fragment keeps its own page reference.
        unsafe { bindings::get_page(page) };
        // SAFETY: Fragment `nr` is the next free one (`nr < MAX_SKB_FRAGS`); the piece lies in
        // `page`, on which the buffer now holds a reference, and the loan it is lent under.
        unsafe {
            bindings::skb_add_rx_frag(skb, i32::from(nr), page, offset as i32, len as i32, len)
        };
        Ok(())
    }

    /// Sets the link-layer protocol field (`skb->protocol`), in host order.
    pub fn set_protocol(&mut self, protocol: u16) {
        // SAFETY: `skb` is valid and ours; `protocol` lives in the `headers`
        // group of the buffer.
        unsafe {
            (*self.0.as_ptr())
                .__bindgen_anon_4
                .headers
                .as_mut()
                .protocol = protocol.to_be()
        };
    }
}

impl Drop for SkBuff {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we own the buffer.
        unsafe { bindings::kfree_skb(self.0.as_ptr()) };
    }
}

/// A received frame: read only, possibly shared and non-linear.
///
/// The frame starts at its link-layer (MAC) header, which the networking core
/// left in the buffer's head in front of the data, and ends with the data.
/// Offsets into the frame count from the MAC header.
///
/// # Examples
///
/// ```
/// use kernel::net::skbuff::RxSkBuff;
///
/// /// The EtherType of a received Ethernet frame, wherever its bytes lie.
/// fn ethertype(skb: &RxSkBuff) -> Result<u16> {
///     let mut t = [0u8; 2];
///     skb.read(12, &mut t)?;
///     Ok(u16::from_be_bytes(t))
/// }
///
/// /// The Ethernet header of a received frame, borrowed if it lies in the buffer's head.
/// fn eth_header(skb: &RxSkBuff) -> Option<&[u8]> {
///     skb.linear_frame()?.get(..14)
/// }
/// ```
///
/// # Invariants
///
/// `self.0` points to a valid `struct sk_buff` on which we own a reference.
/// Nobody writes its fields or the data in its head while we hold it: holders
/// of a shared buffer (`skb_shared()`) or of cloned data must copy before they
/// write (`skb_share_check()`, `skb_unclone()`), and this type never writes.
/// Page fragments are not covered: their pages may be the sender's, written
/// again once it takes the frame as done (`skb_has_shared_frag()`; a local
/// sender over veth may complete an I/O whose pages are still in a queued
/// clone), so this type only ever reads them by copying ([`RxSkBuff::read`]),
/// never through a reference, and a holder that keeps a frame for later copies
/// it first.
pub struct RxSkBuff(NonNull<bindings::sk_buff>);

// SAFETY: A buffer reference may be handed to and dropped from any thread.
unsafe impl Send for RxSkBuff {}

// SAFETY: `&RxSkBuff` only reads the buffer: its fields and head, which nobody
// writes (type invariant), and its fragments by copying.
unsafe impl Sync for RxSkBuff {}

impl RxSkBuff {
    /// Takes over a buffer reference a packet handler received.
    ///
    /// # Safety
    ///
    /// `skb` must be a valid `struct sk_buff` whose reference the caller owns
    /// and gives up.
    pub(crate) unsafe fn from_received(skb: NonNull<bindings::sk_buff>) -> Self {
        // INVARIANT: Guaranteed by the caller; the rule for writers is the
        // networking core's.
        Self(skb)
    }

    /// The length of the MAC header: the bytes in front of the data that
    /// belong to the frame (0 if none was recorded).
    fn mac_len(&self) -> usize {
        let skb = self.0.as_ptr();
        // SAFETY: `skb` is valid (type invariant).
        if !unsafe { bindings::skb_mac_header_was_set(skb) } {
            return 0;
        }
        // SAFETY: The MAC header lies in the head, at or in front of `data`.
        let n = unsafe { (*skb).data.offset_from(bindings::skb_mac_header(skb)) };
        usize::try_from(n).unwrap_or(0)
    }

    /// The length of the frame, MAC header included.
    pub fn len(&self) -> usize {
        // SAFETY: `self.0` is valid (type invariant).
        self.mac_len() + unsafe { (*self.0.as_ptr()).len } as usize
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame, borrowed, if it lies entirely in the buffer's head; `None`
    /// if part of it is in page fragments (then use [`RxSkBuff::read`]).
    pub fn linear_frame(&self) -> Option<&[u8]> {
        let skb = self.0.as_ptr();
        // SAFETY: `skb` is valid (type invariant).
        let (len, headlen) = unsafe { ((*skb).len, bindings::skb_headlen(skb)) };
        if len != headlen {
            return None;
        }
        let mac_len = self.mac_len();
        // SAFETY: The MAC header and the `headlen` bytes of data that follow it
        // are one initialized range of the head, not written while we hold
        // the buffer (type invariant).
        Some(unsafe {
            core::slice::from_raw_parts((*skb).data.sub(mac_len), mac_len + headlen as usize)
        })
    }

    /// Copies the frame's bytes from `offset` on into `buf`, wherever they lie
    /// (`skb_copy_bits()` for the data). Fails with `EINVAL` if the frame is
    /// shorter than `offset + buf.len()`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result {
        // SAFETY: `buf` is valid for its length of writes and, borrowed
        // mutably, does not overlap the buffer.
        unsafe { self.read_raw(offset, buf.as_mut_ptr(), buf.len()) }
    }

    /// As [`RxSkBuff::read`], into raw memory.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for `len` bytes of writes and not overlap the
    /// buffer.
    pub(crate) unsafe fn read_raw(&self, offset: usize, dst: *mut u8, len: usize) -> Result {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > self.len() {
            return Err(EINVAL);
        }
        let skb = self.0.as_ptr();
        let mac_len = self.mac_len();
        let mut done = 0;
        if offset < mac_len {
            done = (mac_len - offset).min(len);
            // SAFETY: `offset..offset + done` lies in the MAC header, in the
            // head (see `mac_len`); `dst` is valid for `len >= done` bytes.
            unsafe {
                let src = (*skb).data.sub(mac_len - offset);
                core::ptr::copy_nonoverlapping(src, dst, done);
            }
        }
        if done < len {
            // Both fit in `int`: the frame is shorter than `len` (checked above),
            // which is a `u32`.
            let from = (offset + done - mac_len) as i32;
            // SAFETY: `skb` is valid; `dst + done` is valid for the remaining
            // `len - done` bytes, which the data holds (checked above).
            let ret = unsafe {
                bindings::skb_copy_bits(skb, from, dst.add(done).cast(), (len - done) as i32)
            };
            to_result(ret)?;
        }
        Ok(())
    }
}

impl Drop for RxSkBuff {
    fn drop(&mut self) {
        // SAFETY: We own a reference to the buffer (type invariant).
        unsafe { bindings::kfree_skb(self.0.as_ptr()) };
    }
}
