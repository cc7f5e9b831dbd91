#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the AoE benchmark (see aoe.sh): 8 vblade targets on tmpfs
# behind a veth pair; alternates the C aoe, raoe and raoe with one completion
# thread, round after round, and writes one JSON line per run.
#
# Usage: aoe-guest.sh MODULE_DIR OUTPUT ROUNDS SECONDS KSELFTEST_DIR
#   KSELFTEST_DIR  the installed kselftest target, whose module helpers
#                  (lib.sh) this uses
set -u
moddir=$1 out=$2 rounds=$3 secs=$4 ksft=$5
export RSTORAGE_MODDIR=$moddir
# shellcheck source=../../selftests/drivers/rstorage/lib.sh
. "$ksft/drivers/rstorage/lib.sh"
work=/tmp/aoe-bench
: >"$out"

mkdir -p "$work"
mount -t tmpfs -o size=600m bench "$work"
ip link add aoe0 type veth peer name aoe1
ip link set aoe0 up
ip link set aoe1 up
for t in 0 1 2 3 4 5 6 7; do
	dd if=/dev/urandom of="$work/t$t" bs=1M count=64 2>/dev/null
	vblade 0 "$t" aoe1 "$work/t$t" >/dev/null 2>&1 &
done

devs() { ls -d /sys/block/etherd\!e0.* 2>/dev/null | sed 's/.*!//' | sort -t. -k2,2n; }

load() {
	case $1 in
	c) modprobe aoe aoe_iflist=aoe0 ;;
	rust) rstorage_insmod raoe && aoe-interfaces aoe0 ;;
	rust-1thread) rstorage_insmod raoe single_thread=1 && aoe-interfaces aoe0 ;;
	esac
	local i
	for i in $(seq 120); do
		[ $((i % 10)) = 1 ] && echo >/dev/etherd/discover
		[ "$(devs | wc -l)" -ge 8 ] && [ "$(for d in $(devs); do cat "/sys/block/etherd!$d/size"; done | grep -cv '^0$')" -ge 8 ] && return 0
		sleep 0.5
	done
	return 1
}

unload() {
	case $1 in
	c) rstorage_rmmod aoe ;;
	*) rstorage_rmmod raoe ;;
	esac
}

run() { # DRIVER ROUND WORKLOAD TARGETS
	local drv=$1 round=$2 wl=$3 nt=$4 args=() d rw bs
	case $wl in
	randread-4k) rw=randread bs=4k ;;
	seqread-128k) rw=read bs=128k ;;
	esac
	for d in $(devs | head -n "$nt"); do
		args+=(--name="$d" --filename="/dev/etherd/$d")
	done
	fio --output-format=json --ioengine=libaio --direct=1 --iodepth=16 --rw="$rw" --bs="$bs" \
		--time_based --runtime="$secs" --ramp_time=1 --group_reporting "${args[@]}" \
		>/tmp/bench.json 2>/dev/null || return 1
	python3 - "$drv" "$round" "$wl" "$nt" >>"$out" <<'PY'
import json, sys
drv, rnd, wl, nt = sys.argv[1:]
j = json.load(open("/tmp/bench.json"))["jobs"][0]["read"]
print(json.dumps({"driver": drv, "round": int(rnd), "workload": wl, "targets": int(nt),
                  "iops": j["iops"], "bw_kib": j["bw"], "ios": j["total_ios"],
                  "irqs_per_io": None}))
PY
}

drivers=(c rust rust-1thread)
for r in $(seq "$rounds"); do
	# Rotate the order every round, so no driver always runs first.
	for k in 0 1 2; do
		drv=${drivers[$(((k + r) % 3))]}
		load "$drv" || { echo "load $drv failed"; exit 1; }
		for wl in randread-4k seqread-128k; do
			for nt in 1 8; do
				run "$drv" "$r" "$wl" "$nt" || echo "run $drv $wl $nt failed"
			done
		done
		unload "$drv" || { echo "unload $drv failed"; exit 1; }
		echo "round $r: $drv done"
	done
done
