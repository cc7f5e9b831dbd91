#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Benchmarks (not tests): a C driver against our driver in its variants, in
# one VM boot of the release kernel, the same workloads, the same
# instrumentation, the order of the drivers rotating round by round (see
# lib.sh, the guest side shared by all kinds):
#
#   vscsi  C virtio_scsi vs rvirtio_scsi (per-target and mq steering), QEMU
#          null-co disks: one controller, 2 request queues, 8 targets;
#          4 KiB random and 128 KiB sequential reads on 1 and 8 targets
#   aoe    C aoe vs raoe (per-CPU completion threads) vs raoe with one
#          completion thread: 8 targets on tmpfs behind a veth pair in the
#          guest, served by raoe_target (in-kernel; BENCH_AOE_TARGET=vblade
#          for the user-space vblade); the same workloads
#   iser   C ib_isert vs risert (budget 16, budget 0, adaptive busy polling):
#          LIO with a ramdisk LUN behind rdma_rxe on a veth pair, the
#          kernel's iSER initiator; 4 KiB random reads and writes
#
# The raw runs (JSON lines) are kept beside the table in Documentation/
# rstorage/NAME-bench.jsonl, so report.py can re-derive the table and the
# plot (NAME-bench.inc, NAME-bench.png).
#
# Usage: bench.sh KIND KERNEL_OBJ MODULE_DIR RESULTS_DIR
# Environment: BENCH_ONLY_DRIVERS and BENCH_ONLY_WORKLOADS (space-separated
# names: run only those of the kind's drivers and workloads, e.g. for a quick
# profile: BENCH_PROFILE=1 BENCH_ONLY_DRIVERS="c rust-mq"
# BENCH_ONLY_WORKLOADS=randread-4k), BENCH_ROUNDS (default: each driver twice in each place of the
# order; rounded up to a multiple of the number of drivers, as lib.sh does), BENCH_SECONDS per
# run (default 5), BENCH_PROFILE=1 to sample every run with perf (profile-*.txt
# in RESULTS_DIR; the sampling costs IOPS, so the tables are left as they are; BENCH_PROFILE=2
# adds call chains, 3 counts queued work items by function), BENCH_CPUS the guest's vCPUs for aoe and iser (default 2: one per host core, see raoe.rst).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../../../.." && pwd)
. "$here/../common.sh"
kind=$1
shift
rstorage_dirs "$1" "$2" "$3" || exit 1
secs=${BENCH_SECONDS:-5}
profile=${BENCH_PROFILE:-0}
vm=(--cpus 2)
case $kind in
vscsi)
	name=rvirtio-scsi drivers=5
	opts=(-device virtio-scsi-pci,id=bench,num_queues=2)
	for t in 0 1 2 3 4 5 6 7; do
		opts+=(-drive "driver=null-co,size=4G,read-zeroes=on,if=none,id=null$t"
			-device "scsi-hd,drive=null$t,bus=bench.0,scsi-id=$t,lun=0")
	done
	vm+=(--append "modprobe.blacklist=virtio_scsi,rvirtio_scsi" "--qemu-opts=${opts[*]}") ;;
aoe)
	name=raoe drivers=3
	vm=(--cpus "${BENCH_CPUS:-2}" --append "modprobe.blacklist=aoe") ;;
iser)
	name=risert drivers=4
	vm=(--cpus "${BENCH_CPUS:-2}") ;;
*)
	echo "usage: bench.sh vscsi|aoe|iser KERNEL_OBJ MODULE_DIR RESULTS_DIR" >&2
	exit 2 ;;
esac
rounds=${BENCH_ROUNDS:-$((2 * drivers))}
rounds=$(((rounds + drivers - 1) / drivers * drivers))
raw=$results/bench-$kind.jsonl
echo "[bench] $kind: $rounds rounds x $drivers drivers, ${secs}s per run (log: $results/bench-$kind.console)"
rstorage_kselftest_install "$(readlink -f "$obj/source")" "$results" ||
	{ echo "[bench] kselftest install failed (see $results/kselftest-install.log)"; exit 1; }
rc=0
python3 "$here/../vm.py" --kernel "$obj" --log "$results/bench-$kind.console" --status "$results/bench-$kind.status" "${vm[@]}" \
	--rwdir "$results" --timeout 7200 --show-output -- \
	env BENCH_ONLY_DRIVERS="${BENCH_ONLY_DRIVERS:-}" BENCH_ONLY_WORKLOADS="${BENCH_ONLY_WORKLOADS:-}" \
	BENCH_AOE_TARGET="${BENCH_AOE_TARGET:-kernel}" \
	bash "$here/$kind-guest.sh" "$moddir" "$raw" "$rounds" "$secs" "$results/kselftest" "$profile" || rc=$?
[ "$rc" = 0 ] || echo "[bench] $kind: the guest side failed (exit $rc); the runs it recorded follow"
[ -s "$raw" ] || { echo "[bench] $kind: no runs recorded"; exit 1; }
if [ "$profile" != 0 ]; then
	echo "[bench] profiles: $results/profile-*.txt (tables left as they are)"
	exit "$rc"
fi
doc=$project/Documentation/rstorage/$name-bench
cp "$raw" "$doc.jsonl"
"$(rstorage_plot_python)" "$here/report.py" "$doc.jsonl" "$doc.inc" "$doc.png"
echo "[bench] $kind: Documentation/rstorage/$name-bench.{inc,png,jsonl}"
failed=$(grep -c '"failed": true' "$raw" || true)
if [ "$failed" -gt 0 ]; then
	echo "[bench] $kind: $failed of $(wc -l <"$raw") runs failed (the table's \"Failed runs\" column; see $results/bench-$kind.console)"
	rc=1
fi
exit "$rc"
