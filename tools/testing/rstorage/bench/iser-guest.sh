#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the iSER benchmark (see bench.sh): rdma_rxe on a veth pair,
# LIO with a 128 MiB ramdisk LUN and an iSER portal, open-iscsi with ib_iser
# (the selftests' iser_lib.sh), two sessions (two connections) at queue
# depth 32. The C ib_isert, risert (budget 16, one SCSI response in 16
# signaled), risert with every send signaled (signal_every=1), risert with
# budget=0 and risert in its adaptive completion mode (busy-polled completion
# queues, poll_idle_us=500). The rounds: bench/lib.sh.
#
# Completion-queue events of the target's queues: the rdma_core:cq_schedule
# tracepoint is on during every run, whichever the driver, so that its cost
# (the initiator's queues fire it too) is the same for all. ib_isert's events
# are the tracepoint's events of its queues (the RDMA core's CQ pool, polled
# from a workqueue, recorded by their cq_alloc events when its first
# connection created the pool); risert's queues are not the core's, and it
# counts the calls of its completion handler itself (debugfs cq_events): the
# same event, one per completion-handler call, counted at two places.
#
# Usage: iser-guest.sh MODULE_DIR OUTPUT ROUNDS SECONDS KSELFTEST_DIR [PROFILE]
set -u
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
BENCH_DRIVERS=(c rust rust-signal-all rust-nobatch rust-adaptive)
BENCH_WORKLOADS="randread-4k randwrite-4k seqread-64k seqwrite-64k"
# Two sessions to the target (two connections, two disks of the same LUN),
# fio at queue depth 32 on each disk.
BENCH_SESSIONS=${BENCH_SESSIONS:-2}
BENCH_TARGETS=$BENCH_SESSIONS
BENCH_IODEPTH=32
tr=/sys/kernel/tracing
: >"$bench_work/c-cqs"

bench_devs() { local d; for d in "${DISKS[@]}"; do echo "/dev/$d"; done; }

bench_load() {
	case $1 in
	c) iser_autoload on
	   modprobe ib_isert
	   iser_autoload off
	   : >"$tr/trace"
	   echo 1 >"$tr/events/rdma_core/cq_alloc/enable"
	   echo 1 >"$tr/tracing_on" ;;
	rust) rstorage_insmod risert ;;
	rust-signal-all) rstorage_insmod risert signal_every=1 ;;
	rust-nobatch) rstorage_insmod risert budget=0 ;;
	rust-adaptive) rstorage_insmod risert poll_idle_us=500 ;;
	esac || return 1
	echo 1 >"$iser_np/iser" && iser_login "$BENCH_SESSIONS" && iser_disks "$BENCH_SESSIONS" ||
		return 1
	if [ "$1" = c ]; then
		echo 0 >"$tr/tracing_on"
		echo 0 >"$tr/events/rdma_core/cq_alloc/enable"
		sed -n 's/.*cq_alloc: cq.id=\([0-9]*\) .*poll_ctx=WORKQUEUE.*/\1/p' "$tr/trace" >>"$bench_work/c-cqs"
	fi
}

bench_unload() {
	iser_logout
	DISKS=()
	echo 0 >"$iser_np/iser"
	case $1 in
	c) rstorage_rmmod ib_isert ;;
	*) rstorage_rmmod risert ;;
	esac
}

bench_run_begin() {
	echo 0 >"$tr/tracing_on"
	: >"$tr/trace"
	echo 1 >"$tr/events/rdma_core/cq_schedule/enable"
	echo 1 >"$tr/tracing_on"
}

bench_run_end() {
	echo 0 >"$tr/tracing_on"
	echo 0 >"$tr/events/rdma_core/cq_schedule/enable"
	# risert's counters after each run (cumulative while the module stays
	# loaded), for reading where its completion events come from.
	[ "$1" = c ] || { echo "== $1"; cat /sys/kernel/debug/risert/stats; } \
		>>"$(dirname "$bench_out")/risert-stats.txt"
}

bench_events() {
	case $1 in
	c) local ids
	   ids=$(paste -sd'|' "$bench_work/c-cqs")
	   [ -n "$ids" ] || { echo 0; return; }
	   grep -cE "cq_schedule: cq.id=($ids)\$" "$tr/trace" ;;
	*) awk '$1 == "cq_events" { print $2 }' /sys/kernel/debug/risert/stats ;;
	esac
}

iser_rxe_up && iser_lio_up 32768 && iser_initiator_up || { echo "iSER set-up failed"; exit 1; }
mountpoint -q "$tr" || mount -t tracefs nodev "$tr"
echo 16384 >"$tr/buffer_size_kb"
# The target's iscsi_np thread loads ib_isert itself when a portal enables
# iser; only this script decides which transport is loaded.
iser_autoload off
bench_main
rc=$?
iser_autoload on
exit "$rc"
