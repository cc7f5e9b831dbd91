#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Data through the sample module's /dev/rstorage-sample: what is written
# comes back byte for byte, holes read as zeroes, the capacity is enforced.
. "$(dirname "$0")/lib.sh"

ktap_print_header
ktap_set_plan 4
rstorage_insmod rstorage_sample || { ktap_test_fail "load rstorage_sample"; exit 1; }
ktap_test_pass "load rstorage_sample"

python3 - <<'PY'
import errno, hashlib, os

n = 0
failed = 0

def case(name, ok, info=""):
    global n, failed
    n += 1
    if info:
        print(f"# {info}")
    print(f"{'ok' if ok else 'not ok'} {n + 1} {name}")
    failed += not ok

fd = os.open("/dev/rstorage-sample", os.O_RDWR)
data = os.urandom(1 << 20)
for off in range(0, len(data), 65536):
    os.pwrite(fd, data[off:off + 65536], 4096 + off)
back = b"".join(os.pread(fd, 65536, 4096 + off) for off in range(0, len(data), 65536))
case("1 MiB written in 64 KiB pieces reads back identical",
     hashlib.sha256(back).digest() == hashlib.sha256(data).digest(),
     f"sha256 {hashlib.sha256(data).hexdigest()[:16]} vs {hashlib.sha256(back).hexdigest()[:16]}")
case("hole before the data reads as zeroes", os.pread(fd, 4096, 0) == bytes(4096))
try:
    os.pwrite(fd, b"x", 4 << 20)
    case("write at the capacity fails with EFBIG", False, "write succeeded")
except OSError as e:
    case("write at the capacity fails with EFBIG", e.errno == errno.EFBIG, f"errno {e.errno}")
os.close(fd)
raise SystemExit(1 if failed else 0)
PY
rc=$?
rmmod rstorage_sample || rc=1
exit "$rc"
