#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Send malformed, truncated, oversized and unexpected AoE frames.

Usage: aoe_inject.py IFACE DST_MAC SRC_MAC COUNT MAJOR MINOR

Frames go out of IFACE (the target side of a veth pair) to DST_MAC, posing as
the target SRC_MAC that serves MAJOR.MINOR. Kinds, in rotation:

- truncated frames (shorter than the AoE or ATA header),
- oversized frames (jumbo payload on a read response),
- wrong version / not a response / AoE error flag / unknown command,
- ATA responses with random tags for the real target (stale or unknown),
- ATA responses for unknown and wildcard shelf.slot addresses,
- config responses for the wildcard address (a valid one would add a path),
- random bytes with the AoE EtherType.

Prints the number of frames sent.
"""

import os
import random
import socket
import struct
import sys

ETH_P_AOE = 0x88A2


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


def main():
    iface, dst, src, count, major, minor = sys.argv[1:7]
    dst, src, count, major, minor = mac(dst), mac(src), int(count), int(major), int(minor)
    rnd = random.Random(0xA0E)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    eth = dst + src + struct.pack(">H", ETH_P_AOE)

    def aoe(verfl=0x18, err=0, maj=major, mnr=minor, cmd=0, tag=None):
        if tag is None:
            tag = rnd.getrandbits(32)
        return eth + struct.pack(">BBHBBI", verfl, err, maj, mnr, cmd, tag)

    def ata(status=0x40, scnt=1):
        return struct.pack("<BBBB6sH", 0, 0, scnt, status, bytes(6), 0)

    kinds = [
        # truncated AoE header
        lambda: eth + os.urandom(rnd.randrange(0, 10)),
        # cut inside the header
        lambda: aoe()[: rnd.randrange(14, 24)],
        # cut inside the ATA header
        lambda: aoe() + ata()[: rnd.randrange(0, 12)],
        # odd-sized read data
        lambda: aoe() + ata() + os.urandom(rnd.choice([1, 511, 513, 1400])),
        # oversized
        lambda: aoe() + ata() + os.urandom(8000),
        # unknown version
        lambda: aoe(verfl=0x28) + ata(),
        # request, not response
        lambda: aoe(verfl=0x10) + ata(),
        # AoE error
        lambda: aoe(verfl=0x1C, err=rnd.randrange(1, 7)) + ata(),
        # unknown command
        lambda: aoe(cmd=rnd.randrange(2, 256)) + ata(),
        # plausible tag, ATA error
        lambda: aoe(tag=rnd.randrange(0, 64)) + ata(status=0x51) + bytes(512),
        lambda: aoe(maj=rnd.randrange(0, 0xFFFF), mnr=rnd.randrange(0, 255)) + ata() + bytes(512),
        # wildcard address
        lambda: aoe(maj=0xFFFF, mnr=0xFF) + ata(),
        lambda: (aoe(maj=0xFFFF, cmd=1)
                 + struct.pack(">HHBBH", rnd.choice([0, 1, 0xFFFF]), 0x4019, 2, 0x10, 0)),
        # short config response
        lambda: aoe(cmd=1)[: rnd.randrange(24, 31)],
        # noise
        lambda: eth + os.urandom(rnd.randrange(10, 1500)),
    ]
    sent = 0
    for i in range(count):
        frame = kinds[i % len(kinds)]()
        if len(frame) < 60 and i % 3:
            frame += bytes(60 - len(frame))  # Ethernet minimum, sometimes
        try:
            s.send(frame)
            sent += 1
        except OSError:
            pass  # oversized for the link MTU: dropped by the sender
    print(sent)


if __name__ == "__main__":
    main()
