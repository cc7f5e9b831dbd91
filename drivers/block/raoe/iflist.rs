// SPDX-License-Identifier: GPL-2.0

//! The interfaces AoE may use (`aoe_iflist`, `/dev/etherd/interfaces`),
//! read by the packet handler for every frame without taking a lock.

use kernel::{
    net::netdevice::NetDevice,
    new_spinlock_irq,
    prelude::*,
    processor::cpu_relax,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        barrier::{smp_mb, Read, Write},
        SpinLockIrq,
    },
};

/// Most interfaces in the list.
pub(crate) const MAX_IFS: usize = 8;

/// Bytes of an interface name, its NUL included (`IFNAMSIZ`).
const NAME_LEN: usize = 16;

/// Interface names, parsed: at most [`MAX_IFS`], each shorter than
/// [`NAME_LEN`] bytes and padded with zeros.
#[derive(Clone, Copy, Default)]
pub(crate) struct Names {
    names: [[u8; NAME_LEN]; MAX_IFS],
    count: usize,
}

impl Names {
    /// Parses names separated by blanks, commas or NULs (the C driver's
    /// separators); fails with `EINVAL` for more than [`MAX_IFS`] names or a
    /// name of [`NAME_LEN`] bytes or more.
    pub(crate) fn parse(text: &[u8]) -> Result<Self> {
        let mut new = Self::default();
        for w in text
            .split(|&b| b.is_ascii_whitespace() || b == 0 || b == b',')
            .filter(|w| !w.is_empty())
        {
            if w.len() >= NAME_LEN || new.count == MAX_IFS {
                return Err(EINVAL);
            }
            new.names[new.count][..w.len()].copy_from_slice(w);
            new.count += 1;
        }
        Ok(new)
    }
}

/// A name as two words, for atomic storage.
fn words(name: &[u8; NAME_LEN]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&name[..8]);
    hi.copy_from_slice(&name[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

/// The interface list; empty means every Ethernet interface.
///
/// # Invariants
///
/// Readers take no lock: the list is stored in atomics under a sequence
/// count, which a writer makes odd while it changes them, and a reader
/// retries when the count was odd or moved during its read. Writers are
/// serialized by `write`, an IRQ-safe lock, so a packet handler never
/// interrupts a writer on the same CPU and waits for it.
#[pin_data]
pub(crate) struct IfList {
    seq: Atomic<u32>,
    count: Atomic<usize>,
    words: [[Atomic<u64>; 2]; MAX_IFS],
    #[pin]
    write: SpinLockIrq<()>,
}

impl IfList {
    /// A list holding `names`.
    pub(crate) fn new(names: Names) -> impl PinInit<Self> {
        pin_init!(IfList {
            seq: Atomic::new(0),
            count: Atomic::new(names.count),
            words: names.names.map(|n| words(&n).map(Atomic::new)),
            write <- new_spinlock_irq!((), "raoe::IfList::write"),
        })
    }

    /// Replaces the list.
    pub(crate) fn set(&self, names: Names) {
        let _guard = self.write.lock();
        let s = self.seq.load(Relaxed);
        // INVARIANT: Odd while the names change; writers hold `write`.
        self.seq.store(s.wrapping_add(1), Relaxed);
        smp_mb(Write);
        for (slot, name) in self.words.iter().zip(names.names.iter()) {
            for (w, v) in slot.iter().zip(words(name)) {
                w.store(v, Relaxed);
            }
        }
        self.count.store(names.count, Relaxed);
        self.seq.store(s.wrapping_add(2), Release);
    }

    /// Whether AoE may use `dev`.
    pub(crate) fn allows(&self, dev: &NetDevice) -> bool {
        // The usual case, no list: no name to copy for every frame.
        if self.seq.load(Acquire) & 1 == 0 && self.count.load(Relaxed) == 0 {
            return true;
        }
        let name = dev.name();
        let mut padded = [0u8; NAME_LEN];
        let bytes = name.as_bytes();
        let n = bytes.len().min(NAME_LEN - 1);
        padded[..n].copy_from_slice(&bytes[..n]);
        let want = words(&padded);
        loop {
            let s = self.seq.load(Acquire);
            if s & 1 == 1 {
                cpu_relax();
                continue;
            }
            let count = self.count.load(Relaxed).min(MAX_IFS);
            let found = count == 0
                || self.words[..count]
                    .iter()
                    .any(|w| w[0].load(Relaxed) == want[0] && w[1].load(Relaxed) == want[1]);
            smp_mb(Read);
            if self.seq.load(Relaxed) == s {
                return found;
            }
        }
    }
}
