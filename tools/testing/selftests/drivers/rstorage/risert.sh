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
ktap_plan 19

rstat() { awk -v k="$1" '$1 == k { print $2 }' "$stats"; }

# Ids of the connections risert has now.
conn_ids() { awk '$1 == "conn" { print $2 }' "$stats" | sort; }

# discovery PORTAL: SendTargets discovery over iSER, printing the targets.
# open-iscsi's iscsiadm (2.1.8) now and then waits 30 s for a discovery
# session's text response, reconnects and segfaults (exit 139), with the C
# ib_isert as well as with risert. Such a crash is retried, twice at most,
# and counted in $work/iscsiadm-crashes. The connection of the crashed
# attempt stays up (the kernel initiator keeps it until its device goes):
# it is recorded in $work/orphans, and all_freed leaves it out.
discovery_st() {
	local i rc before
	for i in 1 2 3; do
		before=$(conn_ids)
		timeout 90 iscsiadm -m discovery -t sendtargets -p "$1" -I iser
		rc=$?
		[ "$rc" = 139 ] || return "$rc"
		echo crash >>"$work/iscsiadm-crashes"
		sleep 1
		comm -13 <(echo "$before") <(conn_ids) >>"$work/orphans"
	done
	return "$rc"
}

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

# Discovery, login, fio verify=crc32c on the session's first disk, logout;
# $1 names the target transport in the log, $2 is how many LUNs target A has.
session_io() {
	discovery_st "$portal" >"$work/disc.log" 2>&1 &&
		timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login >"$work/login.log" 2>&1 ||
		{ sed 's/^/# /' "$work/disc.log" "$work/login.log"; return 1; }
	local d rc
	disks "$2" || return 1
	d=${DISKS[0]}
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
	session_io "C ib_isert" 1
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
	local i left orphans
	for i in $(seq 40); do
		# Live connections other than orphans of crashed discoveries, and orphans.
		left=$(conn_ids | comm -23 - <(sort -u "$work/orphans") | wc -l)
		orphans=$(conn_ids | comm -12 - <(sort -u "$work/orphans") | wc -l)
		[ "$left" = 0 ] && [ $(($(rstat conns_freed) + orphans)) = "$(rstat accepted)" ] && return 0
		sleep 0.25
	done
	ktap_info "accepted $(rstat accepted), freed $(rstat conns_freed), live $(live_conns) (orphans of crashed discoveries: $orphans)"
	return 1
}

# One SendTargets discovery session over risert: RDMA connection, login,
# text request and response, the initiator disconnects, teardown.
discover() {
	discovery_st "$portal" >"$work/rdisc.log" 2>&1 &&
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
	ktap_info "accepted $(rstat accepted), freed $(rstat conns_freed), wc_errors $(rstat wc_errors), iscsiadm crashes so far $(wc -l <"$work/iscsiadm-crashes")"
	[ "$(rstat accepted)" -ge 11 ] && [ "$(rstat wc_errors)" = 0 ] && all_freed
}

# iser_peer MODE SECONDS: one crafted message from a userspace iSER peer.
peer() { timeout 60 "$work/iser_peer" 10.77.0.2 3260 "$1" "$2" 2>&1; }

