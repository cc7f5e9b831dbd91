#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# raoe_target, the in-kernel AoE target, over a veth pair inside the guest:
# the target on aoe1, the initiators (the C aoe, then raoe) on aoe0. Backing
# stores are files on tmpfs and a null_blk disk. Data is checked with fio
# verify=crc32c through both initiators; aoetools see the target; a probe
# checks the answers to wrong and malformed requests; the target is disabled
# and re-enabled under I/O.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/aoe_lib.sh"

here=$(dirname "$0")
work=/tmp/raoe_target
cfg=/sys/kernel/config/raoe_target
size_mb=32

ktap_print_header
rstorage_require fio aoe-discover aoe-stat python3
ktap_set_plan 16

# export NAME SHELF SLOT BACKING [ATTR=VALUE...]: a target directory, enabled.
export_dev() {
	local d=$cfg/$1 kv
	mkdir "$d" && echo "$4" >"$d/backing" && echo aoe1 >"$d/iface" &&
		echo "$2" >"$d/shelf" && echo "$3" >"$d/slot" || return 1
	shift 4
	for kv in "$@"; do
		echo "${kv#*=}" >"$d/${kv%%=*}" || return 1
	done
	echo 1 >"$d/enable"
}

# tstat NAME FIELD: a counter of a target's stats file.
tstat() { awk -v f="$2" '$1 == f {print $2}' "$cfg/$1/stats"; }

# fio_verify NAME DEV [FIO_ARGS...]
fio_verify() {
	local name=$1 dev=$2
	shift 2
	rstorage_fio_verify "$name" "${FIO_SIZE:-8m}" "$dev" -- "$@"
}

# wait_dev DEV: waits (30 s) for an etherd disk with a size.
wait_dev() {
	local i
	for i in $(seq 60); do
		[ -e "/sys/block/etherd!$1/size" ] &&
			[ "$(cat "/sys/block/etherd!$1/size")" -gt 0 ] &&
			grep -q '^up' "/sys/block/etherd!$1/state" && return 0
		[ $((i % 10)) = 0 ] && echo >/dev/etherd/discover 2>/dev/null
		sleep 0.5
	done
	return 1
}

mkdir -p "$work"
mount -t tmpfs -o size=$((3 * size_mb + 16))m raoe_target "$work"
truncate -s ${size_mb}M "$work/t0" "$work/t1" "$work/ro"
aoe_veth_up
mac1=$(cat /sys/class/net/aoe1/address)
[ -d /sys/module/aoe ] && rmmod aoe

# 1-2: the module makes its configfs directory; a device needs its settings.
rstorage_case "raoe_target loads and makes $cfg" \
	eval 'rstorage_insmod raoe_target && test -d '"$cfg"
[ -d "$cfg" ] || { ktap_print_msg "no configfs directory, giving up"; exit 1; }
incomplete() {
	mkdir "$cfg/bad" || return 1
	local rc=0
	echo 1 >"$cfg/bad/enable" 2>/dev/null && rc=1           # no backing, no interface
	echo "$work/t0" >"$cfg/bad/backing" && echo nosuchif >"$cfg/bad/iface" || rc=1
	echo 1 >"$cfg/bad/enable" 2>/dev/null && rc=1           # no such interface
	echo 65535 >"$cfg/bad/shelf" 2>/dev/null && rc=1        # the wildcard shelf
	echo /nonexistent >"$cfg/bad/backing" && echo aoe1 >"$cfg/bad/iface" || rc=1
	echo 1 >"$cfg/bad/enable" 2>/dev/null && rc=1           # no such file
	[ "$(cat "$cfg/bad/enable")" = 0 ] || rc=1
	rmdir "$cfg/bad" || rc=1
	return $rc
}
rstorage_case "enabling without a backing store or interface, or with the wildcard shelf, fails" \
	incomplete

# 3-4: two targets; settings are locked while enabled.
rstorage_case "two targets enabled (files e1.0, e1.1)" \
	eval 'export_dev t0 1 0 '"$work/t0"' && export_dev t1 1 1 '"$work/t1"
busy() {
	! echo 2 >"$cfg/t0/slot" 2>/dev/null && [ "$(cat "$cfg/t0/slot")" = 0 ] &&
		grep -q "^sectors $((size_mb * 2048))\$" "$cfg/t0/stats"
}
rstorage_case "settings are refused while enabled; stats give the size" busy

# 5-7: the C initiator finds both (aoe-stat), and data goes through it.
modprobe aoe aoe_iflist=aoe0 && echo >/dev/etherd/discover
found() {
	wait_dev e1.0 && wait_dev e1.1 || return 1
	aoe-stat | sed 's/^/# /'
	aoe-stat | grep -q 'e1.0 .*aoe0.*up' && aoe-stat | grep -q 'e1.1 .*aoe0.*up' &&
		[ "$(cat '/sys/block/etherd!e1.0/size')" = $((size_mb * 2048)) ] &&
		[ "$(cat '/sys/block/etherd!e1.0/mac')" = "$(tr -d : <<<"$mac1")" ]
}
rstorage_case "C aoe: aoe-discover finds e1.0 and e1.1 (size, MAC, interface)" found
rstorage_case "C aoe: fio verify=crc32c on e1.0" fio_verify c0 /dev/etherd/e1.0
both() {
	rstorage_fio_verify c01 8m /dev/etherd/e1.0 /dev/etherd/e1.1 &&
		[ "$(tstat t0 writes)" -gt 0 ] && [ "$(tstat t1 reads)" -gt 0 ]
}
rstorage_case "C aoe: fio verify=crc32c on both at once; both targets counted I/O" both

