#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the virtio-scsi benchmark (see vscsi.sh): alternates the C
# virtio_scsi and rvirtio_scsi (per-target and mq steering) on the same disks,
# round after round, and writes one JSON line per run.
#
# Usage: vscsi-guest.sh MODULE_DIR OUTPUT ROUNDS SECONDS KSELFTEST_DIR
#   KSELFTEST_DIR  the installed kselftest target, whose module helpers
#                  (lib.sh) this uses
set -u
moddir=$1 out=$2 rounds=$3 secs=$4 ksft=$5
export RSTORAGE_MODDIR=$moddir
# shellcheck source=../../selftests/drivers/rstorage/lib.sh
. "$ksft/drivers/rstorage/lib.sh"
: >"$out"

disks() { # the disks of the 8-target controller, target order
	local d
	for d in /sys/class/scsi_disk/*; do
		[ -e "$d/device/block" ] && echo "${d##*/} $(ls "$d/device/block")"
	done | sort -t: -k3,3n | awk '{print $2}'
}

load() {
	case $1 in
	c) modprobe virtio_scsi ;;
	rust-per-target) rstorage_insmod rvirtio_scsi steering=1 ;;
	rust-mq) rstorage_insmod rvirtio_scsi steering=0 ;;
	esac
	local i
	for i in $(seq 60); do
		[ "$(disks | wc -l)" -ge 8 ] && return 0
		sleep 0.5
	done
	return 1
}

unload() {
	case $1 in
	c) rstorage_rmmod virtio_scsi ;;
	*) rstorage_rmmod rvirtio_scsi ;;
	esac
}

irqs() { # interrupts of all request queues, all CPUs
	awk '/-request/ {for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i} END {print s + 0}' \
		/proc/interrupts
}

run() { # DRIVER ROUND WORKLOAD TARGETS
	local drv=$1 round=$2 wl=$3 nt=$4 args=() d rw bs before after
	case $wl in
	randread-4k) rw=randread bs=4k ;;
	seqread-128k) rw=read bs=128k ;;
	esac
	for d in $(disks | head -n "$nt"); do
		args+=(--name="$d" --filename="/dev/$d")
	done
	before=$(irqs)
	fio --output-format=json --ioengine=libaio --direct=1 --iodepth=16 --rw="$rw" --bs="$bs" \
		--time_based --runtime="$secs" --ramp_time=1 --group_reporting "${args[@]}" \
		>/tmp/bench.json 2>/dev/null || return 1
	after=$(irqs)
	python3 - "$drv" "$round" "$wl" "$nt" "$((after - before))" >>"$out" <<'PY'
import json, sys
drv, rnd, wl, nt, irqs = sys.argv[1:]
j = json.load(open("/tmp/bench.json"))["jobs"][0]["read"]
ios = j["total_ios"]
print(json.dumps({"driver": drv, "round": int(rnd), "workload": wl, "targets": int(nt),
                  "iops": j["iops"], "bw_kib": j["bw"], "ios": ios,
                  "irqs_per_io": int(irqs) / ios if ios else None}))
PY
}

drivers=(c rust-per-target rust-mq)
modprobe -r virtio_scsi 2>/dev/null
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
