#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Benchmark: C ib_isert vs risert (completion batching, budget 16) vs risert
# without a budget (budget=0: drain all, re-arm) vs risert in its adaptive
# completion mode (busy polling, poll_idle_us=500), in one VM boot
# of the release kernel: LIO with a ramdisk LUN behind rdma_rxe on a veth
# pair in the guest, the kernel's iSER initiator, 4 KiB random reads and
# writes, drivers alternating round by round. Reports IOPS and completion
# queue events per I/O. Writes the table and the plot into
# Documentation/rstorage/ (see report.py).
#
# Usage: iser.sh KERNEL_OBJ MODULE_DIR RESULTS_DIR
# Environment: BENCH_ROUNDS (default 8, a full rotation of the 4 drivers twice),
# BENCH_SECONDS per run (default 5), BENCH_PROFILE=1 to sample every run with
# perf (profile-*.txt in RESULTS_DIR; the sampling costs IOPS: not for tables).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../../../.." && pwd)
. "$here/../common.sh"
rstorage_dirs "$1" "$2" "$3" || exit 1
rounds=${BENCH_ROUNDS:-8}
secs=${BENCH_SECONDS:-5}

rstorage_kselftest_install "$(readlink -f "$obj/source")" "$results" ||
	{ echo "[bench] kselftest install failed (see $results/kselftest-install.log)"; exit 1; }
echo "[bench] $rounds rounds x 4 drivers x 2 workloads x ${secs}s (log: $results/bench-iser.console)"
python3 "$here/../vm.py" --kernel "$obj" --log "$results/bench-iser.console" --cpus 2 \
	--rwdir "$results" --timeout 7200 --show-output -- \
	bash "$here/iser-guest.sh" "$moddir" "$results/bench-iser.jsonl" "$rounds" "$secs" "$results/kselftest" "${BENCH_PROFILE:-0}"
if [ "${BENCH_PROFILE:-0}" = 1 ]; then
	echo "[bench] profiles: $results/profile-*.txt (tables left as they are)"
	exit 0
fi
"$(rstorage_plot_python)" "$here/report.py" "$results/bench-iser.jsonl" \
	"$project/Documentation/rstorage/risert-bench.inc" \
	"$project/Documentation/rstorage/risert-bench.png"