# 8: what the C initiator wrote is on the backing file.
ondisk() {
	local pat=$work/pattern
	head -c 65536 /dev/urandom >"$pat"
	dd if="$pat" of=/dev/etherd/e1.1 bs=64k seek=3 oflag=direct status=none &&
		cmp -n 65536 "$pat" <(dd if="$work/t1" bs=64k skip=3 count=1 status=none)
}
rstorage_case "data written through the C initiator is in the backing file" ondisk

# 9: disabled and enabled again during fio: the initiator retransmits, I/O resumes.
restart() {
	local rc
	FIO_SIZE=16m fio_verify restart /dev/etherd/e1.0 --time_based --runtime=10 \
		--verify_backlog=64 &
	local fio=$!
	sleep 3
	echo 0 >"$cfg/t0/enable" || { wait $fio; return 1; }
	sleep 2
	echo 1 >"$cfg/t0/enable" || { wait $fio; return 1; }
	wait $fio
	rc=$?
	ktap_print_msg "fio exit $rc after the target was disabled for 2 s"
	[ "$rc" = 0 ]
}
rstorage_case "target disabled and re-enabled during fio: I/O resumes, data verified" restart
rstorage_rmmod aoe

# 10-11: raoe against the same targets.
rstorage_case "raoe: aoe-discover finds e1.0 and e1.1" \
	eval 'rstorage_insmod raoe && aoe-interfaces aoe0 && aoe-discover &&' \
		'wait_dev e1.0 && wait_dev e1.1'
rstorage_case "raoe: fio verify=crc32c on both at once" \
	rstorage_fio_verify r01 8m /dev/etherd/e1.0 /dev/etherd/e1.1
rstorage_rmmod raoe

# 12: a read-only target refuses writes (ATA aborted) and serves reads.
readonly_dev() {
	export_dev ro 1 2 "$work/ro" read_only=1 || return 1
	modprobe aoe aoe_iflist=aoe0 && echo >/dev/etherd/discover && wait_dev e1.2 || return 1
	local before=$(tstat ro aborted)
	dd if=/dev/zero of=/dev/etherd/e1.2 bs=4k count=1 oflag=direct status=none 2>/dev/null &&
		return 1
	dd if=/dev/etherd/e1.2 of=/dev/null bs=64k count=16 iflag=direct status=none || return 1
	ktap_print_msg "aborted $before -> $(tstat ro aborted)"
	[ "$(tstat ro aborted)" -gt "$before" ]
}
rstorage_case "read-only target: a write fails (ATA aborted), reads work" readonly_dev
rstorage_rmmod aoe

# 13: a block device as the backing store (null_blk with memory backing).
blockdev() {
	local nb=/sys/kernel/config/nullb/rt0 dev
	modprobe null_blk nr_devices=0 && mkdir "$nb" && echo 64 >"$nb/size" &&
		echo 1 >"$nb/memory_backed" && echo 1 >"$nb/power" ||
		{ ktap_print_msg "null_blk set-up failed"; return 1; }
	# The disk is named after the configfs directory (older kernels: nullb<index>).
	dev=/dev/rt0
	[ -b "$dev" ] || dev=/dev/nullb$(cat "$nb/index")
	[ -b "$dev" ] || { ktap_print_msg "no $dev"; return 1; }
	export_dev nb 2 0 "$dev" || { ktap_print_msg "export of $dev failed"; return 1; }
	modprobe aoe aoe_iflist=aoe0 && echo >/dev/etherd/discover && wait_dev e2.0 ||
		{ ktap_print_msg "e2.0 not found"; return 1; }
	ktap_print_msg "e2.0: $(cat '/sys/block/etherd!e2.0/size') sectors"
	[ "$(cat '/sys/block/etherd!e2.0/size')" = $((64 * 2048)) ] &&
		fio_verify nb /dev/etherd/e2.0
}
rstorage_case "block device backing (null_blk): size and fio verify=crc32c through C aoe" blockdev
rstorage_rmmod aoe

# 14: wrong and malformed requests get the protocol's answers, or none.
probe() {
	python3 "$here/aoe_target_probe.py" aoe0 "$mac1" 1 0 $((size_mb * 2048)) \
		"$(awk '$1 == "max_sectors_per_frame" {print $2}' "$cfg/t0/stats")" 2000 |
		sed 's/^/# /'
	[ "${PIPESTATUS[0]}" = 0 ] && [ "$(tstat t0 malformed)" -gt 0 ]
}
rstorage_case "probe: answers to wrong requests, silence to malformed ones (2000 frames)" probe

# 15-16: the module stays while a device exists; then it unloads.
rstorage_case "rmmod refused while a target directory exists" eval '! rmmod raoe_target 2>/dev/null'
teardown() {
	local d
	for d in "$cfg"/*/; do
		rmdir "$d" || return 1
	done
	echo 0 >/sys/kernel/config/nullb/rt0/power 2>/dev/null
	rmdir /sys/kernel/config/nullb/rt0 2>/dev/null
	modprobe -r null_blk 2>/dev/null
	rstorage_rmmod raoe_target
}
rstorage_case "directories removed (targets enabled), then the module unloads" teardown

ip link del aoe0
umount "$work"
ktap_finished
