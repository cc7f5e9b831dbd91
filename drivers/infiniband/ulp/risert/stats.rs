// SPDX-License-Identifier: GPL-2.0

//! Counters: transport-wide ones and each connection's (`/sys/kernel/debug/risert/stats`).

use super::*;
use kernel::event_counter::Counter;

macro_rules! stats {
    ($($name:ident),* $(,)?) => {
        /// Transport-wide counters of events outside the data path.
        pub(crate) struct Stats {
            $(pub(crate) $name: Counter,)*
        }

        pub(crate) static STATS: Stats = Stats {
            $($name: Counter::new(),)*
        };

        fn write_transport_stats(f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            $(writeln!(f, "{} {}", stringify!($name), STATS.$name.get())?;)*
            Ok(())
        }
    };
}

macro_rules! conn_stats {
    ($($name:ident),* $(,)?) => {
        /// A connection's counters of the data path. Each connection counts its own (no
        /// counter is shared by connections running on different CPUs); the transport's total
        /// is that of the freed connections ([`RETIRED`]) plus those of the live ones.
        pub(crate) struct ConnStats {
            $(pub(crate) $name: Counter,)*
        }

        /// The counters of the connections freed so far.
        static RETIRED: ConnStats = ConnStats::new();

        impl ConnStats {
            pub(crate) const fn new() -> Self {
                Self {
                    $($name: Counter::new(),)*
                }
            }

            /// Adds the counters to the totals of freed connections; with the list of live
            /// connections locked, as the connection leaves it.
            pub(crate) fn retire(&self) {
                $(RETIRED.$name.add(self.$name.get());)*
            }
        }

        /// Writes the totals: freed connections' and live ones' (`conns`, locked).
        fn write_conn_totals(
            f: &mut core::fmt::Formatter<'_>,
            conns: &[Arc<RConn>],
        ) -> core::fmt::Result {
            $(
                let n = conns
                    .iter()
                    .fold(RETIRED.$name.get(), |n, c| n + c.stats.$name.get());
                writeln!(f, "{} {}", stringify!($name), n)?;
            )*
            Ok(())
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
    relistens,
    accepted,
    established,
    logins,
    conns_freed,
    pdus_rejected,
    rsp_dropped,
    bad_pdus,
    wc_errors,
    keepalive_lost,
);

conn_stats!(
    pdus_rx,
    pdus_tx,
    cq_events,
    scsi_cmds,
    imm_in_place,
    unsol_data_out,
    data_in,
    data_out,
    send_inv,
    unsignaled,
    tx_allocs,
    sq_full,
    backlogged,
    tag_waits,
    signal_posts,
    keepalives,
    nops,
    tmfs,
    text,
    logouts,
);

/// The debugfs file: the transport's totals, then a line per live connection.
pub(crate) fn write_stats(_: &(), f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    write_transport_stats(f)?;
    let Some(sh) = SHARED.as_ref() else {
        return write_conn_totals(f, &[]);
    };
    let conns = sh.conns.lock();
    write_conn_totals(f, &conns)?;
    write_conns(f, &conns)
}

fn write_conns(f: &mut core::fmt::Formatter<'_>, conns: &[Arc<RConn>]) -> core::fmt::Result {
    for c in conns {
        let s = c.batcher.stats();
        let phase = c.inner.lock().phase.name();
        f.write_fmt(fmt!(
            "conn {} peer {} phase {} rx {} tx {} cq_events {} passes {} completions {} \
             locks {} budget_exhausted {} rearms {} post_arm_polls {} post_arm {} reruns {} \
             polling {} joins {} idle_drops {} lent {}\n",
            c.id,
            c.peer,
            phase,
            c.stats.pdus_rx.get(),
            c.stats.pdus_tx.get(),
            c.stats.cq_events.get(),
            s.passes,
            s.completions,
            s.locks,
            s.budget_exhausted,
            s.rearms,
            s.post_arm_polls,
            s.post_arm,
            s.reruns,
            u8::from(c.batcher.is_polling()),
            s.joins,
            s.idle_drops,
            c.iconn.lent()
        ))?;
    }
    Ok(())
}
