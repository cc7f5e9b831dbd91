// SPDX-License-Identifier: GPL-2.0

//! Counters and the debugfs `stats` file.
//!
//! Every counter of a request queue has one writer at a time: it is written under the queue's
//! lock (submission, completion) or by the queue's interrupt handler, which does not run
//! concurrently with itself. So a counter is bumped with a plain load and store, not a locked
//! read-modify-write, and the counters of different queues live in different cache lines
//! (see [`RequestQueue`](crate::completion::RequestQueue)): CPUs submitting to different
//! queues do not share them.

use crate::{
    completion::Completions,
    steering::Decision, //
};
use kernel::{
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
    },
};

/// Adds one to a counter with a single writer (no locked read-modify-write).
pub(crate) fn bump(counter: &Atomic<u64>) {
    counter.store(counter.load(Relaxed) + 1, Relaxed);
}

/// The counters of one request queue.
pub(crate) struct QueueStats {
    pub(crate) submitted: Atomic<u64>,
    pub(crate) completed: Atomic<u64>,
    /// Requests on this queue that blk-mq had mapped to another one.
    pub(crate) steered_in: Atomic<u64>,
    pub(crate) interrupts: Atomic<u64>,
    /// Submissions refused because the ring was full (the midlayer retries them).
    pub(crate) busy: Atomic<u64>,
    /// Steering decisions of the requests added to this queue.
    pub(crate) idle_picks: Atomic<u64>,
    pub(crate) stays: Atomic<u64>,
    pub(crate) resteers: Atomic<u64>,
    /// Completions of steered requests on this queue while their target had moved to another
    /// one: only after a re-steer (CPU hot-unplug); otherwise the per-target property is broken.
    pub(crate) violations: Atomic<u64>,
    /// Requests added to this queue, per target.
    pub(crate) per_target: KVec<Atomic<u64>>,
}

impl QueueStats {
    pub(crate) fn new(targets: usize) -> Result<Self> {
        let mut per_target = KVec::with_capacity(targets, GFP_KERNEL)?;
        for _ in 0..targets {
            per_target.push(Atomic::new(0), GFP_KERNEL)?;
        }
        Ok(Self {
            submitted: Atomic::new(0),
            completed: Atomic::new(0),
            steered_in: Atomic::new(0),
            interrupts: Atomic::new(0),
            busy: Atomic::new(0),
            idle_picks: Atomic::new(0),
            stays: Atomic::new(0),
            resteers: Atomic::new(0),
            violations: Atomic::new(0),
            per_target,
        })
    }

    /// Counts a request added to this queue; called under the queue's lock.
    pub(crate) fn submitted(&self, target: u32, decision: Option<Decision>, steered_in: bool) {
        bump(&self.submitted);
        if let Some(c) = self.per_target.get(target as usize) {
            bump(c);
        }
        match decision {
            Some(Decision::Idle) => bump(&self.idle_picks),
            Some(Decision::Stay) => bump(&self.stays),
            Some(Decision::Resteer) => bump(&self.resteers),
            None => {}
        }
        if steered_in {
            bump(&self.steered_in);
        }
    }
}

/// Writes the `stats` file of a host.
pub(crate) fn write(c: &Arc<Completions>, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(
        f,
        "steering: {}",
        if c.per_target { "per-target" } else { "mq" }
    )?;
    let sum = |get: fn(&QueueStats) -> &Atomic<u64>| -> u64 {
        c.queues.iter().map(|q| get(&q.stats).load(Relaxed)).sum()
    };
    writeln!(
        f,
        "decisions: idle {} stay {} resteer {}",
        sum(|s| &s.idle_picks),
        sum(|s| &s.stays),
        sum(|s| &s.resteers)
    )?;
    writeln!(f, "violations {}", sum(|s| &s.violations))?;
    writeln!(
        f,
        "tmf: {} probes: {} probes_lost: {} host_resets: {} events: {} rescans: {} \
         removed_after_rescan: {}",
        c.tmfs.load(Relaxed),
        c.probes.load(Relaxed),
        c.probes_lost.load(Relaxed),
        c.host_resets.load(Relaxed),
        c.events_handled.load(Relaxed),
        c.rescans.load(Relaxed),
        c.hotunplug_removed.load(Relaxed)
    )?;
    for (i, q) in c.queues.iter().enumerate() {
        let s = q.batcher.stats();
        let st = &q.stats;
        writeln!(
            f,
            "queue {i}: submitted {} completed {} steered_in {} busy {} interrupts {} {}",
            st.submitted.load(Relaxed),
            st.completed.load(Relaxed),
            st.steered_in.load(Relaxed),
            st.busy.load(Relaxed),
            st.interrupts.load(Relaxed),
            s
        )?;
    }
    for (t, tq) in c.targets.iter().enumerate() {
        let counts = c
            .queues
            .iter()
            .map(|q| q.stats.per_target.get(t).map_or(0, |h| h.load(Relaxed)));
        if counts.clone().all(|n| n == 0) {
            continue;
        }
        let (inflight, queue) = tq.snapshot();
        write!(f, "target {t}: inflight {inflight} queue {queue} requests")?;
        for n in counts {
            write!(f, " {n}")?;
        }
        writeln!(f)?;
    }
    Ok(())
}
