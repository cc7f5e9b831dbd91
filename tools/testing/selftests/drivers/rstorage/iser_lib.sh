# SPDX-License-Identifier: GPL-2.0
# The iSER set-up shared by risert.sh, the iSER benchmark and blktests
# (sourced): soft RDMA (rdma_rxe) on a veth pair, a LIO iSCSI target with a
# ramdisk LUN and an iSER portal, and the kernel's iSER initiator (ib_iser,
# driven by open-iscsi's iscsiadm). The target side is 10.77.0.2 on veth1.

iser_iqn=${iser_iqn:-iqn.2026-11.org.rstorage:risert}
iser_cfs=/sys/kernel/config/target
iser_tpg=$iser_cfs/iscsi/$iser_iqn/tpgt_1
iser_portal=10.77.0.2:3260
iser_np=$iser_tpg/np/$iser_portal

# iser_rxe_up: the veth pair and an rdma_rxe device on its target side.
iser_rxe_up() {
	ip link add veth0 type veth peer name veth1 &&
		ip addr add 10.77.0.1/24 dev veth0 && ip addr add 10.77.0.2/24 dev veth1 &&
		ip link set veth0 up && ip link set veth1 up &&
		modprobe rdma_rxe && rdma link add rxe0 type rxe netdev veth1
}

# iser_lio_up PAGES [FILE]: the target, with a LUN of PAGES 4 KiB pages and
# the portal (iser still off), open to any initiator. The LUN is a ramdisk,
# or with FILE a file-backed LUN (fileio) that supports UNMAP and WRITE SAME
# with UNMAP (emulate_tpu, emulate_tpws; the initiator's sd discards with
# WRITE SAME(16) of up to 65535 blocks here), so that its disk takes discards.
iser_lio_up() {
	local bs=rd_mcp_0/ram0
	[ -n "${2:-}" ] && bs=fileio_0/file0
	modprobe configfs 2>/dev/null
	mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
	mkdir -p "$iser_cfs/core/$bs" || return 1
	if [ -n "${2:-}" ]; then
		echo "fd_dev_name=$2,fd_dev_size=$(($1 * 4096))" >"$iser_cfs/core/$bs/control" &&
			echo 1 >"$iser_cfs/core/$bs/enable" &&
			echo 1 >"$iser_cfs/core/$bs/attrib/emulate_tpu" &&
			echo 1 >"$iser_cfs/core/$bs/attrib/emulate_tpws" &&
			echo 65535 >"$iser_cfs/core/$bs/attrib/max_write_same_len"
	else
		echo "rd_pages=$1" >"$iser_cfs/core/$bs/control" &&
			echo 1 >"$iser_cfs/core/$bs/enable"
	fi &&
		mkdir -p "$iser_tpg/lun/lun_0" &&
		ln -s "$iser_cfs/core/$bs" "$iser_tpg/lun/lun_0/${bs#*/}" &&
		mkdir "$iser_np" &&
		echo 0 >"$iser_tpg/attrib/authentication" &&
		echo 1 >"$iser_tpg/attrib/generate_node_acls" &&
		echo 1 >"$iser_tpg/attrib/cache_dynamic_acls" &&
		echo 0 >"$iser_tpg/attrib/demo_mode_write_protect" &&
		echo 1 >"$iser_tpg/enable"
}

# iser_initiator_up: ib_iser and the iscsid daemon.
iser_initiator_up() {
	modprobe ib_iser || return 1
	pgrep -x iscsid >/dev/null || iscsid || return 1
	sleep 1
}

# The iSCSI target loads ib_isert itself when a portal's iser attribute is
# set. iser_autoload off keeps it from doing so (while risert serves the
# portal); iser_autoload on restores module autoloading.
iser_modprobe=$(cat /proc/sys/kernel/modprobe)
iser_autoload() {
	case $1 in
	off) echo /bin/true >/proc/sys/kernel/modprobe ;;
	on) echo "$iser_modprobe" >/proc/sys/kernel/modprobe ;;
	esac
}

# iser_login: SendTargets discovery and login to the target over iSER.
# open-iscsi's iscsiadm (2.1.8) now and then segfaults in an iSER discovery,
# with either target; a discovery that crashed (exit 139) is tried again, up
# to three times. (risert.sh does not use this: it must show that each such
# crash is the initiator's.)
# iser_login [SESSIONS]: discovery, then SESSIONS (default 1) sessions to the
# target, each on its own connection (node.session.nr_sessions).
iser_login() {
	local i rc
	for i in 1 2 3; do
		timeout 90 iscsiadm -m discovery -t sendtargets -p "$iser_portal" -I iser \
			>/dev/null 2>&1
		rc=$?
		[ "$rc" = 139 ] || break
		echo "# iscsiadm discovery crashed (exit 139), trying again"
	done
	[ "$rc" = 0 ] &&
		iscsiadm -m node -T "$iser_iqn" -p "$iser_portal" -I iser -o update \
			-n node.session.nr_sessions -v "${1:-1}" &&
		timeout 60 iscsiadm -m node -T "$iser_iqn" -p "$iser_portal" -I iser --login \
			>/dev/null 2>&1
}

# iser_logout: logs out of the target and forgets its node record.
iser_logout() {
	local rc=0
	timeout 60 iscsiadm -m node -T "$iser_iqn" -p "$iser_portal" -I iser --logout \
		>/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	return "$rc"
}

# iser_disks N: waits for N disks of iSER sessions and puts them in DISKS.
DISKS=()
iser_disks() {
	local i
	for i in $(seq 60); do
		mapfile -t DISKS < <(iscsiadm -m session -P3 2>/dev/null |
			awk '/Attached scsi disk/ { print $4 }')
		[ "${#DISKS[@]}" = "$1" ] && [ -b "/dev/${DISKS[0]}" ] && return 0
		sleep 0.5
	done
	echo "# found ${#DISKS[@]} iSER disks, expected $1"
	return 1
}

# iser_teardown: logs out, removes the target's configfs objects, the RDMA
# device and the veth pair, and restores module autoloading.
iser_teardown() {
	local i
	iser_logout
	# The target closes a logged-out session after the initiator has its
	# response; its portal group must not go before (see risert.sh tpg_idle).
	for i in $(seq 40); do
		[ -z "$(tr -d '[:space:]' <"$iser_tpg/dynamic_sessions" 2>/dev/null)" ] && break
		sleep 0.5
	done
	echo 0 >"$iser_np/iser" 2>/dev/null
	echo 0 >"$iser_tpg/enable" 2>/dev/null
	rm -f "$iser_tpg/lun/lun_0/ram0" "$iser_tpg/lun/lun_0/file0"
	rmdir "$iser_tpg/lun/lun_0" "$iser_np" "$iser_tpg" "$iser_cfs/iscsi/$iser_iqn" \
		"$iser_cfs/core/rd_mcp_0/ram0" "$iser_cfs/core/rd_mcp_0" \
		"$iser_cfs/core/fileio_0/file0" "$iser_cfs/core/fileio_0" 2>/dev/null
	rdma link delete rxe0 2>/dev/null
	ip link del veth0 2>/dev/null
	iser_autoload on
}
