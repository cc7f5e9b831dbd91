// SPDX-License-Identifier: GPL-2.0

//! Frames and tags: a device's command slots, the life of one slot, and the
//! carrier that splits one block request over several frames.

use kernel::{
    alloc::Flags,
    block::mq::{SegRange, Segments},
    net::skbuff::RxSkBuff,
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
    wire::Ata,
    Raoe, //
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
}

/// What a command is for.
pub(crate) enum Job {
    /// ATA IDENTIFY of the device.
    Identify,
    /// A piece of a block request.
    Io { req: Arc<IoReq>, range: SegRange },
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
