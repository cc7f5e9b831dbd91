// SPDX-License-Identifier: GPL-2.0

//! Reception: the AoE packet handler (softirq context).
//!
//! It parses a frame's headers once, matches a response to its frame under
//! the device's lock, and queues it, data untouched, to the device's
//! completion thread. Config responses go to the transmit thread, which
//! creates devices and paths.

use kernel::{
    net::{
        netdevice::{NetDevice, PacketHandler},
        skbuff::RxSkBuff,
    },
    sync::{aref::ARef, Arc},
};

use crate::{
    aoe::Aoe,
    compl::Done,
    frame::tag_frame,
    wire::{self, Addr, Mac, Response},
};

/// A config response, handed from the packet handler to the transmit thread.
pub(crate) struct CfgMsg {
    pub(crate) addr: Addr,
    pub(crate) mac: [u8; wire::ETH_ALEN],
    pub(crate) ifp: ARef<NetDevice>,
    pub(crate) bufcnt: u16,
    pub(crate) fwver: u16,
    pub(crate) scnt: u8,
}

/// Reads the headers of a received frame into a buffer (the data stays in the
/// socket buffer); returns the buffer and how many bytes it holds.
pub(crate) fn frame_head(skb: &RxSkBuff) -> ([u8; wire::HEAD_LEN], usize) {
    let mut head = [0u8; wire::HEAD_LEN];
    let n = skb.len().min(wire::HEAD_LEN);
    // Cannot fail: the frame has `n` bytes.
    let _ = skb.read(0, &mut head[..n]);
    (head, n)
}

/// The packet handler.
pub(crate) struct Rx {
    pub(crate) aoe: Arc<Aoe>,
}

impl PacketHandler for Rx {
    fn receive(&self, ifp: &NetDevice, skb: RxSkBuff) {
        let aoe = &self.aoe;
        if !ifp.in_init_net() || !aoe.ifs.allows(ifp) {
            return;
        }
        let (head, n) = frame_head(&skb);
        let rsp = match wire::parse(&head[..n]) {
            Ok(r) => r,
            Err(r) => {
                aoe.rx.reject(r);
                return;
            }
        };
        match rsp {
            Response::Cfg {
                addr,
                src,
                bufcnt,
                fwver,
                scnt,
            } => {
                aoe.rx.cfg.inc();
                let m = CfgMsg {
                    addr,
                    mac: src,
                    ifp: ifp.into(),
                    bufcnt,
                    fwver,
                    scnt,
                };
                if aoe.tx.st.lock().cfg.push(m).is_err() {
                    aoe.rx.dropped.inc();
                }
                aoe.tx.kick();
            }
            Response::Ata {
                addr, src, tag, ok, ..
            } => {
                let Some(dev) = aoe.find(addr) else {
                    aoe.rx.unknown_dev.inc();
                    return;
                };
                let frame = tag_frame(tag);
                {
                    let mut st = dev.st.lock();
                    let cmd = st.frames.get_mut(frame).and_then(|f| f.waiting());
                    let matched =
                        cmd.map(|c| (c.tag == tag).then_some((c.path, c.sent, c.retries)));
                    let hit = matched
                        .flatten()
                        .filter(|(path, ..)| st.path(*path).map(|p| p.mac) == Some(src));
                    let Some((path, sent, retries)) = hit else {
                        dev.stats.unexpected.inc();
                        aoe.err.post(format_args!(
                            "{:>15} e{}.{} tag={:08x} s={}",
                            "unexpected rsp",
                            addr.major,
                            addr.minor,
                            tag,
                            Mac(&src)
                        ));
                        return;
                    };
                    st.frames[frame].answer();
                    st.on_response(path, sent, retries == 0);
                }
                let c = &aoe.compl[dev.compl];
                let pushed = {
                    let mut q = c.q.lock();
                    let was_empty = q.items.is_empty();
                    q.items
                        .push(Done {
                            dev,
                            frame,
                            ok,
                            skb,
                        })
                        .map(|()| was_empty)
                };
                match pushed {
                    // Only the first response into an empty queue wakes the
                    // thread: it sleeps only after finding the queue empty
                    // under the lock, and it drains the whole queue before
                    // it looks again.
                    Ok(true) => c.wait.notify_one(),
                    Ok(false) => {}
                    Err(d) => {
                        // Cannot happen: every frame has a reserved slot. Let
                        // retransmission recover.
                        d.dev.st.lock().frames[frame].unanswer();
                        aoe.rx.dropped.inc();
                    }
                }
            }
        }
    }
}
