#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make blktests BLKTESTS=<blktests checkout>`: runs an external blktests
# checkout in the debug VM against rvirtio_scsi's disks (TEST_DEVS: two disks
# of the 8-target controller of vscsi.sh). Not part of `make check`.
#
# Usage: blktests.sh KERNEL_OBJ MODULE_DIR RESULTS_DIR [BLKTESTS_DIR]
# Environment: BLKTESTS_GROUPS (default "block scsi"), the groups or tests to run.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
rstorage_dirs "$1" "$2" "$3" || exit 1
blktests=${4:-}
if [ -z "$blktests" ]; then
	echo "[blktests] skipped: no blktests checkout given (make blktests BLKTESTS=<path>)"
	exit 0
fi
if [ ! -x "$blktests/check" ]; then
	echo "[blktests] error: $blktests is not a blktests checkout (no ./check)" >&2
	exit 1
fi
blktests=$(cd "$blktests" && pwd)
# blktests needs GNU awk (the guest runs the host's programs).
command -v gawk >/dev/null || apt-get install -y -q gawk >/dev/null
. "$here/vscsi.sh"
vscsi_setup "$results/vscsi"

guest=$results/blktests-guest.sh
cat >"$guest" <<GUEST
set -u
modprobe -r virtio_scsi 2>/dev/null
insmod "$moddir/drivers/scsi/rvirtio_scsi/rvirtio_scsi.ko" || exit 1
for i in \$(seq 60); do
	devs=\$(for d in /sys/class/scsi_disk/*:0:[01]:0; do
		h=\${d##*/}; h=\${h%%:*}
		[ "\$(cat /sys/class/scsi_host/host\$h/nr_hw_queues)" = 2 ] && ls "\$d/device/block"
	done 2>/dev/null | sed 's|^|/dev/|' | xargs)
	[ "\$(wc -w <<<"\$devs")" = 2 ] && break
	sleep 0.5
done
echo "[blktests] TEST_DEVS: \$devs"
cd "$blktests"
echo "TEST_DEVS=(\$devs)" >config
./check ${BLKTESTS_GROUPS:-block scsi}
GUEST
echo "[blktests] running ${BLKTESTS_GROUPS:-block scsi} from $blktests (log: $results/blktests.console)"
python3 "$here/vm.py" --kernel "$obj" --log "$results/blktests.console" --cpus 4 \
	--rwdir "$results" --rwdir "$blktests" --timeout 3600 --append "modprobe.blacklist=virtio_scsi" \
	"--qemu-opts=$vscsi_qemu" --show-output -- bash "$guest"
