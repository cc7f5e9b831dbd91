#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Check an AoE target's answers to well-formed, wrong and malformed requests.

Usage: aoe_target_probe.py IFACE TARGET_MAC MAJOR MINOR SECTORS MAX_SECTORS NOISE

From IFACE (the initiator side of a link), sends the target at TARGET_MAC
serving MAJOR.MINOR (SECTORS sectors, at most MAX_SECTORS per request):

- requests whose answer is fixed by the protocol, each checked: IDENTIFY
  (LBA48, capacity), a read inside the disk, reads past its end, of 0 sectors
  and of more sectors than a frame carries (ATA aborted), a write with less
  data than its sector count (aborted), an unknown command and an unknown
  protocol version (AoE errors 1 and 5), config read, "set if empty" on a set
  string (AoE error 4), "test exact" with another string (no answer), and a
  request for slot 254, which nobody serves (no answer);
- then NOISE malformed frames (truncated headers, random bytes, responses),
  which must get no answer, followed by an IDENTIFY that must still be
  answered.

Prints one line per check and exits 1 if any failed.
"""

import random
import socket
import struct
import sys
import time

ETH_P_AOE = 0x88A2


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


class Probe:
    def __init__(self, iface, target, major, minor):
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_AOE))
        self.s.bind((iface, ETH_P_AOE))
        self.src = self.s.getsockname()[4][:6]
        self.target, self.major, self.minor = target, major, minor
        self.tag = 0x5000
        self.failed = 0

    def header(self, cmd, verfl=0x10, major=None, minor=None, tag=None):
        if tag is None:
            self.tag += 1
            tag = self.tag
        return tag, (self.target + self.src + struct.pack(">H", ETH_P_AOE)
                     + struct.pack(">BBHBBI", verfl, 0,
                                   self.major if major is None else major,
                                   self.minor if minor is None else minor, cmd, tag))

    def ata(self, cmd, lba, count, ext=True, write=False, data=b"", **kw):
        tag, h = self.header(0, **kw)
        aflags = (0x40 if ext else 0) | (0x01 if write else 0)
        lbab = struct.pack("<Q", lba)[:6]
        return tag, h + struct.pack("<BBBB6sH", aflags, 0, count, cmd, lbab, 0) + data

    def config(self, ccmd, string=b"", **kw):
        tag, h = self.header(1, **kw)
        return tag, h + struct.pack(">HHBBH", 0, 0, 0, 0x10 | ccmd, len(string)) + string

    def send(self, frame):
        if len(frame) < 60:
            frame += bytes(60 - len(frame))
        self.s.send(frame)

    def answer(self, tag, wait=1.0):
        """The response with TAG, or None after WAIT seconds."""
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                f = self.s.recv(16384)
            except socket.timeout:
                return None
            if (len(f) >= 24 and f[0:6] == self.src and f[14] & 0x08
                    and struct.unpack(">I", f[20:24])[0] == tag):
                return f

    def check(self, name, ok):
        print(f"{'ok' if ok else 'FAIL'} {name}")
        if not ok:
            self.failed += 1

    def ask(self, tagged):
        tag, frame = tagged
        self.send(frame)
        return self.answer(tag)


def ata_status(f):
    """(error register, status) of an ATA response."""
    return (f[25], f[27]) if f is not None and len(f) >= 36 else None


def main():
    iface, target, major, minor, sectors, maxs, noise = sys.argv[1:8]
    p = Probe(iface, mac(target), int(major), int(minor))
    sectors, maxs, noise = int(sectors), int(maxs), int(noise)

    f = p.ask(p.ata(0xEC, 0, 1, ext=False))
    ok = f is not None and len(f) >= 36 + 512 and f[27] == 0x40
    if ok:
        word = lambda w: struct.unpack("<H", f[36 + 2 * w:38 + 2 * w])[0]
        ok = bool(word(83) & (1 << 10)) and struct.unpack("<Q", f[36 + 200:36 + 208])[0] == sectors
    p.check("identify: LBA48 and the capacity", ok)

    f = p.ask(p.ata(0x24, sectors - 1, 1))
    p.check("read of the last sector", ata_status(f) == (0, 0x40) and len(f) >= 36 + 512)
    p.check("read past the end is aborted",
            ata_status(p.ask(p.ata(0x24, sectors, 1))) == (0x04, 0x41))
    p.check("read across the end is aborted",
            ata_status(p.ask(p.ata(0x24, sectors - 1, 2))) == (0x04, 0x41))
    p.check("read of 0 sectors is aborted", ata_status(p.ask(p.ata(0x24, 0, 0))) == (0x04, 0x41))
    if maxs < 255:
        p.check("read of more sectors than a frame carries is aborted",
                ata_status(p.ask(p.ata(0x24, 0, maxs + 1))) == (0x04, 0x41))
    p.check("write with less data than its count is aborted",
            ata_status(p.ask(p.ata(0x34, 0, 2, write=True, data=bytes(512)))) == (0x04, 0x41))
    p.check("unknown ATA command is aborted", ata_status(p.ask(p.ata(0x99, 0, 1))) == (0x04, 0x41))

    tag, h = p.header(7)
    f = p.ask((tag, h + bytes(12)))
    p.check("unknown AoE command: error 1", f is not None and f[14] & 0x04 and f[15] == 1)
    tag, h = p.header(0, verfl=0x20)
    f = p.ask((tag, h + bytes(12)))
    p.check("unknown protocol version: error 5", f is not None and f[14] & 0x04 and f[15] == 5)

    f = p.ask(p.config(4, b"probe-config"))
    p.check("config force set", f is not None and f[32:44] == b"probe-config")
    f = p.ask(p.config(0))
    ok = f is not None and struct.unpack(">H", f[30:32])[0] == 12 and f[28] == maxs
    p.check("config read: the string and the sectors per frame", ok)
    f = p.ask(p.config(3, b"other"))
    p.check("config set-if-empty on a set string: error 4",
            f is not None and f[14] & 0x04 and f[15] == 4)
    p.check("config test-exact with another string: no answer", p.ask(p.config(1, b"nope")) is None)
    p.check("request for a slot nobody serves: no answer",
            p.ask(p.ata(0xEC, 0, 1, minor=254)) is None)

    rnd = random.Random(0xA0E7)
    kinds = [
        lambda: p.header(0)[1][: rnd.randrange(14, 24)],           # cut in the AoE header
        lambda: p.ata(0x24, 0, 1)[1][: rnd.randrange(24, 36)],      # cut in the ATA header
        lambda: p.config(0)[1][: rnd.randrange(24, 32)],            # cut in the config header
        lambda: p.config(0, b"abc")[1][:-2],                        # string longer than the frame
        lambda: p.config(9)[1],                                     # unknown config command
        lambda: p.ata(0x24, 0, 1, verfl=0x18)[1],                   # a response
        lambda: (p.target + p.src + struct.pack(">H", ETH_P_AOE)
                 + rnd.randbytes(rnd.randrange(0, 1400))),
    ]
    quiet = True
    for i in range(noise):
        # Not padded: a short frame stays short on a veth link.
        p.s.send(kinds[i % len(kinds)]())
    # Malformed frames get no answer; the generated tags are below the ones asked next.
    end = time.monotonic() + 1.0
    p.s.settimeout(0.2)
    while time.monotonic() < end:
        try:
            f = p.s.recv(16384)
        except socket.timeout:
            continue
        if (f[0:6] == p.src and f[14] & 0x08 and f[14] & 0x04 == 0 and f[19] == 0
                and f[27] == 0x40 and len(f) > 36):
            quiet = False
    p.check(f"{noise} malformed frames: no data answered", quiet)
    f = p.ask(p.ata(0xEC, 0, 1))
    p.check("identify answered after the noise", ata_status(f) == (0, 0x40))
    sys.exit(1 if p.failed else 0)


if __name__ == "__main__":
    main()
