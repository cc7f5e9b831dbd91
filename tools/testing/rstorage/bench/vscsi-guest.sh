#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the virtio-scsi benchmark (see bench.sh): the C virtio_scsi
# and rvirtio_scsi with per-target and with mq steering, on the same 8 null-co
# disks of one 2-queue controller; and polled I/O with one of the two queues a
# poll queue (c-poll: virtio_scsi virtscsi_poll_queues=1, rust-poll:
# rvirtio_scsi poll_queues=1). Counts the interrupts of the request
# queues (/proc/interrupts) for every driver alike. The rounds: bench/lib.sh.
#
# Usage: vscsi-guest.sh MODULE_DIR OUTPUT ROUNDS SECONDS KSELFTEST_DIR [PROFILE]
set -u
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
BENCH_DRIVERS=(c rust-per-target rust-mq c-poll rust-poll)
BENCH_WORKLOADS="randread-4k randwrite-4k seqread-128k seqwrite-128k"

bench_workloads() {
	case $1 in
	*-poll) echo pollread-4k ;;
	*) echo "$BENCH_WORKLOADS" ;;
	esac
}
BENCH_TARGETS="1 8"

bench_devs() { # the disks of the 8-target controller, in target order
	local d
	for d in /sys/class/scsi_disk/*; do
		[ -e "$d/device/block" ] && echo "${d##*/} /dev/$(ls "$d/device/block")"
	done | sort -t: -k3,3n | awk '{print $2}'
}

bench_load() {
	case $1 in
	c) modprobe virtio_scsi ;;
	rust-per-target) rstorage_insmod rvirtio_scsi steering=1 ;;
	rust-mq) rstorage_insmod rvirtio_scsi steering=0 ;;
	c-poll) modprobe virtio_scsi virtscsi_poll_queues=1 ;;
	rust-poll) rstorage_insmod rvirtio_scsi steering=0 poll_queues=1 ;;
	esac || return 1
	local i
	for i in $(seq 60); do
		[ "$(bench_devs | wc -l)" -ge 8 ] && return 0
		sleep 0.5
	done
	return 1
}

bench_unload() {
	case $1 in
	c | c-*) rstorage_rmmod virtio_scsi ;;
	*) rstorage_rmmod rvirtio_scsi ;;
	esac
}

bench_events() { # interrupts of all request queues, all CPUs
	awk '/-request/ {for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i} END {print s + 0}' \
		/proc/interrupts
}

modprobe -r virtio_scsi 2>/dev/null
bench_main
