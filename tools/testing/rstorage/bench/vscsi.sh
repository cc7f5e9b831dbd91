#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Benchmark: C virtio_scsi vs rvirtio_scsi (per-target and mq steering) in one
# VM boot of the release kernel, on QEMU null-co disks (one controller, 2
# request queues, 8 targets), 4 KiB random read and 128 KiB sequential read on
# 1 and 8 targets, drivers alternating round by round. Writes the table and
# the plot into Documentation/rstorage/ (see report.py).
#
# Usage: vscsi.sh KERNEL_OBJ MODULE_DIR RESULTS_DIR
# Environment: BENCH_ROUNDS (default 6, a full rotation of the 3 drivers twice),
# BENCH_SECONDS per run (default 5).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../../../.." && pwd)
. "$here/../common.sh"
rstorage_dirs "$1" "$2" "$3" || exit 1
rounds=${BENCH_ROUNDS:-6}
secs=${BENCH_SECONDS:-5}

opts=(-device virtio-scsi-pci,id=bench,num_queues=2)
for t in 0 1 2 3 4 5 6 7; do
	opts+=(-drive "driver=null-co,size=4G,read-zeroes=on,if=none,id=null$t"
		-device "scsi-hd,drive=null$t,bus=bench.0,scsi-id=$t,lun=0")
done
echo "[bench] $rounds rounds x 3 drivers x 4 workloads x ${secs}s (log: $results/bench-vscsi.console)"
rstorage_kselftest_install "$(readlink -f "$obj/source")" "$results" ||
	{ echo "[bench] kselftest install failed (see $results/kselftest-install.log)"; exit 1; }
python3 "$here/../vm.py" --kernel "$obj" --log "$results/bench-vscsi.console" --cpus 2 \
	--rwdir "$results" --timeout 7200 --append "modprobe.blacklist=virtio_scsi" \
	"--qemu-opts=${opts[*]}" --show-output -- \
	bash "$here/vscsi-guest.sh" "$moddir" "$results/bench-vscsi.jsonl" "$rounds" "$secs" "$results/kselftest"
"$(rstorage_plot_python)" "$here/report.py" "$results/bench-vscsi.jsonl" \
	"$project/Documentation/rstorage/rvirtio-scsi-bench.inc" \
	"$project/Documentation/rstorage/rvirtio-scsi-bench.png"
