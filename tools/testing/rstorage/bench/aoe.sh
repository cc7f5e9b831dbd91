#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Benchmark: C aoe vs raoe (per-CPU completion threads) vs raoe with one
# completion thread, in one VM boot of the release kernel: 8 vblade targets
# on tmpfs behind a veth pair in the guest, 4 KiB random read and 128 KiB
# sequential read on 1 and 8 targets, drivers alternating round by round.
# Writes the table and the plot into Documentation/rstorage/ (see report.py).
#
# Usage: aoe.sh KERNEL_OBJ MODULE_DIR RESULTS_DIR
# Environment: BENCH_ROUNDS (default 5), BENCH_SECONDS per run (default 5).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../../../.." && pwd)
. "$here/../common.sh"
rstorage_dirs "$1" "$2" "$3" || exit 1
rounds=${BENCH_ROUNDS:-5}
secs=${BENCH_SECONDS:-5}

echo "[bench] $rounds rounds x 3 drivers x 4 workloads x ${secs}s (log: $results/bench-aoe.console)"
rstorage_kselftest_install "$(readlink -f "$obj/source")" "$results" ||
	{ echo "[bench] kselftest install failed (see $results/kselftest-install.log)"; exit 1; }
python3 "$here/../vm.py" --kernel "$obj" --log "$results/bench-aoe.console" --cpus 4 \
	--rwdir "$results" --timeout 7200 --append "modprobe.blacklist=aoe" --show-output -- \
	bash "$here/aoe-guest.sh" "$moddir" "$results/bench-aoe.jsonl" "$rounds" "$secs" "$results/kselftest"
"$(rstorage_plot_python)" "$here/report.py" "$results/bench-aoe.jsonl" \
	"$project/Documentation/rstorage/raoe-bench.inc" \
	"$project/Documentation/rstorage/raoe-bench.png"
