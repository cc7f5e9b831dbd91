# SPDX-License-Identifier: GPL-2.0
# The AoE set-up shared by raoe.sh, the AoE benchmark and blktests (sourced):
# a veth pair, aoe0 for the initiator and aoe1 for the targets, and vblade
# (Debian's user-space AoE target) serving files on aoe1 as shelf 0.

# aoe_veth_up: the veth pair, both ends up.
aoe_veth_up() {
	ip link add aoe0 type veth peer name aoe1 && ip link set aoe0 up && ip link set aoe1 up
}

# aoe_target SLOT FILE: vblade serves FILE as e0.SLOT on aoe1; its pid goes
# to FILE.pid, its output to FILE.log.
aoe_target() {
	vblade 0 "$1" aoe1 "$2" >"$2.log" 2>&1 &
	echo $! >"$2.pid"
}

# aoe_target_stop FILE: stops the vblade of aoe_target ... FILE.
aoe_target_stop() {
	kill "$(cat "$1.pid")" 2>/dev/null
	wait "$(cat "$1.pid")" 2>/dev/null
	return 0
}

# aoe_ktarget SLOT FILE: raoe_target (the in-kernel target, loaded on first
# use) serves FILE as e0.SLOT on aoe1.
aoe_ktarget() {
	local d=/sys/kernel/config/raoe_target/e0.$1
	[ -d /sys/kernel/config/raoe_target ] || rstorage_insmod raoe_target || return 1
	mkdir "$d" && echo "$2" >"$d/backing" && echo aoe1 >"$d/iface" &&
		echo 0 >"$d/shelf" && echo "$1" >"$d/slot" && echo 1 >"$d/enable"
}

# aoe_ktarget_stop SLOT: removes the raoe_target disk e0.SLOT.
aoe_ktarget_stop() {
	rmdir "/sys/kernel/config/raoe_target/e0.$1"
}

# aoe_load DRIVER [PARAMS...]: loads the C aoe (DRIVER c) or raoe (rust) on
# aoe0, with PARAMS, and asks for the targets.
aoe_load() {
	local drv=$1
	shift
	case $drv in
	c) modprobe aoe aoe_iflist=aoe0 "$@" && echo >/dev/etherd/discover ;;
	rust) rstorage_insmod raoe "$@" && aoe-interfaces aoe0 && aoe-discover ;;
	*) return 1 ;;
	esac
}

# aoe_unload DRIVER: unloads the driver aoe_load DRIVER loaded.
aoe_unload() {
	case $1 in
	c) rstorage_rmmod aoe ;;
	rust) rstorage_rmmod raoe ;;
	*) return 1 ;;
	esac
}

# aoe_devs: the etherd disks of shelf 0, in slot order (e0.0 e0.1 ...).
aoe_devs() {
	ls -d /sys/block/etherd\!e0.* 2>/dev/null | sed 's/.*!//' | sort -t. -k2,2n
}

# aoe_wait_devs N: waits (60 s) for N etherd disks with a size and state up,
# asking for the targets again every 5 s.
aoe_wait_devs() {
	local i n d
	for i in $(seq 120); do
		n=0
		for d in $(aoe_devs); do
			[ "$(cat "/sys/block/etherd!$d/size")" -gt 0 ] &&
				grep -q '^up' "/sys/block/etherd!$d/state" && n=$((n + 1))
		done
		[ "$n" -ge "$1" ] && return 0
		[ $((i % 10)) = 0 ] && echo >/dev/etherd/discover 2>/dev/null
		sleep 0.5
	done
	echo "# $n of $1 AoE devices up"
	return 1
}
