#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""HDIO_GETGEO and HDIO_GET_IDENTITY on an AoE disk.

hdio.py show DEV
    prints "geo HEADS SECTORS CYLINDERS capacity N ident SHA256" (capacity
    from IDENTIFY words 100-103 or 60-61), exits 1 if an ioctl fails.
hdio.py flushed DEV NAME
    opens DEV, runs aoe-flush NAME while it is open, and expects both ioctls
    to fail with ENODEV on the still-open file; exits 1 otherwise.
"""

import errno
import fcntl
import hashlib
import os
import struct
import subprocess
import sys

HDIO_GETGEO = 0x0301
HDIO_GET_IDENTITY = 0x030D


def geo(fd):
    # struct hd_geometry: heads, sectors, cylinders, (padding), start.
    b = fcntl.ioctl(fd, HDIO_GETGEO, bytes(16))
    return struct.unpack_from("BBH", b)


def ident(fd):
    return fcntl.ioctl(fd, HDIO_GET_IDENTITY, bytes(512))


def capacity(id_):
    w = struct.unpack("<256H", id_)
    if (w[83] | w[86]) & (1 << 10):
        return w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48
    return w[60] | w[61] << 16


def errno_of(f):
    try:
        f()
    except OSError as e:
        return e.errno
    return 0


def main():
    mode, dev = sys.argv[1], sys.argv[2]
    fd = os.open(dev, os.O_RDONLY)
    try:
        if mode == "show":
            h, s, c = geo(fd)
            id_ = ident(fd)
            print(f"geo {h} {s} {c} capacity {capacity(id_)} "
                  f"ident {hashlib.sha256(id_).hexdigest()[:16]}")
            return 0
        subprocess.run(["aoe-flush", sys.argv[3]], check=True)
        g = errno_of(lambda: geo(fd))
        i = errno_of(lambda: ident(fd))
        print(f"after flush: HDIO_GETGEO errno {g}, HDIO_GET_IDENTITY errno {i}")
        return 0 if g == i == errno.ENODEV else 1
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
