// SPDX-License-Identifier: GPL-2.0

//! `/dev/etherd/err`: the driver's error messages for a reader, as the C
//! driver's error device. A read returns one message, oldest first, and blocks
//! until there is one (or fails with `EAGAIN` on an `O_NONBLOCK` file). At most
//! [`MAX_MSGS`] messages wait; newer ones are dropped while the log is full, and
//! counted.

use crate::ring::Ring;
use core::fmt::Write;
use kernel::{
    iov::IovIterDest,
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{
        CondVar,
        SpinLockIrq, //
    },
};

/// Messages kept for readers.
pub(crate) const MAX_MSGS: usize = 64;
/// Longest message, newline included; longer ones are cut.
const MSG_LEN: usize = 96;

/// One message.
struct Msg {
    len: usize,
    text: [u8; MSG_LEN],
}

impl Write for Msg {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // Cut, leaving room for the newline.
        let room = MSG_LEN - 1 - self.len;
        let n = s.len().min(room);
        self.text[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

struct Log {
    msgs: Ring<Msg>,
    dropped: u64,
}

/// The error log.
#[pin_data]
pub(crate) struct ErrLog {
    /// IRQ-safe: messages come from the packet handler (softirq).
    #[pin]
    log: SpinLockIrq<Log>,
    #[pin]
    readable: CondVar,
}

impl ErrLog {
    /// A log with room for [`MAX_MSGS`] messages.
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            log <- new_spinlock_irq!(
                Log {
                    msgs: Ring::with_capacity(MAX_MSGS, GFP_KERNEL)?,
                    dropped: 0,
                },
                "raoe:errlog"
            ),
            readable <- new_condvar!("raoe:errlog"),
        })
    }

    /// Adds a message (any context); a newline is appended.
    pub(crate) fn post(&self, args: core::fmt::Arguments<'_>) {
        let mut m = Msg {
            len: 0,
            text: [0; MSG_LEN],
        };
        let _ = m.write_fmt(args);
        m.text[m.len] = b'\n';
        m.len += 1;
        let mut log = self.log.lock();
        if log.msgs.push(m).is_err() {
            log.dropped += 1;
            return;
        }
        drop(log);
        self.readable.notify_one();
    }

    /// Messages dropped because the log was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.log.lock().dropped
    }

    /// Copies the oldest message to `out`, waiting for one unless `nonblocking`.
    pub(crate) fn read(&self, nonblocking: bool, out: &mut IovIterDest<'_>) -> Result<usize> {
        let mut log = self.log.lock();
        loop {
            if let Some(m) = log.msgs.pop() {
                drop(log);
                return Ok(out.copy_to_iter(&m.text[..m.len]));
            }
            if nonblocking {
                return Err(EAGAIN);
            }
            if self.readable.wait_interruptible(&mut log) {
                return Err(ERESTARTSYS);
            }
        }
    }
}
