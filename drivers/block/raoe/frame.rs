// SPDX-License-Identifier: GPL-2.0

//! Frames and tags: a device's command slots, the life of one slot, and the
//! carrier that splits one block request over several frames.

use kernel::{
    alloc::Flags,
    block::mq::{SegRange, Segments},
    module::this_module,
    net::{
        skbuff::{RxSkBuff, SkBuff},
        zerocopy::{LoanReturn, PageLoan},
    },
    new_spinlock_irq,
    prelude::*,
    sync::{
        atomic::{Atomic, Full, Relaxed},
        Arc, SpinLockIrq,
    },
    time::{Instant, Monotonic},
};

use crate::{
    dev::PathId,
    stats::LENT_COPIED,
    wire::Ata,
    Raoe,
    RaoeModule, //
};

/// Byte ranges of a request whose frames failed: up to [`Failed::MAX`], then
/// the whole request counts as failed.
#[derive(Default)]
struct Failed {
    ranges: [(u32, u32); Failed::MAX],
    n: usize,
    all: bool,
}

impl Failed {
    const MAX: usize = 8;

    fn add(&mut self, offset: u32, len: u32) {
        if self.n == Self::MAX {
            self.all = true;
        } else {
            self.ranges[self.n] = (offset, len);
            self.n += 1;
        }
    }

    /// Whether a failed byte lies in `offset..offset + len`.
    fn hits(&self, offset: u32, len: u32) -> bool {
        self.all
            || self.ranges[..self.n]
                .iter()
                .any(|&(o, l)| o < offset.saturating_add(len) && offset < o.saturating_add(l))
    }
}

/// A request's data and its failed pieces, under one lock.
struct Carried {
    data: Option<Segments<Raoe>>,
    failed: Failed,
}

/// One block request being carried by frames.
///
/// Lock order: taken inside a device's state lock (`Dev::st`), never the
/// other way round.
#[pin_data]
pub(crate) struct IoReq {
    /// The request's data, until the request is ended: each frame copies its
    /// piece ([`SegRange`]) through it. IRQ-safe because it is handed over
    /// under the (softirq-safe) device lock.
    #[pin]
    inner: SpinLockIrq<Carried>,
    /// Bytes not yet accounted for by a completed or failed frame.
    left: Atomic<u32>,
}

impl IoReq {
    /// Allocates the carrier; [`IoReq::start`] gives it its request.
    pub(crate) fn new(flags: Flags) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(IoReq {
                inner <- new_spinlock_irq!(
                    Carried {
                        data: None,
                        failed: Failed::default(),
                    },
                    "raoe::IoReq::inner"
                ),
                left: Atomic::new(0),
            }),
            flags,
        )
    }

    pub(crate) fn start(&self, data: Segments<Raoe>) {
        self.left.store(data.left(), Relaxed);
        self.inner.lock().data = Some(data);
    }

    /// Cuts the request's next `len` bytes off for a frame.
    pub(crate) fn next(&self, len: u32) -> Option<SegRange> {
        Option::as_mut(&mut self.inner.lock().data)?.next(len)
    }

    /// Accounts for the `len` bytes at `offset`, done or failed; ends the
    /// request after the last byte, bio by bio: a bio fails only if a failed
    /// piece lies in it (partial completion, as the C driver's
    /// `aoe_end_request()`).
    pub(crate) fn finish(&self, offset: u32, len: u32, ok: bool) {
        if !ok {
            self.inner.lock().failed.add(offset, len);
        }
        if self.left.fetch_sub(len, Full) == len {
            let (data, failed) = {
                let mut inner = self.inner.lock();
                (inner.data.take(), core::mem::take(&mut inner.failed))
            };
            if let Some(data) = data {
                let status = |o: u32, l: u32| {
                    if failed.hits(o, l) {
                        Err(EIO)
                    } else {
                        Ok(())
                    }
                };
                if data.end_by_bio(status).is_err() {
                    pr_err!("request still referenced at completion\n");
                }
            }
        }
    }

    /// Copies read data from a response frame, `offset` bytes in, into the
    /// request's piece `range`.
    pub(crate) fn copy_in(&self, range: &SegRange, skb: &RxSkBuff, offset: usize) -> Result {
        match self.inner.lock().data.as_ref() {
            Some(data) => data.copy_to(range, skb, offset),
            None => Err(EINVAL),
        }
    }

    /// Copies the request's piece `range` of write data into `buf`.
    pub(crate) fn copy_out(&self, range: &SegRange, buf: &mut [u8]) -> Result {
        match self.inner.lock().data.as_ref() {
            Some(data) => data.copy_from(range, buf),
            None => Err(EINVAL),
        }
    }

    /// Appends the request's piece `range` of write data to `skb` as the
    /// request's own pages, lent under `loan`.
    pub(crate) fn lend(&self, range: &SegRange, skb: &mut SkBuff, loan: &PageLoan<Lent>) -> Result {
        match self.inner.lock().data.as_ref() {
            Some(data) => data.lend_to(range, skb, loan),
            None => Err(EINVAL),
        }
    }
}

/// A write frame's piece while its pages are lent to the network stack.
///
/// Every frame sent with the request's pages (each transmission of the
/// piece) holds the loan, and the piece is accounted for only when the loan
/// comes back: when the response arrived (or the device failed) and no frame
/// that carries the pages is left anywhere, a late first transmission queued
/// at the target included. Ending the request earlier would let its pages be
/// reused while such a frame can still write them to the target.
pub(crate) struct Lent {
    req: Arc<IoReq>,
    offset: u32,
    len: u32,
    /// Set (to 1) when the target acknowledged the write.
    ok: Atomic<u32>,
}

