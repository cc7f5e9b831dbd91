#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Host side of `make vm`: a VM with the test topology, for loading and trying
# our modules by hand. It boots KERNEL_OBJ with the three virtio-scsi
# controllers and their disks of the tests attached (vscsi.sh), and the guest
# (vm-guest.sh) sets up an AoE target on a veth pair and an iSER-ready LIO
# target on rdma_rxe, then prints one line per module saying how to load it.
# Nothing of ours is loaded (the C twins are kept from autoloading too).
#
# Without a command the console is an interactive root shell (exit it, or
# Ctrl-D, to power the VM off); with one, the command runs after the set-up
# and its exit status is the VM's (make vm CMD='...').
#
# Usage: vm.sh KERNEL_OBJ MODULE_DIR RESULTS_DIR [COMMAND]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
rstorage_dirs "$1" "$2" "$3" || exit 1
cmd=${4:-}
vmdir=$results/vm
mkdir -p "$vmdir"

rstorage_kselftest_install "$(readlink -f "$obj/source")" "$results" ||
	{ echo "[vm] kselftest install failed (see $results/kselftest-install.log)"; exit 1; }
. "$here/vscsi.sh"
vscsi_setup "$vmdir/vscsi"
{
	printf 'vm_moddir=%q\n' "$moddir"
	printf 'vm_ksft=%q\n' "$results/kselftest"
	printf 'vm_dir=%q\n' "$vmdir"
	printf 'vm_release=%q\n' "$(cat "$obj/include/config/kernel.release")"
} >"$vmdir/env"
append="modprobe.blacklist=virtio_scsi,rvirtio_scsi,aoe,ib_isert,risert rstorage.vm=$vmdir/env"

if [ -z "$cmd" ]; then
	echo "[vm] booting $(cat "$obj/include/config/kernel.release") with the test topology;" \
		"exit the shell to power off"
	exec python3 "$here/vm.py" --kernel "$obj" --log /dev/null --cpus 2 --rwdir "$vmdir" \
		--append "$append" "--qemu-opts=$vscsi_qemu" --interactive "$here/vm-guest.sh"
fi
echo "[vm] booting $(cat "$obj/include/config/kernel.release") with the test topology;" \
	"console log: $vmdir/vm.console"
python3 "$here/vm.py" --kernel "$obj" --log "$vmdir/vm.console" --status "$vmdir/vm.status" \
	--rwdir "$vmdir" --timeout "${RSTORAGE_VM_TIMEOUT:-900}" --show-output --cpus 2 \
	--append "$append" "--qemu-opts=$vscsi_qemu" -- bash "$here/vm-guest.sh" -c "$cmd"