# What the kernel's initiator never sends, from iser_peer: messages shorter
# than the headers or than their declared data, an unknown iSER opcode, and a
# SCSI command before login. The first two and the last end the connection
# (the last with a login reject), the unknown opcode is dropped and the
# connection stays; every connection is freed.
malformed() {
	local bad out rc=0
	gcc -O2 -o "$work/iser_peer" "$(dirname "$0")/iser_peer.c" -lrdmacm -libverbs ||
		{ ktap_info "cannot build iser_peer (librdmacm-dev, libibverbs-dev)"; return 1; }
	bad=$(rstat bad_pdus)
	out=$(peer short 15)
	ktap_info "short message: $(paste -sd' ' <<<"$out")"
	grep -qx disconnected <<<"$out" || rc=1
	out=$(peer overlong 15)
	ktap_info "data segment longer than the message: $(paste -sd' ' <<<"$out")"
	grep -qx disconnected <<<"$out" || rc=1
	out=$(peer opcode 3)
	ktap_info "unknown iSER opcode: $(paste -sd' ' <<<"$out")"
	grep -qx connected <<<"$out" || rc=1
	out=$(peer scsi 30)
	ktap_info "SCSI command before login: $(paste -sd' ' <<<"$out")"
	grep -q "^rx opcode 0x23 class [1-9]" <<<"$out" && grep -qx disconnected <<<"$out" || rc=1
	ktap_info "bad_pdus $(rstat bad_pdus) (was $bad), accepted $(rstat accepted), freed $(rstat conns_freed)"
	[ "$rc" = 0 ] && [ "$(rstat bad_pdus)" = $((bad + 3)) ] && all_freed
}

risert_session() {
	local rc
	session_io risert 1
	rc=$?
	ktap_info "scsi_cmds $(rstat scsi_cmds), data_in $(rstat data_in), data_out $(rstat data_out), logouts $(rstat logouts), wc_errors $(rstat wc_errors)"
	[ "$rc" = 0 ] && [ "$(rstat data_in)" -gt 0 ] && [ "$(rstat data_out)" -gt 0 ] &&
		[ "$(rstat logouts)" -ge 1 ] && [ "$(rstat wc_errors)" = 0 ] && all_freed
}

# InitialR2T=No on both sides: WRITEs send their first burst as immediate
# data plus unsolicited Data-Out PDUs, which risert copies into the command
# at the PDU's offset; the rest still comes by RDMA READ.
unsolicited() {
	local u rc
	u=$(rstat unsol_data_out)
	echo No >"$tpg/param/InitialR2T" &&
		discovery_st "$portal" >/dev/null 2>&1 &&
		iscsiadm -m node -T "$iqn" -p "$portal" -I iser -o update \
			-n node.session.iscsi.InitialR2T -v No &&
		timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login >/dev/null 2>&1 &&
		disks 1 || { ktap_info "login with InitialR2T=No failed"; return 1; }
	fio --output="$work/fio-u.log" --name=u --filename="/dev/${DISKS[0]}" --ioengine=libaio \
		--direct=1 --iodepth=16 --rw=randwrite --bsrange=16k-128k --size=16m --verify=crc32c \
		--do_verify=1 --verify_fatal=1 >/dev/null 2>&1
	rc=$?
	[ "$rc" = 0 ] || tail -n 20 "$work/fio-u.log" | sed 's/^/# /'
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	echo Yes >"$tpg/param/InitialR2T"
	ktap_info "unsolicited Data-Out PDUs $(($(rstat unsol_data_out) - u)), data_out (RDMA READ) $(rstat data_out)"
	[ "$rc" = 0 ] && [ "$(rstat unsol_data_out)" -gt "$u" ] && all_freed
}

# Logs in to target A (its session gives up 5 s after losing its connection).
login_a() {
	discovery_st "$portal" >/dev/null 2>&1 &&
		iscsiadm -m node -T "$iqn" -p "$portal" -I iser -o update \
			-n node.session.timeo.replacement_timeout -v 5 &&
		timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login >/dev/null 2>&1
}

# disks N: waits for N disks of iSER sessions and puts them in DISKS.
DISKS=()
disks() {
	local i
	for i in $(seq 60); do
		mapfile -t DISKS < <(iscsiadm -m session -P3 2>/dev/null | awk '/Attached scsi disk/ { print $4 }')
		[ "${#DISKS[@]}" = "$1" ] && return 0
		sleep 0.5
	done
	ktap_info "found ${#DISKS[@]} disks, expected $1"
	return 1
}

