#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the AoE benchmark (see bench.sh): 8 targets on tmpfs behind a
# veth pair, served by raoe_target (the in-kernel target; BENCH_AOE_TARGET=
# vblade for Debian's user-space one); the C aoe, raoe and raoe with one
# completion thread,
# each allowed the same number of frames in flight per target (aoe_maxout,
# BENCH_AOE_MAXOUT, default 16; both drivers default to 64). No
# interrupts to count (the veth pair has none). The rounds: bench/lib.sh.
#
# Usage: aoe-guest.sh MODULE_DIR OUTPUT ROUNDS SECONDS KSELFTEST_DIR [PROFILE]
set -u
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
BENCH_DRIVERS=(c rust rust-1thread)
BENCH_WORKLOADS="randread-4k randwrite-4k seqread-128k seqwrite-128k"
BENCH_TARGETS="1 8"
maxout=${BENCH_AOE_MAXOUT:-16}

bench_devs() { aoe_devs | sed 's|^|/dev/etherd/|'; }

# The in-kernel target's ATA commands served (reads and writes: one per frame,
# retransmissions included) and requests dropped, over all its disks. With
# vblade: none.
bench_target() {
	[ "${BENCH_AOE_TARGET:-kernel}" = vblade ] && return
	cat /sys/kernel/config/raoe_target/*/stats |
		awk '$1 == "reads" || $1 == "writes" {c += $2} $1 == "dropped" {d += $2} END {print c + 0, d + 0}'
}

bench_load() {
	case $1 in
	c) aoe_load c aoe_maxout="$maxout" ;;
	rust) aoe_load rust aoe_maxout="$maxout" ;;
	rust-1thread) aoe_load rust aoe_maxout="$maxout" single_thread=1 ;;
	esac && aoe_wait_devs 8
}

bench_unload() {
	case $1 in
	c) aoe_unload c ;;
	*) aoe_unload rust ;;
	esac
}

mount -t tmpfs -o size=600m bench "$bench_work"
aoe_veth_up
for t in 0 1 2 3 4 5 6 7; do
	dd if=/dev/urandom of="$bench_work/t$t" bs=1M count=64 2>/dev/null
	case ${BENCH_AOE_TARGET:-kernel} in
	vblade) aoe_target "$t" "$bench_work/t$t" ;;
	*) aoe_ktarget "$t" "$bench_work/t$t" || { echo "raoe_target: e0.$t failed"; exit 1; } ;;
	esac
done
bench_main
