#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the iSER benchmark (see iser.sh): rdma_rxe on a veth pair,
# LIO with a 128 MiB ramdisk LUN and an iSER portal, open-iscsi with ib_iser.
# Alternates C ib_isert, risert, risert with budget=0 and risert in its
# adaptive completion mode (busy-polled completion queues, poll_idle_us=500),
# round after round, and writes one JSON line per run, with the completion
# queue events of the target's queues per I/O. The rdma_core:cq_schedule
# tracepoint that counts ib_isert's events is on during every run, whichever
# the driver, so that its cost (the initiator's queues fire it too) is the
# same for all.
#
# With PROFILE=1, each run is also sampled with `perf record -a -e cpu-clock`
# and the top of its profile (by symbol, then by module) is written next to
# OUTPUT as profile-DRIVER-WORKLOAD-rROUND.txt.
#
# Usage: iser-guest.sh MODULE_DIR OUTPUT ROUNDS SECONDS KSELFTEST_DIR [PROFILE]
#   KSELFTEST_DIR  the installed kselftest target: the iSER set-up and the
#                  module helpers are the selftests' (iser_lib.sh, lib.sh)
set -u
moddir=$1 out=$2 rounds=$3 secs=$4 ksft=$5 profile=${6:-0}
export RSTORAGE_MODDIR=$moddir
iser_iqn=iqn.2026-11.org.rstorage:bench
# shellcheck source=../../selftests/drivers/rstorage/lib.sh
. "$ksft/drivers/rstorage/lib.sh"
# shellcheck source=../../selftests/drivers/rstorage/iser_lib.sh
. "$ksft/drivers/rstorage/iser_lib.sh"
np=$iser_np
tr=/sys/kernel/tracing
work=/tmp/iser-bench
: >"$out"
mkdir -p "$work"
: >"$work/c-cqs"

iser_rxe_up && iser_lio_up 32768 && iser_initiator_up || { echo "iSER set-up failed"; exit 1; }
mountpoint -q "$tr" || mount -t tracefs nodev "$tr"
echo 16384 >"$tr/buffer_size_kb"
# The target's iscsi_np thread loads ib_isert itself when a portal enables
# iser; only this script decides which transport is loaded.
iser_autoload off

load() {
	case $1 in
	c) iser_autoload on
	   modprobe ib_isert
	   iser_autoload off
	   : >"$tr/trace"
	   echo 1 >"$tr/events/rdma_core/cq_alloc/enable"
	   echo 1 >"$tr/tracing_on" ;;
	rust) rstorage_insmod risert ;;
	rust-nobatch) rstorage_insmod risert budget=0 ;;
	rust-adaptive) rstorage_insmod risert poll_idle_us=500 ;;
	esac || return 1
	echo 1 >"$np/iser" && iser_login && iser_disks 1 || return 1
	dev=${DISKS[0]}
	if [ "$1" = c ]; then
		echo 0 >"$tr/tracing_on"
		echo 0 >"$tr/events/rdma_core/cq_alloc/enable"
		sed -n 's/.*cq_alloc: cq.id=\([0-9]*\) .*poll_ctx=WORKQUEUE.*/\1/p' "$tr/trace" >>"$work/c-cqs"
	fi
}

unload() {
	iser_logout
	echo 0 >"$np/iser"
	case $1 in
	c) rstorage_rmmod ib_isert ;;
	*) rstorage_rmmod risert ;;
	esac
}

# Completion queue events of the target so far: risert counts its own; for
# ib_isert, the rdma_core:cq_schedule events of its CQs, which come from the
# RDMA core's CQ pool (polled from a workqueue) and were recorded by their
# cq_alloc events when the first ib_isert connection created the pool (the
# initiator's CQs are polled in softirq context).
events() {
	case $1 in
	c) local ids
	   ids=$(paste -sd'|' "$work/c-cqs" 2>/dev/null)
	   [ -n "$ids" ] || { echo 0; return; }
	   grep -cE "cq_schedule: cq.id=($ids)\$" "$tr/trace" ;;
	*) awk '$1 == "cq_events" { print $2 }' /sys/kernel/debug/risert/stats ;;
	esac
}

run() { # DRIVER ROUND WORKLOAD
	local drv=$1 round=$2 wl=$3 rw e0 e1
	case $wl in
	randread-4k) rw=randread ;;
	randwrite-4k) rw=randwrite ;;
	esac
	echo 0 >"$tr/tracing_on"
	: >"$tr/trace"
	echo 1 >"$tr/events/rdma_core/cq_schedule/enable"
	echo 1 >"$tr/tracing_on"
	e0=$(events "$drv")
	local perf=()
	[ "$profile" = 1 ] && perf=(perf record -q -a -e cpu-clock -o "$work/perf.data" --)
	"${perf[@]}" fio --output-format=json --name=b --filename="/dev/$dev" --ioengine=libaio --direct=1 \
		--iodepth=16 --rw="$rw" --bs=4k --size=120m --time_based --runtime="$secs" \
		--group_reporting >/tmp/bench.json 2>/dev/null || return 1
	e1=$(events "$drv")
	if [ "$profile" = 1 ]; then
		local p
		p=$(dirname "$out")/profile-$drv-$wl-r$round.txt
		{ perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null |
			grep -v '^#' | grep -v '^$' | head -15
		  echo
		  perf report -i "$work/perf.data" --no-children --sort sym --stdio 2>/dev/null |
			grep -v '^#' | grep -v '^$' | head -60; } >"$p"
	fi
	echo 0 >"$tr/tracing_on"
	echo 0 >"$tr/events/rdma_core/cq_schedule/enable"
	python3 - "$drv" "$round" "$wl" "$((e1 - e0))" >>"$out" <<'PY'
import json, sys
drv, rnd, wl, ev = sys.argv[1:]
job = json.load(open("/tmp/bench.json"))["jobs"][0]
j = job["read"] if wl.startswith("randread") else job["write"]
print(json.dumps({"driver": drv, "round": int(rnd), "workload": wl, "targets": 1,
                  "iops": j["iops"], "bw_kib": j["bw"], "ios": j["total_ios"],
                  "irqs_per_io": int(ev) / max(1, j["total_ios"])}))
PY
}

drivers=(c rust rust-nobatch rust-adaptive)
n=${#drivers[@]}
for r in $(seq "$rounds"); do
	# Rotate the order every round, so no driver always runs first.
	for k in $(seq 0 $((n - 1))); do
		drv=${drivers[$(((k + r) % n))]}
		load "$drv" || { echo "load $drv failed"; exit 1; }
		for wl in randread-4k randwrite-4k; do
			run "$drv" "$r" "$wl" || echo "run $drv $wl failed"
		done
		unload "$drv" || { echo "unload $drv failed"; exit 1; }
		echo "round $r: $drv done"
	done
done
iser_autoload on
