// SPDX-License-Identifier: GPL-2.0

//! Event counters for statistics.

use crate::sync::atomic::{
    Atomic,
    Relaxed, //
};

/// A count of events, for statistics (a debugfs file and the like).
///
/// Additions are relaxed atomic operations: a counter orders no other memory access, and a
/// reader sees some recent value. A counter that many CPUs bump at high rates shares its cache
/// line between them; give each queue or connection its own and add them up when read.
///
/// # Examples
///
/// ```
/// use kernel::event_counter::Counter;
///
/// static FRAMES: Counter = Counter::new();
///
/// FRAMES.inc();
/// FRAMES.add(2);
/// assert_eq!(FRAMES.get(), 3);
///
/// let per_queue = [Counter::new(), Counter::new()];
/// per_queue[1].inc();
/// assert_eq!(per_queue.iter().map(Counter::get).sum::<u64>(), 1);
/// ```
pub struct Counter(Atomic<u64>);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self(Atomic::new(0))
    }

    /// Counts one event.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Counts `n` events.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The events counted so far.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}
