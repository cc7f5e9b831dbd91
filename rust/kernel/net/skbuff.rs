// SPDX-License-Identifier: GPL-2.0

//! Socket buffers.
//!
//! An [`SkBuff`] owns one `struct sk_buff` with linear data: it is allocated
//! for a frame the driver builds, or handed over by a packet handler (see
//! [`crate::net::netdevice::PacketHandler`]) after it was made private and
//! linear. Dropping it frees the buffer; transmitting it
//! ([`crate::net::netdevice::NetDevice::queue_xmit`]) consumes it.
//!
//! C header: [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h)

use crate::{
    alloc::{AllocError, Flags},
    bindings,
    error::{code::EMSGSIZE, Result},
};
use core::ptr::NonNull;

/// An owned socket buffer with linear data.
///
/// # Invariants
///
/// `self.0` points to a valid `struct sk_buff` that this object owns (nobody
/// else holds a reference to it) and whose data is linear.
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

    /// Takes ownership of a buffer a packet handler received: unshares it
    /// (`skb_share_check()`) and makes its data linear (`skb_linearize()`).
    /// Returns `None`, having freed the buffer, when either step fails.
    ///
    /// # Safety
    ///
    /// `skb` must be a valid `struct sk_buff` whose reference the caller owns
    /// and gives up.
    pub(crate) unsafe fn from_received(skb: *mut bindings::sk_buff) -> Option<Self> {
        // SAFETY: The caller owns a reference to `skb`; on failure the function
        // drops it.
        let skb = NonNull::new(unsafe {
            bindings::skb_share_check(skb, crate::alloc::flags::GFP_ATOMIC.as_raw())
        })?;
        // SAFETY: `skb` is now a private buffer we own.
        if unsafe { bindings::skb_linearize(skb.as_ptr()) } != 0 {
            // SAFETY: We own `skb`.
            unsafe { bindings::kfree_skb(skb.as_ptr()) };
            return None;
        }
        // INVARIANT: The buffer is private and was made linear.
        Some(Self(skb))
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

    /// The data.
    pub fn data(&self) -> &[u8] {
        let skb = self.0.as_ptr();
        // SAFETY: By the type invariant the data is linear, so `headlen`
        // bytes at `data` are initialized and owned by this buffer for as long
        // as `self` is borrowed.
        unsafe { core::slice::from_raw_parts((*skb).data, bindings::skb_headlen(skb) as usize) }
    }

    /// The frame as it arrived, from the MAC header to the end of the data
    /// (for a received Ethernet frame: destination address onwards). Empty if
    /// no MAC header was recorded.
    pub fn mac_frame(&self) -> &[u8] {
        let skb = self.0.as_ptr();
        // SAFETY: `skb` is valid and ours.
        if !unsafe { bindings::skb_mac_header_was_set(skb) } {
            return &[];
        }
        // SAFETY: The MAC header lies in the linear head in front of `data`,
        // so `mac..data + headlen` is one initialized range of the buffer.
        unsafe {
            let mac = bindings::skb_mac_header(skb);
            let end = (*skb).data.add(bindings::skb_headlen(skb) as usize);
            match usize::try_from(end.offset_from(mac)) {
                Ok(n) => core::slice::from_raw_parts(mac, n),
                Err(_) => &[],
            }
        }
    }

    /// Appends `len` bytes to the data and returns them for filling
    /// (`skb_put()`). Fails with `EMSGSIZE` when the buffer has less room.
    pub fn put(&mut self, len: usize) -> Result<&mut [u8]> {
        let skb = self.0.as_ptr();
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