# fio_bg DISK: 60 s of verified random writes in the background.
fio_bg() {
	fio --output="$work/fio-bg.log" --name=bg --filename="/dev/$1" --ioengine=libaio \
		--direct=1 --iodepth=16 --rw=randwrite --bs=16k --size=16m --time_based --runtime=60 \
		--verify=crc32c --verify_fatal=1 >/dev/null 2>&1 &
}

# Two targets (A gets a second LUN, which it keeps; B on a second address)
# and a session to each, with fio verify=crc32c on the three disks at once.
two_sessions() {
	local b=iqn.2026-11.org.rstorage:risert-b tb d args=() rc
	tb=$cfs/iscsi/$b/tpgt_1
	ip addr add 10.77.0.3/24 dev veth1 &&
		mkdir -p "$cfs/core/rd_mcp_0/ram1" "$cfs/core/rd_mcp_0/ram2" &&
		echo rd_pages=4096 >"$cfs/core/rd_mcp_0/ram1/control" &&
		echo rd_pages=4096 >"$cfs/core/rd_mcp_0/ram2/control" &&
		echo 1 >"$cfs/core/rd_mcp_0/ram1/enable" && echo 1 >"$cfs/core/rd_mcp_0/ram2/enable" &&
		mkdir -p "$tpg/lun/lun_1" "$tb/lun/lun_0" &&
		ln -s "$cfs/core/rd_mcp_0/ram1" "$tpg/lun/lun_1/ram1" &&
		ln -s "$cfs/core/rd_mcp_0/ram2" "$tb/lun/lun_0/ram2" &&
		mkdir "$tb/np/10.77.0.3:3260" && echo 1 >"$tb/np/10.77.0.3:3260/iser" &&
		echo 0 >"$tb/attrib/authentication" && echo 1 >"$tb/attrib/generate_node_acls" &&
		echo 1 >"$tb/attrib/cache_dynamic_acls" && echo 0 >"$tb/attrib/demo_mode_write_protect" &&
		echo 1 >"$tb/enable" || { ktap_info "target B set-up failed"; return 1; }
	login_a && discovery_st 10.77.0.3:3260 >/dev/null 2>&1 &&
		timeout 60 iscsiadm -m node -T "$b" -p 10.77.0.3:3260 -I iser --login >/dev/null 2>&1 ||
		{ ktap_info "logins failed"; return 1; }
	disks 3 || return 1
	ktap_info "sessions $(iscsiadm -m session 2>/dev/null | wc -l), disks ${DISKS[*]}, live connections $(live_conns)"
	for d in "${DISKS[@]}"; do
		args+=(--name="$d" --filename="/dev/$d")
	done
	fio --output="$work/fio3.log" --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite \
		--bsrange=4k-64k --size=8m --verify=crc32c --do_verify=1 --verify_fatal=1 \
		--group_reporting "${args[@]}" >/dev/null 2>&1
	rc=$?
	[ "$rc" = 0 ] || tail -n 20 "$work/fio3.log" | sed 's/^/# /'
	grep -E "WRITE:|READ:" "$work/fio3.log" | sed 's/^ */# /'
	[ "$(conn_ids | comm -23 - <(sort -u "$work/orphans") | wc -l)" = 2 ] || rc=1
	iscsiadm -m node --logoutall=all >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	echo 0 >"$tb/enable"
	rm -f "$tb/lun/lun_0/ram2"
	rmdir "$tb/lun/lun_0" "$tb/np/10.77.0.3:3260" "$tb" "$cfs/iscsi/$b"
	[ "$rc" = 0 ] && all_freed
}