impl LoanReturn for Lent {
    fn returned(self, copied: bool) {
        if copied {
            LENT_COPIED.inc();
        }
        self.req
            .finish(self.offset, self.len, self.ok.load(Relaxed) != 0);
    }
}

/// A piece of a block request carried by one frame.
pub(crate) struct Piece {
    pub(crate) req: Arc<IoReq>,
    pub(crate) range: SegRange,
    /// For a write, the loan of its pages; `None` for a read, or when the
    /// loan could not be allocated (the data is then copied into each frame).
    pub(crate) loan: Option<PageLoan<Lent>>,
}

impl Piece {
    /// A piece; a write's pages are lent if a loan can be had without
    /// sleeping.
    pub(crate) fn new(req: Arc<IoReq>, range: SegRange, write: bool) -> Self {
        let loan = write
            .then(|| {
                let lent = Lent {
                    req: req.clone(),
                    offset: range.offset(),
                    len: range.len(),
                    ok: Atomic::new(0),
                };
                PageLoan::new(lent, this_module::<RaoeModule>(), GFP_ATOMIC | __GFP_NOWARN).ok()
            })
            .flatten();
        Self { req, range, loan }
    }

    /// Accounts for the piece, done or failed: at once, or, for lent pages,
    /// when the last frame that carries them is gone.
    pub(crate) fn finish(self, ok: bool) {
        match self.loan {
            Some(loan) => {
                if ok {
                    loan.data().ok.store(1, Relaxed);
                }
                // The loan's return calls `IoReq::finish`.
                drop(loan);
            }
            None => self.req.finish(self.range.offset(), self.range.len(), ok),
        }
    }
}

/// What a command is for.
pub(crate) enum Job {
    /// ATA IDENTIFY of the device.
    Identify,
    /// A piece of a block request.
    Io(Piece),
}

/// A command in a frame slot.
pub(crate) struct Cmd {
    pub(crate) job: Job,
    pub(crate) ata: Ata,
    /// The tag of the last transmission ([`new_tag`]); 0 before the first.
    pub(crate) tag: u32,
    /// When it was last transmitted.
    pub(crate) sent: Instant<Monotonic>,
    pub(crate) retries: u32,
    /// The path of the last transmission.
    pub(crate) path: PathId,
}

impl Cmd {
    /// A command not yet transmitted.
    pub(crate) fn new(job: Job, ata: Ata) -> Self {
        Self {
            job,
            ata,
            tag: 0,
            sent: Instant::now(),
            retries: 0,
            path: PathId::NONE,
        }
    }
}

/// A frame slot of a device, and where its command is.
///
/// `Free` → `Waiting` (transmit thread: new work) → `Answered` (packet
/// handler: the response matched, it waits in a completion queue) → `Free`
/// (completion thread). `Waiting` → `Free` when the device fails its I/O.
/// `Answered` → `Waiting` only when the response could not be queued.
pub(crate) enum Frame {
    Free,
    /// Transmitted (or about to be), no response yet.
    Waiting(Cmd),
    /// The response arrived and waits in a completion queue.
    Answered(Cmd),
}

impl Frame {
    pub(crate) fn is_free(&self) -> bool {
        matches!(self, Frame::Free)
    }

    /// The command of a frame waiting for its response.
    pub(crate) fn waiting(&mut self) -> Option<&mut Cmd> {
        match self {
            Frame::Waiting(c) => Some(c),
            _ => None,
        }
    }

    /// `Waiting` → `Answered`; `false` in any other state.
    pub(crate) fn answer(&mut self) -> bool {
        match core::mem::replace(self, Frame::Free) {
            Frame::Waiting(c) => {
                *self = Frame::Answered(c);
                true
            }
            other => {
                *self = other;
                false
            }
        }
    }

    /// `Answered` → `Waiting` (the response was lost on our side:
    /// retransmission recovers).
    pub(crate) fn unanswer(&mut self) {
        if let Frame::Answered(c) = core::mem::replace(self, Frame::Free) {
            *self = Frame::Waiting(c);
        }
    }

    /// Takes the command of an answered frame, freeing the slot.
    pub(crate) fn take_answered(&mut self) -> Option<Cmd> {
        self.take(|f| matches!(f, Frame::Answered(_)))
    }

    /// Takes the command of a waiting frame, freeing the slot.
    pub(crate) fn take_waiting(&mut self) -> Option<Cmd> {
        self.take(|f| matches!(f, Frame::Waiting(_)))
    }

    /// Frees the slot and returns its command if `which` selects its state.
    fn take(&mut self, which: impl Fn(&Frame) -> bool) -> Option<Cmd> {
        if !which(self) {
            return None;
        }
        match core::mem::replace(self, Frame::Free) {
            Frame::Waiting(c) | Frame::Answered(c) => Some(c),
            Frame::Free => None,
        }
    }
}

/// A fresh tag for frame `frame`: `generation` in the upper half (never 0,
/// so tags with a zero upper half are never valid) and the frame index in
/// the lower half.
pub(crate) fn new_tag(generation: &mut u16, frame: usize) -> u32 {
    *generation = generation.wrapping_add(1).max(1);
    (u32::from(*generation) << 16) | frame as u32
}

/// The frame index of a tag.
pub(crate) fn tag_frame(tag: u32) -> usize {
    (tag & 0xffff) as usize
}
