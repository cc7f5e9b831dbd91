#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Submits COUNT adjacent O_DIRECT reads of BS bytes from OFFSET of DEV in one
io_submit() call (Linux AIO, so the block layer can merge them into one
request), and prints each read's result: bytes read, or -errno.

aio_read.py DEV OFFSET COUNT BS
"""

import ctypes
import mmap
import os
import struct
import sys

# x86_64 system call numbers.
SYS_IO_SETUP, SYS_IO_DESTROY, SYS_IO_GETEVENTS, SYS_IO_SUBMIT = 206, 207, 208, 209
IOCB_CMD_PREAD = 0

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def syscall(*args):
    r = libc.syscall(*args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def main():
    dev, offset, count, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, count * bs)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    ctx = ctypes.c_ulong(0)
    syscall(SYS_IO_SETUP, count, ctypes.byref(ctx))
    # struct iocb: data, key, rw_flags, opcode, reqprio, fildes, buf, nbytes,
    # offset, reserved2, flags, resfd (64 bytes).
    iocbs = [ctypes.create_string_buffer(struct.pack(
        "<QIIHhIQQqQII", i, 0, 0, IOCB_CMD_PREAD, 0, fd, base + i * bs, bs,
        offset + i * bs, 0, 0, 0)) for i in range(count)]
    ptrs = (ctypes.c_void_p * count)(*[ctypes.addressof(c) for c in iocbs])
    n = syscall(SYS_IO_SUBMIT, ctx, count, ptrs)
    if n != count:
        print(f"submitted {n} of {count}")
        return 1
    events = ctypes.create_string_buffer(32 * count)
    got = 0
    results = [None] * count
    while got < count:
        k = syscall(SYS_IO_GETEVENTS, ctx, 1, count - got,
                    ctypes.byref(events, 32 * got), None)
        got += k
    for i in range(count):
        data, _obj, res, _res2 = struct.unpack_from("<QQqq", events, 32 * i)
        results[data] = res
    syscall(SYS_IO_DESTROY, ctx)
    os.close(fd)
    print(" ".join(str(r) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
