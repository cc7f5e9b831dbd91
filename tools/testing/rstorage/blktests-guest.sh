#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of blktests (see blktests.sh): brings up one kind of device,
# first with our driver and then, when asked, with the C driver of the same
# kernel on the same backing store, and runs blktests' device cases on each
# with TEST_DEVS set to that one device.
#
#   vscsi  target 0, LUN 0 of the 8-target (2-queue) virtio-scsi controller of vscsi.sh
#          (rvirtio_scsi, virtio_scsi)
#   aoe    a vblade target e0.0 on a veth pair (raoe, aoe)
#   iser   a LIO file-backed LUN (on tmpfs, with UNMAP) served over rdma_rxe
#          (risert, ib_isert), logged
#          in with the kernel's iSER initiator
#
# Every device case is QUICK or TIMED: a quick run (-q, BLKTESTS_QUICK
# seconds, default 20) runs them all and limits the timed ones to that.
#
# Usage: blktests-guest.sh KSELFTEST_DIR MODULE_DIR BLKTESTS_DIR OUT_DIR KIND DRIVER...
#   DRIVER is rust or c; each run's ./check output goes to OUT_DIR/KIND-DRIVER.log
#   and its results to OUT_DIR/KIND-DRIVER/. The cases are listed in OUT_DIR/cases,
#   those left out in OUT_DIR/exclude (see cases_for below).
set -u
ksft=$1
export RSTORAGE_MODDIR=$2
bt=$3 out=$4 kind=$5
shift 5
quick=${BLKTESTS_QUICK:-20}
. "$ksft/drivers/rstorage/lib.sh"
. "$ksft/drivers/rstorage/iser_lib.sh"
. "$ksft/drivers/rstorage/aoe_lib.sh"
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
work=/tmp/blktests-$kind
mkdir -p "$work"
dev=

# --- virtio-scsi ---
vscsi_dev() {
	local d h
	# The 8-target controller is the host with a target 7.
	for d in /sys/class/scsi_disk/*:0:7:0; do
		h=${d##*/}
		h=${h%%:*}
		ls "/sys/class/scsi_disk/$h:0:0:0/device/block" 2>/dev/null
	done
}
vscsi_up() {
	case $1 in
	rust) rstorage_insmod rvirtio_scsi ;;
	c) modprobe virtio_scsi ;;
	esac || return 1
	local i
	for i in $(seq 60); do
		dev=$(vscsi_dev)
		[ -n "$dev" ] && [ -b "/dev/$dev" ] && { dev=/dev/$dev; return 0; }
		sleep 0.5
	done
	return 1
}
vscsi_down() {
	case $1 in
	rust) rstorage_rmmod rvirtio_scsi ;;
	c) udevadm settle; modprobe -r virtio_scsi ;;
	esac
}

# --- ATA over Ethernet ---
aoe_prepare() {
	mount -t tmpfs -o size=80m blkt "$work" && truncate -s 64M "$work/t0" && aoe_veth_up &&
		aoe_target 0 "$work/t0"
}
aoe_up() {
	aoe_load "$1" && aoe_wait_devs 1 && dev=/dev/etherd/e0.0
}
aoe_down() { aoe_unload "$1"; }

# --- iSER ---
iser_prepare() {
	mount -t tmpfs -o size=160m blkt "$work" && iser_rxe_up &&
		iser_lio_up 32768 "$work/lun0" && iser_initiator_up && iser_autoload off
}
iser_up() {
	case $1 in
	rust) rstorage_insmod risert ;;
	c) iser_autoload on && modprobe ib_isert && iser_autoload off ;;
	esac || return 1
	echo 1 >"$iser_np/iser" && iser_login && iser_disks 1 && dev=/dev/${DISKS[0]}
}
iser_down() {
	iser_logout
	echo 0 >"$iser_np/iser"
	case $1 in
	rust) rstorage_rmmod risert ;;
	c) rstorage_rmmod ib_isert ;;
	esac
}

# cases_for DRIVER: the cases to run on this kind's device under DRIVER: all but
# those left out in OUT_DIR/exclude, on lines "CASE reason" (left out on every
# device) or "CASE@KIND-DRIVER[,KIND-DRIVER...] reason" (on those only).
cases_for() {
	local excl
	excl=$(awk -v me="$kind-$1" '{ n = split($1, a, "@"); if (n == 1 || index("," a[2] ",", "," me ",")) print a[1] }' \
		"$out/exclude" 2>/dev/null)
	grep -vxFf <(printf '%s\n' $excl) "$out/cases"
}
[ "$(type -t "${kind}_prepare")" = function ] && { "${kind}_prepare" || echo "[blktests] $kind: set-up failed"; }
for drv in "$@"; do
	mapfile -t cases < <(cases_for "$drv")
	log=$out/$kind-$drv.log
	rm -rf "${out:?}/$kind-$drv" "$log"
	if ! "${kind}_up" "$drv"; then
		echo "[blktests] $kind-$drv: the device did not come up" | tee "$log"
		"${kind}_down" "$drv"
		continue
	fi
	echo "[blktests] $kind-$drv: TEST_DEVS=($dev), ${#cases[@]} cases"
	(cd "$bt" && printf 'TEST_DEVS=(%s)\n' "$dev" >config &&
		./check --quick="$quick" -o "$out/$kind-$drv" "${cases[@]}") >"$log" 2>&1
	echo "[blktests] $kind-$drv: ./check exit $?"
	"${kind}_down" "$drv" || echo "[blktests] $kind-$drv: unload failed"
done
