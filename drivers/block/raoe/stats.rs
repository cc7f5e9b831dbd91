// SPDX-License-Identifier: GPL-2.0

//! Counters, and the debugfs `stats` file that shows them.

pub(crate) use kernel::event_counter::Counter;
use kernel::sync::{
    atomic::Relaxed,
    Arc, //
};

use crate::{aoe::Aoe, module_parameters, wire::Reject};

/// A device's counters.
#[derive(Default)]
pub(crate) struct DevStats {
    pub(crate) frames: Counter,
    pub(crate) retransmits: Counter,
    pub(crate) unexpected: Counter,
    pub(crate) failed: Counter,
    pub(crate) xmit_errors: Counter,
    /// Requests handed to the transmit work item for want of memory.
    pub(crate) tx_deferred: Counter,
    /// Write frames that carried the request's pages instead of a copy.
    pub(crate) lent: Counter,
}

/// Lent write frames whose pages some path copied (a receiver on this host
/// does), counted when the loan comes back.
pub(crate) static LENT_COPIED: Counter = Counter::new();

/// The packet handler's counters: frames it did not accept, and why.
#[derive(Default)]
pub(crate) struct RxStats {
    pub(crate) short: Counter,
    pub(crate) not_response: Counter,
    pub(crate) aoe_error: Counter,
    pub(crate) bad_addr: Counter,
    pub(crate) unknown_dev: Counter,
    pub(crate) cfg: Counter,
    pub(crate) dropped: Counter,
}

impl RxStats {
    /// Counts a frame the parser rejected.
    pub(crate) fn reject(&self, r: Reject) {
        match r {
            Reject::Short => &self.short,
            Reject::NotResponse => &self.not_response,
            Reject::AoeError => &self.aoe_error,
            Reject::BadAddr => &self.bad_addr,
        }
        .inc();
    }
}

/// Writes the debugfs `stats` file.
pub(crate) fn write_stats(aoe: &Arc<Aoe>, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let l = |a: &Counter| a.get();
    writeln!(
        f,
        "rx: cfg {} short {} not_response {} aoe_error {} bad_addr {} unknown_dev {} dropped {}",
        l(&aoe.rx.cfg),
        l(&aoe.rx.short),
        l(&aoe.rx.not_response),
        l(&aoe.rx.aoe_error),
        l(&aoe.rx.bad_addr),
        l(&aoe.rx.unknown_dev),
        l(&aoe.rx.dropped)
    )?;
    writeln!(
        f,
        "tx: reserve_used {} lent_copied {} single_thread {}",
        l(&aoe.tx.skbs.used),
        l(&LENT_COPIED),
        module_parameters::single_thread.value()
    )?;
    writeln!(f, "err: dropped {}", aoe.err.dropped())?;
    for (i, c) in aoe.compl.iter().enumerate() {
        if !c.running.load(Relaxed) {
            continue;
        }
        let s = c.batcher.stats();
        writeln!(
            f,
            "thread {}: cpu {} completions {} {}",
            i,
            c.cpu.as_u32(),
            l(&c.completed),
            s
        )?;
    }
    let devs = aoe.devs.lock();
    for d in devs.iter() {
        let st = d.st.lock();
        writeln!(
            f,
            "e{}.{}: state {} thread {} frames {} nout {} maxout {} sent {} retransmits {} \
             unexpected {} failed {} xmit_errors {} tx_deferred {} lent {} rtt_avg_us {} \
             rtt_dev_us {} paths {}",
            d.addr.major,
            d.addr.minor,
            st.life.name(),
            aoe.compl[d.compl].cpu.as_u32(),
            st.frames.len(),
            st.nout,
            st.maxout,
            l(&d.stats.frames),
            l(&d.stats.retransmits),
            l(&d.stats.unexpected),
            l(&d.stats.failed),
            l(&d.stats.xmit_errors),
            l(&d.stats.tx_deferred),
            l(&d.stats.lent),
            st.rtt_avg_us,
            st.rtt_dev_us,
            st.paths.len()
        )?;
    }
    Ok(())
}
