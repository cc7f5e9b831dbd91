// SPDX-License-Identifier: GPL-2.0

//! A bounded FIFO whose slots are allocated ahead of time, so that pushing
//! never allocates (it runs under spinlocks, in softirq context and on the
//! I/O path).

use kernel::{alloc::Flags, prelude::*};

/// A FIFO of at most [`Ring::capacity`] items.
///
/// # Invariants
///
/// `len <= slots.len()`; the items are `slots[(head + i) % slots.len()]` for
/// `i < len`, and every other slot is `None`.
pub(crate) struct Ring<T> {
    slots: KVec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T> Ring<T> {
    /// An empty ring without slots.
    pub(crate) const fn new() -> Self {
        Self {
            slots: KVec::new(),
            head: 0,
            len: 0,
        }
    }

    /// An empty ring with `n` slots.
    pub(crate) fn with_capacity(n: usize, flags: Flags) -> Result<Self> {
        let mut r = Self::new();
        r.reserve(n, flags)?;
        Ok(r)
    }

    /// Adds `n` slots, keeping the items in order.
    pub(crate) fn reserve(&mut self, n: usize, flags: Flags) -> Result {
        let cap = self.slots.len() + n;
        let mut slots = KVec::with_capacity(cap, flags)?;
        while let Some(item) = self.pop() {
            slots.push(Some(item), flags)?;
        }
        while slots.len() < cap {
            slots.push(None, flags)?;
        }
        // INVARIANT: The items moved to the front in order.
        self.len = slots.iter().filter(|s| s.is_some()).count();
        self.slots = slots;
        self.head = 0;
        Ok(())
    }

    /// Appends `item`, or gives it back when the ring is full.
    pub(crate) fn push(&mut self, item: T) -> Result<(), T> {
        let cap = self.slots.len();
        if self.len == cap {
            return Err(item);
        }
        let i = (self.head + self.len) % cap;
        self.slots[i] = Some(item);
        self.len += 1;
        Ok(())
    }

    /// Takes the oldest item.
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.slots[self.head].take();
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        item
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}