# Task management and NOP: the initiator pings an idle session (NOP-Out every
# 5 s, answered with NOP-In), sg_reset sends a LUN reset (a task management
# request), and the session keeps working.
tmf_nop() {
	local n0 t0 rs rc
	n0=$(rstat nops)
	t0=$(rstat tmfs)
	login_a && disks 2 || return 1
	sleep 12
	sg_reset -d "/dev/${DISKS[0]}" >"$work/reset.log" 2>&1
	rs=$?
	fio --output="$work/fio-t.log" --name=t --filename="/dev/${DISKS[0]}" --ioengine=libaio \
		--direct=1 --iodepth=16 --rw=randwrite --bs=16k --size=8m --verify=crc32c \
		--verify_fatal=1 >/dev/null 2>&1
	rc=$?
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	ktap_info "NOP-Outs $(($(rstat nops) - n0)), task management requests $(($(rstat tmfs) - t0)), sg_reset exit $rs, fio exit $rc"
	[ "$rs" = 0 ] && [ "$rc" = 0 ] && [ "$(rstat nops)" -gt "$n0" ] &&
		[ "$(rstat tmfs)" -gt "$t0" ] && all_freed
}

# Logout while fio runs: the commands in flight fail or finish, the
# connection drains and is freed, nothing hangs.
logout_under_io() {
	local pid
	login_a && disks 2 || return 1
	fio_bg "${DISKS[0]}"
	pid=$!
	sleep 3
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 ||
		{ ktap_info "logout failed"; kill "$pid"; return 1; }
	timeout 60 tail --pid="$pid" -f /dev/null || { ktap_info "fio hung"; return 1; }
	iscsiadm -m node -o delete >/dev/null 2>&1
	ktap_info "scsi_cmds $(rstat scsi_cmds), logouts $(rstat logouts), wc_errors $(rstat wc_errors)"
	all_freed
}

# The portal's iser attribute is cleared under a live session: the listener
# goes, the session keeps working (verified I/O), then logs out.
portal_removed_live() {
	local d rc
	login_a && disks 2 || return 1
	d=${DISKS[0]}
	echo 0 >"$np/iser" || return 1
	ktap_info "portal disabled with $(live_conns) live connection(s), listening ids $(listeners)"
	fio --output="$work/fio-p.log" --name=p --filename="/dev/$d" --ioengine=libaio --direct=1 \
		--iodepth=16 --rw=randwrite --bs=16k --size=8m --verify=crc32c --verify_fatal=1 \
		>/dev/null 2>&1
	rc=$?
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	echo 1 >"$np/iser" || rc=1
	[ "$rc" = 0 ] && all_freed
}

cycles() {
	local i up down
	up=$(rstat portals_up)
	down=$(rstat portals_down)
	for i in $(seq 20); do
		echo 0 >"$np/iser" && echo 1 >"$np/iser" || { ktap_info "cycle $i failed"; return 1; }
	done
	ktap_info "portals_up $(rstat portals_up), portals_down $(rstat portals_down), listening ids $(listeners)"
	[ "$(rstat portals_up)" = $((up + 20)) ] && [ "$(rstat portals_down)" = $((down + 20)) ] &&
		[ "$(rstat listen_failed)" = 0 ] && [ "$(listeners)" = 1 ]
}

# The RDMA device goes away under a live session with I/O running: the
# connection is torn down (its CM event waits until risert has released the
# queue pair), the listener is lost, fio fails instead of hanging.
device_removed() {
	local pid rc lost
	lost=$(rstat listeners_lost)
	login_a && disks 2 || return 1
	fio_bg "${DISKS[0]}"
	pid=$!
	sleep 3
	rdma link delete rxe0 || return 1
	timeout 60 tail --pid="$pid" -f /dev/null
	rc=$?
	wait "$pid"
	ktap_info "fio exit $? after the removal; listeners_lost $(rstat listeners_lost), wc_errors $(rstat wc_errors)"
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1
	iscsiadm -m node -o delete >/dev/null 2>&1
	[ "$rc" = 0 ] && [ "$(rstat listeners_lost)" = $((lost + 1)) ] && all_freed &&
		echo 0 >"$np/iser"
}

reload() {
	rmmod risert && ! rstorage_loaded risert && rstorage_insmod risert &&
		rdma link add rxe0 type rxe netdev veth1 && echo 1 >"$np/iser" &&
		[ "$(rstat portals_up)" = 1 ] && session_io "reloaded risert" 2 &&
		echo 0 >"$np/iser" && all_freed && rmmod risert
}

