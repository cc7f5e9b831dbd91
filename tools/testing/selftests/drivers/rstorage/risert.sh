#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# risert, the iSER target transport, with the LIO iSCSI target over soft
# RDMA (rdma_rxe) on a veth pair inside the guest, and the kernel's iSER
# initiator (ib_iser, driven by open-iscsi's iscsiadm).
#
# First the C ib_isert shows that the set-up carries a real login and
# verified data. Then risert takes the portal: it listens, serves iSER
# discovery sessions (login, text, logout over RDMA), survives portal
# enable/disable cycles and the removal of the RDMA device, and unloads.
. "$(dirname "$0")/lib.sh"

work=/tmp/risert
iqn=iqn.2026-11.org.rstorage:risert
cfs=/sys/kernel/config/target
tpg=$cfs/iscsi/$iqn/tpgt_1
portal=10.77.0.2:3260
np=$tpg/np/$portal
stats=/sys/kernel/debug/risert/stats

ktap_header
ktap_plan 12

rstat() { awk -v k="$1" '$1 == k { print $2 }' "$stats"; }

# The listening rdma_cm identifiers on the portal's port.
listeners() { rdma res show cm_id 2>/dev/null | grep -c "state LISTEN.*src-addr $portal" || true; }

rxe_up() {
	ip link add veth0 type veth peer name veth1 &&
		ip addr add 10.77.0.1/24 dev veth0 && ip addr add 10.77.0.2/24 dev veth1 &&
		ip link set veth0 up && ip link set veth1 up &&
		modprobe rdma_rxe && rdma link add rxe0 type rxe netdev veth1
}

lio_up() {
	modprobe configfs 2>/dev/null
	mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
	mkdir -p "$cfs/core/rd_mcp_0/ram0" || return 1
	echo rd_pages=8192 >"$cfs/core/rd_mcp_0/ram0/control" &&
		echo 1 >"$cfs/core/rd_mcp_0/ram0/enable" &&
		mkdir -p "$tpg/lun/lun_0" &&
		ln -s "$cfs/core/rd_mcp_0/ram0" "$tpg/lun/lun_0/ram0" &&
		mkdir "$np" &&
		echo 0 >"$tpg/attrib/authentication" &&
		echo 1 >"$tpg/attrib/generate_node_acls" &&
		echo 1 >"$tpg/attrib/cache_dynamic_acls" &&
		echo 0 >"$tpg/attrib/demo_mode_write_protect" &&
		echo 1 >"$tpg/enable"
}

initiator_up() {
	modprobe ib_iser || return 1
	pgrep -x iscsid >/dev/null || iscsid || return 1
	sleep 1
}

# The disk of the iSER session, once it appears.
session_disk() {
	local i d
	for i in $(seq 60); do
		d=$(iscsiadm -m session -P3 2>/dev/null | awk '/Attached scsi disk/ { print $4; exit }')
		[ -n "$d" ] && [ -b "/dev/$d" ] && { echo "$d"; return 0; }
		sleep 0.5
	done
	return 1
}

# Discovery, login, fio verify=crc32c on the session's disk, logout; $1
# names the target transport in the log.
session_io() {
	timeout 60 iscsiadm -m discovery -t sendtargets -p "$portal" -I iser >"$work/disc.log" 2>&1 &&
		timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login >"$work/login.log" 2>&1 ||
		{ sed 's/^/# /' "$work/disc.log" "$work/login.log"; return 1; }
	local d rc
	d=$(session_disk) || { ktap_info "no disk appeared"; return 1; }
	ktap_info "$1 session disk: $d"
	fio --output="$work/fio.log" --name=c --filename="/dev/$d" --ioengine=libaio --direct=1 \
		--iodepth=16 --rw=randwrite --bsrange=4k-64k --size=16m --verify=crc32c \
		--do_verify=1 --verify_fatal=1 >/dev/null 2>&1
	rc=$?
	[ "$rc" = 0 ] || tail -n 20 "$work/fio.log" | sed 's/^/# /'
	grep -E "WRITE:|READ:" "$work/fio.log" | sed 's/^ */# /'
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	return "$rc"
}

c_isert() {
	modprobe ib_isert || return 1
	echo 1 >"$np/iser" || return 1
	session_io "C ib_isert"
}

c_isert_unload() {
	echo 0 >"$np/iser" && modprobe -r ib_isert && ! rstorage_loaded ib_isert
}

# From here on, the iSCSI target must not load ib_isert when a portal's
# iser attribute is set: module autoloading is switched off.
modprobe_path=$(cat /proc/sys/kernel/modprobe)
risert_listens() {
	echo /bin/true >/proc/sys/kernel/modprobe
	rstorage_insmod risert || return 1
	echo 1 >"$np/iser" || return 1
	ktap_info "iser $(cat "$np/iser"), portals_up $(rstat portals_up), listening ids $(listeners)"
	[ "$(cat "$np/iser")" = 1 ] && [ "$(rstat portals_up)" = 1 ] && ! rstorage_loaded ib_isert
}

busy_rmmod_refused() {
	! rmmod risert 2>/dev/null && rstorage_loaded risert
}

