// SPDX-License-Identifier: GPL-2.0

//! The connection's work items: completion polling through the batcher, and control work.

use super::*;

/// The completion work item of a connection ([`RConn::poll_work`]).
pub(crate) const POLL_WORK: u64 = 0;
/// The control work item of a connection ([`RConn::ctrl_work`]).
pub(crate) const CTRL_WORK: u64 = 1;

/// Queues a connection's work item `ID` ([`POLL_WORK`] or [`CTRL_WORK`]) on the module's
/// workqueue, unless the module is going away.
pub(crate) fn enqueue<const ID: u64>(conn: Arc<RConn>)
where
    RConn: WorkItem<ID, Pointer = Arc<RConn>> + kernel::workqueue::HasWork<RConn, ID>,
{
    let not_queued = shared()
        .wq
        .try_access()
        .map(|wq| wq.enqueue::<Arc<RConn>, ID>(conn));
    // Dropped outside the RCU read section of `try_access`.
    drop(not_queued);
}

/// A connection's completion queue as a completion source for the [`Batcher`].
pub(crate) struct Source<'a> {
    pub(crate) conn: &'a Arc<RConn>,
}

/// A connection's completion queue, reached under RCU for one locked stretch of a batcher pass
/// (the batcher lets one context at a time poll it): the connection's lock is not taken.
pub(crate) struct LockedCq<'a> {
    pub(crate) link: Option<RevocableGuard<'a, SetOnce<Arc<Link>>>>,
}

impl LockedCq<'_> {
    fn link(&self) -> Option<&Link> {
        self.link.as_deref().and_then(|l| l.as_ref()).map(|l| &**l)
    }
}

impl CompletionQueue for LockedCq<'_> {
    type Completion = Completion<TxDesc>;

    fn poll(&mut self, max: usize, sink: impl FnMut(Self::Completion)) -> usize {
        match self.link() {
            Some(l) => l.cq().poll(max, sink),
            None => 0,
        }
    }

    fn arm(&mut self) -> Armed {
        // `IB_CQ_REPORT_MISSED_EVENTS`: a positive answer means completions may be queued that
        // raise no event.
        match self.link() {
            Some(l) if l.cq().arm() => Armed::MaybeMissed,
            _ => Armed::Quiet,
        }
    }
}

impl CompletionSource for Source<'_> {
    type Completion = Completion<TxDesc>;
    type Queue<'b>
        = LockedCq<'b>
    where
        Self: 'b;

    fn lock(&self) -> LockedCq<'_> {
        LockedCq {
            link: self.conn.link.try_access(),
        }
    }

    /// Called after the RCU read section: handling a completion may sleep.
    fn complete(&self, c: Self::Completion) {
        self.conn.on_completion(c);
    }
}

/// The completion work: one budgeted pass, requeued while completions remain (the stgt iSER
/// technique). In the adaptive mode, one busy-polling pass, requeued while the connection stays
/// in the polling set.
impl WorkItem<POLL_WORK> for RConn {
    type Pointer = Arc<RConn>;

    fn run(this: Arc<RConn>) {
        let src = Source { conn: &this };
        let pass = if this.busy_poll && this.batcher.is_polling() {
            this.batcher.poll(&src, Instant::now())
        } else {
            this.batcher.run(&src)
        };
        if this.retry_parked() {
            // The session's command tags are all in use, and are given back by contexts that
            // raise no completion here (the target's threads, the backend): look again soon.
            fsleep(Delta::from_millis(1));
            this.kick();
            return;
        }
        match pass {
            Pass::Reschedule | Pass::Polling => this.kick(),
            // Idle: sends posted unsignaled must not wait for the next command.
            Pass::Armed => this.signal_posted(),
            Pass::Deferred => {}
        }
    }
}

/// The control work: logout post-handling, and the release of connections the target never
/// knew (`isert_do_control_comp()`, `isert_release_work()`).
impl WorkItem<CTRL_WORK> for RConn {
    type Pointer = Arc<RConn>;

    fn run(this: Arc<RConn>) {
        let (logouts, release) = {
            let mut inner = this.inner.lock();
            let logouts = core::mem::take(&mut inner.logouts);
            // The portal goes with the release (and only then: a release asked for later
            // still needs it).
            let release = inner.phase.teardown().filter(|t| t.release).map(|t| {
                t.release = false;
                t.portal.take()
            });
            (logouts, release)
        };
        for cmd in logouts {
            cmd.logout_post_handler();
        }
        if let Some(portal) = release {
            if let Some(p) = portal {
                p.remove(&this);
            }
            this.release_link();
        }
    }
}
