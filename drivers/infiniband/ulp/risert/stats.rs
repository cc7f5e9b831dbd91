// SPDX-License-Identifier: GPL-2.0

//! Counters: transport-wide ones and each connection's (`/sys/kernel/debug/risert/stats`).

use super::*;

/// A counter shown in debugfs.
pub(crate) struct Counter(Atomic<u64>);

impl Counter {
    pub(crate) const fn new() -> Self {
        Self(Atomic::new(0))
    }

    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

macro_rules! stats {
    ($($name:ident),* $(,)?) => {
        /// Transport-wide counters (`/sys/kernel/debug/risert/stats`).
        pub(crate) struct Stats {
            $(pub(crate) $name: Counter,)*
        }

        pub(crate) static STATS: Stats = Stats {
            $($name: Counter::new(),)*
        };

        pub(crate) fn write_stats(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            $(writeln!(f, "{} {}", stringify!($name), STATS.$name.get())?;)*
            write_conns(f)
        }
    };
}

stats!(
    portals_up,
    portals_down,
    listen_failed,
    connect_requests,
    rejected,
    listeners_lost,
    accepted,
    established,
    logins,
    conns_freed,
    pdus_rx,
    pdus_tx,
    text,
    logouts,
    scsi_cmds,
    unsol_data_out,
    data_in,
    data_out,
    tmfs,
    nops,
    pdus_rejected,
    bad_pdus,
    wc_errors,
    cq_events,
    sq_full,
    backlogged,
    tx_allocs,
    send_inv,
    unsignaled,
    signal_posts,
);

pub(crate) fn write_conns(f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let Some(sh) = SHARED.as_ref() else {
        return Ok(());
    };
    for c in sh.conns.lock().iter() {
        let s = c.batcher.stats();
        let phase = c.inner.lock().phase;
        f.write_fmt(fmt!(
            "conn {} peer {} phase {:?} rx {} tx {} cq_events {} passes {} completions {} \
             locks {} budget_exhausted {} rearms {} post_arm_polls {} post_arm {} reruns {} \
             polling {} joins {} idle_drops {}\n",
            c.id,
            c.peer,
            phase,
            c.rx.get(),
            c.tx.get(),
            c.events.get(),
            s.passes,
            s.completions,
            s.locks,
            s.budget_exhausted,
            s.rearms,
            s.post_arm_polls,
            s.post_arm,
            s.reruns,
            c.batcher.is_polling() as u8,
            s.joins,
            s.idle_drops
        ))?;
    }
    Ok(())
}