# Connections still known to risert (one "conn" line each in its stats).
live_conns() { grep -c '^conn ' "$stats" || true; }

# Waits until every accepted connection has been freed.
all_freed() {
	local i
	for i in $(seq 40); do
		[ "$(rstat conns_freed)" = "$(rstat accepted)" ] && [ "$(live_conns)" = 0 ] && return 0
		sleep 0.25
	done
	ktap_info "accepted $(rstat accepted), freed $(rstat conns_freed), live $(live_conns)"
	return 1
}

# One SendTargets discovery session over risert: RDMA connection, login,
# text request and response, the initiator disconnects, teardown.
discover() {
	timeout 60 iscsiadm -m discovery -t sendtargets -p "$portal" -I iser >"$work/rdisc.log" 2>&1 &&
		grep -q "^$portal,1 $iqn\$" "$work/rdisc.log"
}

discovery() {
	local rc
	discover
	rc=$?
	sed 's/^/# /' "$work/rdisc.log"
	ktap_info "accepted $(rstat accepted), logins $(rstat logins), text $(rstat text), logouts $(rstat logouts), pdus_rx $(rstat pdus_rx), pdus_tx $(rstat pdus_tx)"
	[ "$rc" = 0 ] && [ "$(rstat logins)" -ge 1 ] && [ "$(rstat text)" -ge 1 ] &&
		[ "$(rstat wc_errors)" = 0 ] && all_freed
}

discoveries() {
	local i
	for i in $(seq 10); do
		discover || { ktap_info "discovery $i failed"; sed 's/^/# /' "$work/rdisc.log"; return 1; }
	done
	ktap_info "accepted $(rstat accepted), freed $(rstat conns_freed), wc_errors $(rstat wc_errors)"
	[ "$(rstat accepted)" = 11 ] && all_freed
}

risert_session() {
	local rc
	session_io risert
	rc=$?
	ktap_info "scsi_cmds $(rstat scsi_cmds), data_in $(rstat data_in), data_out $(rstat data_out), logouts $(rstat logouts), wc_errors $(rstat wc_errors)"
	[ "$rc" = 0 ] && [ "$(rstat data_in)" -gt 0 ] && [ "$(rstat data_out)" -gt 0 ] &&
		[ "$(rstat logouts)" -ge 1 ] && [ "$(rstat wc_errors)" = 0 ] && all_freed
}

cycles() {
	local i
	for i in $(seq 20); do
		echo 0 >"$np/iser" && echo 1 >"$np/iser" || { ktap_info "cycle $i failed"; return 1; }
	done
	ktap_info "portals_up $(rstat portals_up), portals_down $(rstat portals_down), listening ids $(listeners)"
	[ "$(rstat portals_up)" = 21 ] && [ "$(rstat portals_down)" = 20 ] && [ "$(rstat listen_failed)" = 0 ]
}

device_removed() {
	rdma link delete rxe0 || return 1
	ktap_info "after removing rxe0: listeners_lost $(rstat listeners_lost)"
	[ "$(rstat listeners_lost)" = 1 ] && echo 0 >"$np/iser" && [ "$(rstat portals_down)" = 21 ]
}

reload() {
	rmmod risert && ! rstorage_loaded risert && rstorage_insmod risert &&
		rdma link add rxe0 type rxe netdev veth1 && echo 1 >"$np/iser" &&
		[ "$(rstat portals_up)" = 1 ] && echo 0 >"$np/iser" && rmmod risert
}

mkdir -p "$work"
ktap_check "rdma_rxe on a veth pair" rxe_up
ktap_check "LIO target with a ramdisk LUN and a portal, open-iscsi with ib_iser" eval 'lio_up && initiator_up'
ktap_check "C ib_isert: iSER login, fio verify=crc32c, logout" c_isert
ktap_check "C ib_isert unloads after the portal's iser is disabled" c_isert_unload
ktap_check "risert loads and listens on the portal" risert_listens
ktap_check "rmmod risert is refused while a portal uses it" busy_rmmod_refused
ktap_check "iSER discovery through risert: login, SendTargets, disconnect, connection drained and freed" discovery
ktap_check "10 more discoveries, every connection drained and freed" discoveries
ktap_check "risert: iSER login, fio verify=crc32c, logout, connection freed" risert_session
ktap_check "20 portal disable/enable cycles, one listener each" cycles
ktap_check "RDMA device removed under a listening portal: listener lost, portal disables" device_removed
ktap_check "risert unloads and reloads" reload

# Tear down, best effort.
echo "$modprobe_path" >/proc/sys/kernel/modprobe
rstorage_loaded risert && { echo 0 >"$np/iser" 2>/dev/null; rmmod risert; }
echo 0 >"$tpg/enable" 2>/dev/null
rm -f "$tpg/lun/lun_0/ram0" 2>/dev/null
rmdir "$tpg/lun/lun_0" "$np" "$tpg" "$cfs/iscsi/$iqn" "$cfs/core/rd_mcp_0/ram0" \
	"$cfs/core/rd_mcp_0" 2>/dev/null
rdma link delete rxe0 2>/dev/null
ip link del veth0 2>/dev/null
ktap_finished
