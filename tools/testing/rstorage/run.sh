#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Host side of `make run`: boot the release kernel, load each of our modules
# and move data through it (tools/testing/rstorage/demo.sh in the guest); with
# a MODULE_DIR from `collect-modules.sh ... builtin`, boot the kernel that has
# them built in and move data through each without loading anything.
#
# Usage: run.sh KERNEL_OBJ MODULE_DIR RESULTS_DIR
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
rstorage_dirs "$1" "$2" "$3" || exit 1

# The guest uses the selftests' helpers, from the installed kselftest target.
rstorage_kselftest_install "$(readlink -f "$obj/source")" "$results" ||
	{ echo "[run] kselftest install failed (see $results/kselftest-install.log)"; exit 1; }
echo "[run] booting $(cat "$obj/include/config/kernel.release") (release) in a VM; console log: $results/run.console"
# The virtio-scsi disks of the tests (vscsi.sh) for rvirtio_scsi.
. "$here/vscsi.sh"
vscsi_setup "$results/vscsi"
# A kernel with our drivers built in (make run BUILTIN=1, collect-modules.sh):
# the batching stress sample runs at boot, with the small load a quick module
# load gets.
append="modprobe.blacklist=virtio_scsi,rvirtio_scsi,aoe"
[ -f "$moddir/builtin" ] &&
	append+=" rstorage_batch_stress.total=2000 rstorage_batch_stress.inline=0"
python3 "$here/vm.py" --kernel "$obj" --log "$results/run.console" --status "$results/run.status" \
	--rwdir "$results" --timeout 1200 --show-output --cpus 2 \
	--append "$append" "--qemu-opts=$vscsi_qemu" -- \
	bash "$here/demo.sh" "$moddir" "$results/run.summary" "$results/kselftest"
rc=$?
echo
echo "=== rstorage: summary ==="
cat "$results/run.summary" 2>/dev/null || echo "(no summary: the VM did not get that far)"
if [ -f "$moddir/builtin" ]; then
	[ "$rc" = 0 ] && echo "all drivers built in, bound at boot and moved data" ||
		echo "FAILED (exit status $rc); see $results/run.console"
	exit "$rc"
fi
[ "$rc" = 0 ] && echo "all modules loaded, moved data and unloaded cleanly" ||
	echo "FAILED (exit status $rc); see $results/run.console"
exit "$rc"