# Adaptive completion mode (poll_idle_us): a busy connection's completion
# queue is busy-polled from its completion work; once idle for 2 ms it leaves
# the polling set, is re-armed and polled a final time, and it rejoins on its
# next completion event. Verified I/O, an idle second, a read that wakes the
# queue again: the session's connection must have left at least once and
# joined at least twice.
adaptive() {
	local line rc joins drops luns
	# Target A's LUNs (an earlier case gave it a second one).
	luns=$(find "$tpg/lun" -maxdepth 1 -name 'lun_*' | wc -l)
	rstorage_insmod risert poll_idle_us=2000 && echo 1 >"$np/iser" || return 1
	discovery_st "$portal" >/dev/null 2>&1 &&
		timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login >/dev/null 2>&1 &&
		disks "$luns" || { ktap_info "login in the adaptive mode failed"; return 1; }
	fio --output="$work/fio-a.log" --name=a --filename="/dev/${DISKS[0]}" --ioengine=libaio \
		--direct=1 --iodepth=16 --rw=randwrite --bsrange=4k-64k --size=16m --verify=crc32c \
		--do_verify=1 --verify_fatal=1 >/dev/null 2>&1
	rc=$?
	[ "$rc" = 0 ] || tail -n 20 "$work/fio-a.log" | sed 's/^/# /'
	sleep 1
	dd if="/dev/${DISKS[0]}" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null || rc=1
	# The session's connection is the newest one.
	line=$(grep '^conn ' "$stats" | sort -k2 -n | tail -n1)
	ktap_info "$line"
	joins=$(sed -n 's/.* joins \([0-9]*\).*/\1/p' <<<"$line")
	drops=$(sed -n 's/.* idle_drops \([0-9]*\).*/\1/p' <<<"$line")
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	echo 0 >"$np/iser"
	[ "$rc" = 0 ] && [ "${drops:-0}" -ge 1 ] && [ "${joins:-0}" -ge 2 ] && all_freed &&
		rmmod risert
}

mkdir -p "$work"
: >"$work/iscsiadm-crashes"
: >"$work/orphans"
ktap_check "rdma_rxe on a veth pair" rxe_up
ktap_check "LIO target with a ramdisk LUN and a portal, open-iscsi with ib_iser" eval 'lio_up && initiator_up'
ktap_check "C ib_isert: iSER login, fio verify=crc32c, logout" c_isert
ktap_check "C ib_isert unloads after the portal's iser is disabled" c_isert_unload
ktap_check "risert loads and listens on the portal" risert_listens
ktap_check "rmmod risert is refused while a portal uses it" busy_rmmod_refused
ktap_check "iSER discovery through risert: login, SendTargets, disconnect, connection drained and freed" discovery
ktap_check "10 more discoveries, every connection drained and freed" discoveries
ktap_check "malformed and out-of-order PDUs from a userspace peer: dropped or disconnected, all freed" malformed
ktap_check "risert: iSER login, fio verify=crc32c, logout, connection freed" risert_session
ktap_check "InitialR2T=No: unsolicited Data-Out PDUs, fio verify=crc32c" unsolicited
ktap_check "two targets, three LUNs, two sessions at once: fio verify=crc32c on all" two_sessions
ktap_check "NOP-Out pings and a LUN reset (task management) on a live session, then verified I/O" tmf_nop
ktap_check "logout while fio runs: no hang, connection drained and freed" logout_under_io
ktap_check "portal disabled under a live session: I/O verified, logout, freed" portal_removed_live
ktap_check "20 portal disable/enable cycles, one listener each" cycles
ktap_check "RDMA device removed under a live session with fio running: no hang, all freed" device_removed
ktap_check "risert unloads, reloads and serves a verified session" reload
ktap_check "adaptive completion mode: busy-polled CQ, fio verify=crc32c, left and rejoined the polling set" adaptive

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
