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
. "$(dirname "$0")/iser_lib.sh"

work=/tmp/risert
iqn=$iser_iqn cfs=$iser_cfs tpg=$iser_tpg portal=$iser_portal np=$iser_np
stats=/sys/kernel/debug/risert/stats

ktap_print_header
rstorage_require fio iscsiadm iscsid rdma sg_reset
ktap_set_plan 27

rstat() { awk -v k="$1" '$1 == k { print $2 }' "$stats"; }

# Ids of the connections risert has now.
conn_ids() { awk '$1 == "conn" { print $2 }' "$stats" | sort; }

# discovery PORTAL: SendTargets discovery over iSER, printing the targets.
# open-iscsi's iscsiadm (2.1.8) now and then waits 30 s for a discovery
# session's text response, reconnects and segfaults (exit 139), with the C
# ib_isert as well as with risert. Such a crash is retried, twice at most,
# only when it is shown to be the initiator's: risert received every PDU the
# crashed attempt's connection sent and answered each one (its rx equals its
# tx: nothing left unanswered), without a failed work request or a bad PDU.
# That connection stays up (the kernel initiator keeps it until its device
# goes): it is recorded in $work/orphans, and all_freed leaves it out. Any
# other crash fails the discovery.
discovery_st() {
	local i rc before wc bad id line rx tx
	for i in 1 2 3; do
		before=$(conn_ids)
		wc=$(rstat wc_errors) bad=$(rstat bad_pdus)
		timeout 90 iscsiadm -m discovery -t sendtargets -p "$1" -I iser
		rc=$?
		[ "$rc" = 139 ] || return "$rc"
		echo crash >>"$work/iscsiadm-crashes"
		sleep 1
		for id in $(comm -13 <(echo "$before") <(conn_ids)); do
			line=$(awk -v id="$id" '$1 == "conn" && $2 == id' "$stats")
			rx=$(sed -n 's/.* rx \([0-9]*\) .*/\1/p' <<<"$line")
			tx=$(sed -n 's/.* tx \([0-9]*\) .*/\1/p' <<<"$line")
			ktap_print_msg "iscsiadm crashed (attempt $i); its connection: $line"
			if [ "${rx:-0}" -lt 1 ] || [ "$rx" != "$tx" ] ||
				[ "$(rstat wc_errors)" != "$wc" ] ||
				[ "$(rstat bad_pdus)" != "$bad" ]; then
				ktap_print_msg "not the initiator's crash:" \
					"rx ${rx:-?} tx ${tx:-?}," \
					"wc_errors $wc -> $(rstat wc_errors)," \
					"bad_pdus $bad -> $(rstat bad_pdus)"
				return 1
			fi
			echo "$id" >>"$work/orphans"
		done
	done
	return "$rc"
}

# The listening rdma_cm identifiers on the portal's port.
listeners() { rdma res show cm_id 2>/dev/null | grep -c "state LISTEN.*src-addr $portal" || true; }

# Discovery, login, fio verify=crc32c on the session's first disk, logout;
# $1 names the target transport in the log, $2 is how many LUNs target A has;
# a third argument "4k" adds a second verified run of 4 KiB writes.
session_io() {
	discovery_st "$portal" >"$work/disc.log" 2>&1 &&
		timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login \
			>"$work/login.log" 2>&1 ||
		{ sed 's/^/# /' "$work/disc.log" "$work/login.log"; return 1; }
	local d rc
	iser_disks "$2" || return 1
	d=${DISKS[0]}
	ktap_print_msg "$1 session disk: $d"
	rstorage_fio_verify session 16m "/dev/$d"
	rc=$?
	if [ "${3:-}" = 4k ]; then
		rstorage_fio_verify session-4k 8m "/dev/$d" -- --bs=4k || rc=1
	fi
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
risert_listens() {
	iser_autoload off
	rstorage_insmod risert || return 1
	echo 1 >"$np/iser" || return 1
	ktap_print_msg "iser $(cat "$np/iser"), portals_up $(rstat portals_up)," \
		"listening ids $(listeners)"
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
		[ "$left" = 0 ] && [ $(($(rstat conns_freed) + orphans)) = "$(rstat accepted)" ] &&
			return 0
		sleep 0.25
	done
	ktap_print_msg "accepted $(rstat accepted), freed $(rstat conns_freed)," \
		"live $(live_conns) (orphans of crashed discoveries: $orphans)"
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
	ktap_print_msg "accepted $(rstat accepted), logins $(rstat logins), text $(rstat text)," \
		"logouts $(rstat logouts), pdus_rx $(rstat pdus_rx), pdus_tx $(rstat pdus_tx)"
	[ "$rc" = 0 ] && [ "$(rstat logins)" -ge 1 ] && [ "$(rstat text)" -ge 1 ] &&
		[ "$(rstat wc_errors)" = 0 ] && all_freed
}

discoveries() {
	local i
	for i in $(seq 10); do
		discover || {
			ktap_print_msg "discovery $i failed"
			sed 's/^/# /' "$work/rdisc.log"
			return 1
		}
	done
	ktap_print_msg "accepted $(rstat accepted), freed $(rstat conns_freed)," \
		"wc_errors $(rstat wc_errors)," \
		"iscsiadm crashes so far $(wc -l <"$work/iscsiadm-crashes")"
	[ "$(rstat accepted)" -ge 11 ] && [ "$(rstat wc_errors)" = 0 ] && all_freed
}

# iser_peer MODE SECONDS: one crafted message from a userspace iSER peer.
# (Built on the host by the kselftest Makefile, installed beside this script.)
peer() { timeout 60 "$(dirname "$0")/iser_peer" 10.77.0.2 3260 "$1" "$2" 2>&1; }

# What the kernel's initiator never sends, from iser_peer: messages shorter
# than the headers or than their declared data, an unknown iSER opcode, and a
# SCSI command before login. The first two and the last end the connection
# (the last with a login reject), the unknown opcode is dropped and the
# connection stays; every connection is freed.
malformed() {
	local bad out rc=0
	[ -x "$(dirname "$0")/iser_peer" ] || {
		ktap_print_msg "iser_peer was not built (librdmacm-dev, libibverbs-dev)"
		return 1
	}
	bad=$(rstat bad_pdus)
	out=$(peer short 15)
	ktap_print_msg "short message: $(paste -sd' ' <<<"$out")"
	grep -qx disconnected <<<"$out" || rc=1
	out=$(peer overlong 15)
	ktap_print_msg "data segment longer than the message: $(paste -sd' ' <<<"$out")"
	grep -qx disconnected <<<"$out" || rc=1
	out=$(peer opcode 3)
	ktap_print_msg "unknown iSER opcode: $(paste -sd' ' <<<"$out")"
	grep -qx connected <<<"$out" || rc=1
	out=$(peer scsi 30)
	ktap_print_msg "SCSI command before login: $(paste -sd' ' <<<"$out")"
	grep -q "^rx opcode 0x23 class [1-9]" <<<"$out" && grep -qx disconnected <<<"$out" || rc=1
	ktap_print_msg "bad_pdus $(rstat bad_pdus) (was $bad), accepted $(rstat accepted)," \
		"freed $(rstat conns_freed)"
	[ "$rc" = 0 ] && [ "$(rstat bad_pdus)" = $((bad + 3)) ] && all_freed
}

# Send descriptors come from the connection's pool: of the session's sends,
# only the few login responses (before the pool exists) are allocated. The
# kernel initiator offers send with invalidate (its always_register default)
# and rxe can do it: SCSI responses invalidate the command's key, which the
# initiator checks against the key it registered (a wrong one fails the I/O).
# A WRITE whose data all came as immediate data (4-8 KiB writes, within the
# 8 KiB data segment; a second fio run writes 8 MiB in 4 KiB blocks, which
# the block layer partly merges) is executed on its receive buffer,
# zero-copy, and the buffer is posted again when the command is released:
# were it not, the initiator would run out of the 128 receive buffers and
# the session would stall. So more than 128 such writes must complete.
risert_session() {
	local rc a0 p0 i0 u0 z0 da dp di du dz
	z0=$(rstat imm_in_place)
	a0=$(rstat tx_allocs)
	p0=$(rstat pdus_tx)
	i0=$(rstat send_inv)
	u0=$(rstat unsignaled)
	session_io risert 1 4k
	rc=$?
	da=$(($(rstat tx_allocs) - a0))
	dp=$(($(rstat pdus_tx) - p0))
	di=$(($(rstat send_inv) - i0))
	du=$(($(rstat unsignaled) - u0))
	dz=$(($(rstat imm_in_place) - z0))
	ktap_print_msg "scsi_cmds $(rstat scsi_cmds), data_in $(rstat data_in)," \
		"data_out $(rstat data_out), logouts $(rstat logouts), wc_errors $(rstat wc_errors)"
	ktap_print_msg "writes executed on their receive buffer (zero-copy): $dz"
	ktap_print_msg "sends $dp, of which with a descriptor allocated for them: $da," \
		"with invalidate: $di, unsignaled: $du; signal-only requests: $(rstat signal_posts)"
	# fio keeps 16 commands in flight: most responses go unsignaled.
	[ "$rc" = 0 ] && [ "$(rstat data_in)" -gt 0 ] && [ "$(rstat data_out)" -gt 0 ] &&
		[ "$(rstat logouts)" -ge 1 ] && [ "$(rstat wc_errors)" = 0 ] &&
		[ $((da * 10)) -lt "$dp" ] && [ "$di" -gt 0 ] && [ $((du * 2)) -gt "$dp" ] &&
		[ "$dz" -gt 128 ] && all_freed
}

# login_no PARAM: logs in to target A with the session parameter PARAM
# (InitialR2T, ImmediateData) set to No on both sides; its disk is DISKS[0].
login_no() {
	echo No >"$tpg/param/$1" &&
		discovery_st "$portal" >/dev/null 2>&1 &&
		iscsiadm -m node -T "$iqn" -p "$portal" -I iser -o update \
			-n "node.session.iscsi.$1" -v No &&
		timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login \
			>/dev/null 2>&1 &&
		iser_disks 1 && return 0
	ktap_print_msg "login with $1=No failed"
	echo Yes >"$tpg/param/$1"
	return 1
}

# logout_yes PARAM: logs out of the session of login_no PARAM and sets the
# target's PARAM back to Yes; fails when the logout did.
logout_yes() {
	local rc=0
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	echo Yes >"$tpg/param/$1"
	return "$rc"
}

# InitialR2T=No on both sides: WRITEs send their first burst as immediate
# data plus unsolicited Data-Out PDUs, which risert copies into the command
# at the PDU's offset; the rest still comes by RDMA READ.
unsolicited() {
	local u rc
	u=$(rstat unsol_data_out)
	login_no InitialR2T || return 1
	rstorage_fio_verify unsolicited 16m "/dev/${DISKS[0]}" -- --bsrange=16k-128k
	rc=$?
	logout_yes InitialR2T || rc=1
	ktap_print_msg "unsolicited Data-Out PDUs $(($(rstat unsol_data_out) - u))," \
		"data_out (RDMA READ) $(rstat data_out)"
	[ "$rc" = 0 ] && [ "$(rstat unsol_data_out)" -gt "$u" ] && all_freed
}

# ImmediateData=No on both sides: no write may carry its data in the command,
# so every write's data comes by RDMA READ (risert's data_out, one per write
# command, at least the disk's completed writes); then 1 MiB reads and writes,
# which the initiator splits at its largest transfer, all verified.
no_immediate() {
	local d0 z0 w0 w rc
	d0=$(rstat data_out)
	z0=$(rstat imm_in_place)
	login_no ImmediateData || return 1
	w0=$(awk '{print $5}' "/sys/block/${DISKS[0]}/stat")
	rstorage_fio_verify noimm 8m "/dev/${DISKS[0]}" -- --bsrange=4k-64k
	rc=$?
	w=$(($(awk '{print $5}' "/sys/block/${DISKS[0]}/stat") - w0))
	ktap_print_msg "writes completed $w, RDMA READs (data_out) $(($(rstat data_out) - d0))," \
		"largest transfer $(cat "/sys/block/${DISKS[0]}/queue/max_sectors_kb") KiB"
	[ "$w" -gt 0 ] && [ "$(($(rstat data_out) - d0))" -ge "$w" ] &&
		[ "$(rstat imm_in_place)" = "$z0" ] || rc=1
	rstorage_fio_verify large 32m "/dev/${DISKS[0]}" -- --bs=1m --iodepth=4 || rc=1
	logout_yes ImmediateData || rc=1
	[ "$rc" = 0 ] && all_freed
}

# Logs in to target A (its session gives up 5 s after losing its connection).
login_a() {
	discovery_st "$portal" >/dev/null 2>&1 &&
		iscsiadm -m node -T "$iqn" -p "$portal" -I iser -o update \
			-n node.session.timeo.replacement_timeout -v 5 &&
		timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login >/dev/null 2>&1
}

# fio_bg DISK: 60 s of verified random writes in the background.
fio_bg() {
	fio --output="$work/fio-bg.log" --name=bg --filename="/dev/$1" --ioengine=libaio \
		--direct=1 --iodepth=16 --rw=randwrite --bs=16k --size=16m --time_based \
		--runtime=60 --verify=crc32c --verify_fatal=1 >/dev/null 2>&1 &
}

# tpg_idle TPG: waits (20 s at most) until the target portal group has no
# session left. The initiator's logout returns once it has the response; the
# target closes the session after that, and LIO frees a portal group that is
# removed meanwhile under the closing session (iscsit_release_sessions_for_tpg
# skips sessions in logout), which KASAN reports as a use-after-free in
# iscsit_close_session. So a portal group is removed only once it is idle.
tpg_idle() {
	local i
	for i in $(seq 40); do
		[ -z "$(tr -d '[:space:]\0' <"$1/dynamic_sessions")" ] && return 0
		sleep 0.5
	done
	ktap_print_msg "sessions still on $1: $(tr -d '\0' <"$1/dynamic_sessions" | paste -sd' ')"
	return 1
}

# Two targets (A gets a second LUN, which it keeps; B on a second address)
# and a session to each, with fio verify=crc32c on the three disks at once.
two_sessions() {
	local b=iqn.2026-11.org.rstorage:risert-b tb rc
	tb=$cfs/iscsi/$b/tpgt_1
	ip addr add 10.77.0.3/24 dev veth1 &&
		mkdir -p "$cfs/core/rd_mcp_0/ram1" "$cfs/core/rd_mcp_0/ram2" &&
		echo rd_pages=4096 >"$cfs/core/rd_mcp_0/ram1/control" &&
		echo rd_pages=4096 >"$cfs/core/rd_mcp_0/ram2/control" &&
		echo 1 >"$cfs/core/rd_mcp_0/ram1/enable" &&
		echo 1 >"$cfs/core/rd_mcp_0/ram2/enable" &&
		mkdir -p "$tpg/lun/lun_1" "$tb/lun/lun_0" &&
		ln -s "$cfs/core/rd_mcp_0/ram1" "$tpg/lun/lun_1/ram1" &&
		ln -s "$cfs/core/rd_mcp_0/ram2" "$tb/lun/lun_0/ram2" &&
		mkdir "$tb/np/10.77.0.3:3260" && echo 1 >"$tb/np/10.77.0.3:3260/iser" &&
		echo 0 >"$tb/attrib/authentication" && echo 1 >"$tb/attrib/generate_node_acls" &&
		echo 1 >"$tb/attrib/cache_dynamic_acls" &&
		echo 0 >"$tb/attrib/demo_mode_write_protect" &&
		echo 1 >"$tb/enable" || { ktap_print_msg "target B set-up failed"; return 1; }
	login_a && discovery_st 10.77.0.3:3260 >/dev/null 2>&1 &&
		timeout 60 iscsiadm -m node -T "$b" -p 10.77.0.3:3260 -I iser --login \
			>/dev/null 2>&1 ||
		{ ktap_print_msg "logins failed"; return 1; }
	iser_disks 3 || return 1
	ktap_print_msg "sessions $(iscsiadm -m session 2>/dev/null | wc -l), disks ${DISKS[*]}," \
		"live connections $(live_conns)"
	rstorage_fio_verify three 8m "${DISKS[@]/#//dev/}"
	rc=$?
	[ "$(conn_ids | comm -23 - <(sort -u "$work/orphans") | wc -l)" = 2 ] || rc=1
	iscsiadm -m node --logoutall=all >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	tpg_idle "$tb" || rc=1
	echo 0 >"$tb/enable"
	rm -f "$tb/lun/lun_0/ram2"
	rmdir "$tb/lun/lun_0" "$tb/np/10.77.0.3:3260" "$tb" "$cfs/iscsi/$b"
	[ "$rc" = 0 ] && all_freed
}

# Four sessions to target A at once (open-iscsi's node.session.nr_sessions),
# each on its own RDMA connection: fio verify=crc32c on every disk of every
# session at once (each in its own 2 MiB region of its LUN).
four_sessions() {
	local luns args=() i=0 d rc
	luns=$(find "$tpg/lun" -maxdepth 1 -name 'lun_*' | wc -l)
	discovery_st "$portal" >/dev/null 2>&1 &&
		iscsiadm -m node -T "$iqn" -p "$portal" -I iser -o update \
			-n node.session.nr_sessions -v 4 &&
		timeout 120 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login \
			>/dev/null 2>&1 &&
		iser_disks $((4 * luns)) || { ktap_print_msg "four logins failed"; return 1; }
	ktap_print_msg "sessions $(iscsiadm -m session 2>/dev/null | wc -l), disks ${DISKS[*]}," \
		"live connections $(live_conns)"
	for d in "${DISKS[@]}"; do
		args+=(--name="s$i" --filename="/dev/$d" --offset=$((i * 2))m)
		i=$((i + 1))
	done
	fio --output="$work/fio-four.log" --ioengine=libaio --direct=1 --iodepth=16 \
		--rw=randwrite --bsrange=4k-64k --size=2m --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --group_reporting "${args[@]}" >/dev/null 2>&1
	rc=$?
	[ "$rc" = 0 ] || tail -n 20 "$work/fio-four.log" | sed 's/^/# /'
	[ "$(conn_ids | comm -23 - <(sort -u "$work/orphans") | wc -l)" = 4 ] || rc=1
	timeout 120 iscsiadm -m node --logoutall=all >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	[ "$rc" = 0 ] && all_freed
}

# chap_login LUNS: logs in to target A and finds its LUNS disks.
chap_login() {
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login >/dev/null 2>&1 &&
		iser_disks "$1"
}

# CHAP through the target's configfs attributes (demo mode: tpgt_1/auth):
# a login with a wrong secret is refused, one with the right secret works
# and carries verified I/O; the multi-PDU CHAP exchange runs over iSER.
chap() {
	local rc=0 luns mark ok try
	luns=$(find "$tpg/lun" -maxdepth 1 -name 'lun_*' | wc -l)
	# LIO keeps what is written, newline included (targetcli writes none).
	printf %s risert-user >"$tpg/auth/userid" &&
		printf %s risert-secret-12 >"$tpg/auth/password" &&
		echo 1 >"$tpg/attrib/authentication" &&
		discovery_st "$portal" >/dev/null 2>&1 &&
		iscsiadm -m node -T "$iqn" -p "$portal" -I iser -o update \
			-n node.session.auth.authmethod -v CHAP &&
		iscsiadm -m node -T "$iqn" -p "$portal" -I iser -o update \
			-n node.session.auth.username -v risert-user &&
		iscsiadm -m node -T "$iqn" -p "$portal" -I iser -o update \
			-n node.session.auth.password -v wrong-secret-1 &&
		iscsiadm -m node -T "$iqn" -p "$portal" -I iser -o update \
			-n node.session.initial_login_retry_max -v 0 || rc=1
	if timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login >/dev/null 2>&1; then
		ktap_print_msg "login with a wrong CHAP secret succeeded"
		rc=1
	fi
	# The initiator may still hold the refused session and retry it with the old
	# secret (seen on slow, KASAN, guests and now and then with GCC: when it takes
	# the disconnect before the login reject, it sees a lost connection, not a
	# refusal): no retries of a failed first login (initial_login_retry_max 0),
	# then end the session and let the target free its connections before the
	# next login.
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1
	all_freed || rc=1
	# Now and then the initiator refuses to send its own next login PDU
	# ("Login/Text in progress. Cannot start new task.") and the login fails:
	# libiscsi hands each login response up to iscsid before it frees its
	# login task (and its transmit worker may still hold the task after
	# posting the request), so an iscsid that answers first finds it busy.
	# A CHAP login has several round trips, so it meets this race more often
	# than the other cases' logins. Only then is the login tried again (up to
	# five times in all), after the session is ended and its connections are
	# freed; any other failure fails the case.
	iscsiadm -m node -T "$iqn" -p "$portal" -I iser -o update \
		-n node.session.auth.password -v risert-secret-12 || rc=1
	ok=0
	for try in 1 2 3 4 5; do
		# A marker in the kernel log, not a line count: the log is a ring
		# that is full by now (the boot's KUnit output fills it), so its
		# length no longer grows.
		mark="risert.sh: CHAP login $try of $$"
		echo "$mark" >/dev/kmsg
		chap_login "$luns" && { ok=1; break; }
		dmesg | sed -n "/$mark/,\$p" |
			grep -q "Login/Text in progress. Cannot start new task" || break
		ktap_print_msg "login $try: the initiator refused its own next login PDU" \
			"(Login/Text in progress)"
		timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1
		all_freed || { rc=1; break; }
	done
	[ "$ok" = 1 ] || { ktap_print_msg "login with the right CHAP secret failed"; rc=1; }
	if [ "$rc" = 0 ]; then
		rstorage_fio_verify chap 8m "/dev/${DISKS[0]}" || rc=1
	fi
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1
	iscsiadm -m node -o delete >/dev/null 2>&1
	echo 0 >"$tpg/attrib/authentication"
	ktap_print_msg "logins $(rstat logins), accepted $(rstat accepted)," \
		"freed $(rstat conns_freed)"
	[ "$rc" = 0 ] && all_freed
}

# Task management and NOP: the initiator pings an idle session (NOP-Out every
# 5 s, answered with NOP-In), sg_reset sends a LUN reset (a task management
# request), and the session keeps working.
tmf_nop() {
	local n0 t0 rs rc
	n0=$(rstat nops)
	t0=$(rstat tmfs)
	login_a && iser_disks 2 || return 1
	sleep 12
	sg_reset -d "/dev/${DISKS[0]}" >"$work/reset.log" 2>&1
	rs=$?
	rstorage_fio_verify tmf 8m "/dev/${DISKS[0]}" -- --bs=16k
	rc=$?
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	ktap_print_msg "NOP-Outs $(($(rstat nops) - n0))," \
		"task management requests $(($(rstat tmfs) - t0)), sg_reset exit $rs, fio exit $rc"
	[ "$rs" = 0 ] && [ "$rc" = 0 ] && [ "$(rstat nops)" -gt "$n0" ] &&
		[ "$(rstat tmfs)" -gt "$t0" ] && all_freed
}

# Logout while fio runs: the commands in flight fail or finish, the
# connection drains and is freed, nothing hangs.
logout_under_io() {
	local pid
	login_a && iser_disks 2 || return 1
	fio_bg "${DISKS[0]}"
	pid=$!
	sleep 3
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 ||
		{ ktap_print_msg "logout failed"; kill "$pid"; return 1; }
	timeout 60 tail --pid="$pid" -f /dev/null || { ktap_print_msg "fio hung"; return 1; }
	iscsiadm -m node -o delete >/dev/null 2>&1
	ktap_print_msg "scsi_cmds $(rstat scsi_cmds), logouts $(rstat logouts)," \
		"wc_errors $(rstat wc_errors)"
	all_freed
}

# The portal's iser attribute is cleared under a live session: the listener
# goes, the session keeps working (verified I/O), then logs out.
portal_removed_live() {
	local d rc
	login_a && iser_disks 2 || return 1
	d=${DISKS[0]}
	echo 0 >"$np/iser" || return 1
	ktap_print_msg "portal disabled with $(live_conns) live connection(s)," \
		"listening ids $(listeners)"
	rstorage_fio_verify portal 8m "/dev/$d" -- --bs=16k
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
		echo 0 >"$np/iser" && echo 1 >"$np/iser" ||
			{ ktap_print_msg "cycle $i failed"; return 1; }
	done
	ktap_print_msg "portals_up $(rstat portals_up), portals_down $(rstat portals_down)," \
		"listening ids $(listeners)"
	[ "$(rstat portals_up)" = $((up + 20)) ] && [ "$(rstat portals_down)" = $((down + 20)) ] &&
		[ "$(rstat listen_failed)" = 0 ] && [ "$(listeners)" = 1 ]
}

# The RDMA device goes away under a live session with I/O running: the
# connection is torn down (its CM event waits until risert has released the
# queue pair), the listener is lost, fio fails instead of hanging.
device_removed() {
	local pid rc lost
	lost=$(rstat listeners_lost)
	login_a && iser_disks 2 || return 1
	fio_bg "${DISKS[0]}"
	pid=$!
	sleep 3
	rdma link delete rxe0 || return 1
	timeout 60 tail --pid="$pid" -f /dev/null
	rc=$?
	wait "$pid"
	ktap_print_msg "fio exit $? after the removal; listeners_lost $(rstat listeners_lost)," \
		"wc_errors $(rstat wc_errors)"
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1
	iscsiadm -m node -o delete >/dev/null 2>&1
	[ "$rc" = 0 ] && [ "$(rstat listeners_lost)" = $((lost + 1)) ] && all_freed &&
		echo 0 >"$np/iser"
}

# Reloaded with budget=0: each completion pass drains its queue to empty.
reload() {
	rmmod risert && ! rstorage_loaded risert && rstorage_insmod risert budget=0 &&
		rdma link add rxe0 type rxe netdev veth1 && echo 1 >"$np/iser" &&
		[ "$(rstat portals_up)" = 1 ] && session_io "reloaded risert, budget=0" 2 &&
		echo 0 >"$np/iser" && drop_orphans && all_freed && rmmod risert
}

# A connection of a crashed discovery (see discovery_st) holds the module
# (the target's connection holds its transport) until the initiator lets it
# go, which it does when the RDMA device goes: if there is one, rxe0 is
# removed and added again.
drop_orphans() {
	local n
	n=$(conn_ids | comm -12 - <(sort -u "$work/orphans") | wc -l)
	[ "$n" = 0 ] && return 0
	ktap_print_msg "$n connection(s) of crashed discoveries: rxe0 removed and added again"
	rdma link delete rxe0 && rdma link add rxe0 type rxe netdev veth1
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
		timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login \
			>/dev/null 2>&1 &&
		iser_disks "$luns" ||
		{ ktap_print_msg "login in the adaptive mode failed"; return 1; }
	rstorage_fio_verify adaptive 16m "/dev/${DISKS[0]}"
	rc=$?
	sleep 1
	dd if="/dev/${DISKS[0]}" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null || rc=1
	# The session's connection is the newest one.
	line=$(grep '^conn ' "$stats" | sort -k2 -n | tail -n1)
	ktap_print_msg "$line"
	joins=$(sed -n 's/.* joins \([0-9]*\).*/\1/p' <<<"$line")
	drops=$(sed -n 's/.* idle_drops \([0-9]*\).*/\1/p' <<<"$line")
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	echo 0 >"$np/iser"
	[ "$rc" = 0 ] && [ "${drops:-0}" -ge 1 ] && [ "${joins:-0}" -ge 2 ] && all_freed &&
		rmmod risert
}

# A send queue of 4 sends and 4 RDMA transfers (send_queue=4) under fio at
# queue depth 16: posts find it full (ENOMEM, before anything is posted).
# SCSI responses and RDMA transfers then go back to LIO, which queues them
# again later (its queue-full path); control responses wait in the
# connection's backlog. The data is verified, the refusals are counted.
queue_full() {
	local luns rc
	luns=$(find "$tpg/lun" -maxdepth 1 -name 'lun_*' | wc -l)
	rstorage_insmod risert send_queue=4 && echo 1 >"$np/iser" || return 1
	session_io "send_queue=4" "$luns"
	rc=$?
	ktap_print_msg "posts refused with a full send queue: $(rstat sq_full)," \
		"control responses backlogged: $(rstat backlogged), wc_errors $(rstat wc_errors)"
	echo 0 >"$np/iser"
	[ "$rc" = 0 ] && [ "$(rstat sq_full)" -gt 0 ] && [ "$(rstat backlogged)" -gt 0 ] &&
		[ "$(rstat wc_errors)" = 0 ] && all_freed && rmmod risert
}

logout_a() {
	local rc=0
	timeout 60 iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1 || rc=1
	iscsiadm -m node -o delete >/dev/null 2>&1
	return "$rc"
}

# disk_of_model MODEL: the disk of $DISKS whose SCSI model starts with MODEL.
disk_of_model() {
	local d
	for d in "${DISKS[@]}"; do
		case $(cat "/sys/block/$d/device/model" 2>/dev/null) in
		"$1"*) echo "$d"; return 0 ;;
		esac
	done
	return 1
}

# ABORT TASK of a command the target is executing. LUN 9 of target A is an
# iblock backstore on a null_blk device whose every I/O completes after 4 s.
# iser_peer logs in, sends a WRITE of one block to LUN 9 (the target fetches
# its data by RDMA READ and hands it to the backend), then ABORT TASK for it:
# the target core holds the abort until the backend is done and answers
# "function complete". The aborted command is freed, and a session of the
# kernel's initiator then carries verified I/O.
abort_task() {
	local core=$cfs/core/iblock_9/slow lun=$tpg/lun/lun_9 nb=/sys/kernel/config/nullb/slow
	local luns t0 d0 n0 n1 out dev rc=0
	# The disk is made through null_blk's configfs, which works whether or not
	# an earlier program left the module loaded (module parameters would not).
	modprobe null_blk nr_devices=0 && mkdir "$nb" && echo 1024 >"$nb/size" &&
		echo 2 >"$nb/irqmode" && echo 4000000000 >"$nb/completion_nsec" &&
		echo 1 >"$nb/power" && dev=/dev/slow &&
		{ [ -b "$dev" ] || dev=/dev/nullb$(cat "$nb/index"); } &&
		[ -b "$dev" ] && mkdir -p "$core" && echo "udev_path=$dev" >"$core/control" &&
		echo 1 >"$core/enable" && mkdir "$lun" && ln -s "$core" "$lun/slow" ||
		{ ktap_print_msg "slow LUN set-up failed (null_blk device ${dev:-none})"; rc=1; }
	rstorage_loaded risert || rstorage_insmod risert || rc=1
	echo 1 >"$np/iser" || rc=1
	t0=$(rstat tmfs) d0=$(rstat data_out)
	n0=$(dmesg | grep -c "ABORT_TASK: Sending TMR_FUNCTION_COMPLETE")
	out=$(timeout 90 "$(dirname "$0")/iser_peer" 10.77.0.2 3260 abort 9 "$iqn" 2>&1)
	n1=$(dmesg | grep -c "ABORT_TASK: Sending TMR_FUNCTION_COMPLETE")
	ktap_print_msg "peer: $(paste -sd' ' <<<"$out"); RDMA READs $(($(rstat data_out) - d0))," \
		"task management requests $(($(rstat tmfs) - t0))," \
		"ABORT TASK completed by the target $((n1 - n0))"
	dmesg | grep -i "abort\|RefTaskTag\|ITT" | tail -n 8 | sed 's/^/# /'
	tpg_idle "$tpg" || rc=1
	rm -f "$lun/slow"
	rmdir "$lun" "$core" "$cfs/core/iblock_9" 2>/dev/null
	echo 0 >"$nb/power" 2>/dev/null
	rmdir "$nb" 2>/dev/null
	modprobe -r null_blk 2>/dev/null
	luns=$(find "$tpg/lun" -maxdepth 1 -name 'lun_*' | wc -l)
	session_io "after ABORT TASK" "$luns" || rc=1
	echo 0 >"$np/iser"
	[ "$rc" = 0 ] && grep -qx "tmf response 0" <<<"$out" && [ "$n1" -gt "$n0" ] &&
		[ "$(rstat tmfs)" -gt "$t0" ] && [ "$(rstat data_out)" -gt "$d0" ] && all_freed
}

# Malformed PDUs in the full-feature phase: iser_peer logs in (a normal
# session) and sends 10,000 PDUs made from valid ones with random header
# bytes changed, now and then a broken iSER header or a length that does not
# match; it logs in again whenever the target drops it. Meanwhile a session of
# the kernel's initiator runs fio verify=crc32c on target A, over and over
# until the peer is done: it must pass every time. risert counts what it
# drops (bad_pdus: broken messages, which end the connection; pdus_rejected:
# PDUs it does not hand to the target; rsp_dropped: responses the target
# queued without a state); the peer counts what the target answered, Rejects
# included. Every session then closes and every connection is freed.
fuzz_full_feature() {
	local luns b0 r0 w0 e0 x0 t0 out prc rc=0 rounds=0 ppid d
	luns=$(find "$tpg/lun" -maxdepth 1 -name 'lun_*' | wc -l)
	{ rstorage_loaded risert || rstorage_insmod risert; } && echo 1 >"$np/iser" && login_a &&
		iser_disks "$luns" || return 1
	d=$(disk_of_model RAMDISK) || return 1
	b0=$(rstat bad_pdus) r0=$(rstat pdus_rejected) w0=$(rstat wc_errors) e0=$(rstat conns_freed)
	x0=$(rstat rsp_dropped) t0=$(rstat tag_waits)
	timeout 600 "$(dirname "$0")/iser_peer" 10.77.0.2 3260 fuzz 10000 "$iqn" 7 \
		>"$work/fuzz.out" 2>&1 &
	ppid=$!
	while kill -0 "$ppid" 2>/dev/null; do
		rstorage_fio_verify fuzz 8m "/dev/$d" >/dev/null || { rc=1; break; }
		rounds=$((rounds + 1))
	done
	wait "$ppid"
	prc=$?
	out=$(tail -n 1 "$work/fuzz.out")
	ktap_print_msg "peer (exit $prc): $out"
	ktap_print_msg "fio verify rounds meanwhile: $rounds (rc $rc); risert dropped" \
		"$(($(rstat bad_pdus) - b0)) broken messages, did not pass on" \
		"$(($(rstat pdus_rejected) - r0))," \
		"dropped $(($(rstat rsp_dropped) - x0)) stateless" \
		"responses, kept $(($(rstat tag_waits) - t0)) PDUs waiting for a command," \
		"freed $(($(rstat conns_freed) - e0)) connections," \
		"wc_errors $(($(rstat wc_errors) - w0))"
	logout_a || rc=1
	tpg_idle "$tpg" || rc=1
	echo 0 >"$np/iser"
	[ "$rc" = 0 ] && [ "$prc" = 0 ] && [ "$rounds" -ge 1 ] &&
		grep -q "^sent 10000 .* reject [1-9]" <<<"$out" &&
		[ "$(rstat wc_errors)" = "$w0" ] && all_freed
}

# An initiator that vanishes without a disconnect. iser_peer runs in its own
# network namespace with its own rxe device on its own veth pair: target
# (rxe1 on vethw0, 10.78.1.2) - initiator (rxe2 on vethv1, 10.78.1.1). It
# logs in through a second portal (10.78.1.2:3260), sends TEST UNIT READY
# and goes silent; the test then takes the initiator's address away (the
# peer is gone from the network: no DREQ, no flush, and the target's link
# stays up). The target core sends no NOP-In over iSER, so only risert's
# keepalive probe (an empty RDMA WRITE after keepalive_s = 15 s without a
# received PDU) can find out: the probe is still unanswered a period later,
# so the connection is terminated, the session closes and the connection is
# freed, within 120 s and with no hang; the time it took is printed. The peer
# is killed afterwards. Then a session of the kernel's initiator carries
# verified I/O.
vanish() {
	local ns=rstorage-ini np2=$tpg/np/10.78.1.2:3260 e0 l0 a0 k0 ppid i t0 t
	local luns rc=0
	rstorage_loaded risert || rstorage_insmod risert || return 1
	echo 1 >"$np/iser" || return 1
	ip netns add "$ns" && ip link add vethw0 type veth peer name vethv1 netns "$ns" &&
		ip addr add 10.78.1.2/24 dev vethw0 && ip link set vethw0 up &&
		ip -n "$ns" addr add 10.78.1.1/24 dev vethv1 && ip -n "$ns" link set vethv1 up &&
		ip -n "$ns" link set lo up &&
		rdma link add rxe1 type rxe netdev vethw0 &&
		ip netns exec "$ns" rdma link add rxe2 type rxe netdev vethv1 &&
		mkdir "$np2" && echo 1 >"$np2/iser" ||
		{ ktap_print_msg "set-up of the initiator's own network failed"; rc=1; }
	e0=$(rstat conns_freed) l0=$(rstat keepalive_lost) a0=$(rstat accepted) \
		k0=$(rstat keepalives)
	if [ "$rc" = 0 ]; then
		ip netns exec "$ns" "$(dirname "$0")/iser_peer" 10.78.1.2 3260 vanish 900 "$iqn" \
			>"$work/vanish.out" 2>&1 &
		ppid=$!
		for i in $(seq 120); do
			grep -q "logged in" "$work/vanish.out" || ! kill -0 "$ppid" 2>/dev/null &&
				break
			sleep 0.5
		done
		grep -q "logged in" "$work/vanish.out" && [ "$(rstat accepted)" -gt "$a0" ] ||
			{ ktap_print_msg "peer: $(paste -sd' ' "$work/vanish.out")"; rc=1; }
	fi
	if [ "$rc" = 0 ]; then
		t0=$(date +%s)
		ip -n "$ns" addr flush dev vethv1
		while [ $(($(date +%s) - t0)) -lt 120 ]; do
			[ -z "$(tr -d '[:space:]\0' <"$tpg/dynamic_sessions")" ] &&
				[ "$(rstat conns_freed)" -gt "$e0" ] && break
			sleep 0.5
		done
		t=$(($(date +%s) - t0))
		ktap_print_msg "after $t s: connections freed $(($(rstat conns_freed) - e0))," \
			"keepalive probes $(($(rstat keepalives) - k0))," \
			"probes unanswered $(($(rstat keepalive_lost) - l0))," \
			"sessions left: $(tr -d '\0' <"$tpg/dynamic_sessions" | paste -sd' ')"
		[ -z "$(tr -d '[:space:]\0' <"$tpg/dynamic_sessions")" ] &&
			[ "$(rstat conns_freed)" -gt "$e0" ] &&
			[ "$(rstat keepalive_lost)" -gt "$l0" ] || rc=1
	fi
	[ -n "${ppid:-}" ] && { kill -9 "$ppid" 2>/dev/null; wait "$ppid" 2>/dev/null; }
	echo 0 >"$np2/iser" 2>/dev/null
	rmdir "$np2" 2>/dev/null
	ip netns exec "$ns" rdma link delete rxe2 2>/dev/null
	rdma link delete rxe1 2>/dev/null
	ip link del vethw0 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	luns=$(find "$tpg/lun" -maxdepth 1 -name 'lun_*' | wc -l)
	session_io "after the vanished initiator" "$luns" || rc=1
	echo 0 >"$np/iser"
	[ "$rc" = 0 ] && all_freed
}

# The portal's address moves to another device: a bonding fail-over. The
# target's address is on an active-backup bond (rbond0, 10.78.2.1) of two
# veth ports whose MAC follows the active port (fail_over_mac=active), with
# an rxe device on the bond. Making the other port active changes the bond's
# MAC: rdma_cm raises ADDR_CHANGE on the listener bound there and destroys
# it. risert must listen again with a new identifier (as ib_isert does), so
# a discovery through that portal still succeeds afterwards.
addr_change() {
	local np3=$tpg/np/10.78.2.1:3260 l0 r0 a0 i rc=0 n
	rstorage_loaded risert || rstorage_insmod risert || return 1
	modprobe bonding max_bonds=0 2>/dev/null
	ip link add rbond0 type bond mode active-backup fail_over_mac active miimon 50 &&
		ip link add rbs0 type veth peer name rbs0p &&
		ip link add rbs1 type veth peer name rbs1p &&
		ip link set rbs0p up && ip link set rbs1p up &&
		ip link set rbs0 master rbond0 && ip link set rbs1 master rbond0 &&
		ip link set rbond0 up && ip addr add 10.78.2.1/24 dev rbond0 &&
		rdma link add rxe3 type rxe netdev rbond0 &&
		mkdir "$np3" && echo 1 >"$np3/iser" ||
		{ ktap_print_msg "set-up of the bond failed"; rc=1; }
	l0=$(rstat listeners_lost) r0=$(rstat relistens) a0=$(rstat accepted)
	n=$(rdma res show cm_id 2>/dev/null | grep -c "state LISTEN.*src-addr 10.78.2.1:3260")
	[ "$rc" = 0 ] && [ "$n" = 1 ] || { ktap_print_msg "not listening on the bond ($n)"; rc=1; }
	if [ "$rc" = 0 ]; then
		ktap_print_msg "active port $(cat /sys/class/net/rbond0/bonding/active_slave)," \
			"MAC $(cat /sys/class/net/rbond0/address)"
		echo rbs1 >/sys/class/net/rbond0/bonding/active_slave
		for i in $(seq 40); do
			[ "$(rstat relistens)" -gt "$r0" ] && break
			sleep 0.5
		done
		n=$(rdma res show cm_id 2>/dev/null |
			grep -c "state LISTEN.*src-addr 10.78.2.1:3260")
		ktap_print_msg "active port $(cat /sys/class/net/rbond0/bonding/active_slave)," \
			"MAC $(cat /sys/class/net/rbond0/address); listeners lost" \
			"$(($(rstat listeners_lost) - l0)), listening again" \
			"$(($(rstat relistens) - r0))," \
			"listening identifiers on the address: $n"
		[ "$(rstat listeners_lost)" -gt "$l0" ] && [ "$(rstat relistens)" -gt "$r0" ] &&
			[ "$n" = 1 ] || rc=1
	fi
	if [ "$rc" = 0 ]; then
		discovery_st 10.78.2.1:3260 >"$work/disc-bond.log" 2>&1
		ktap_print_msg "discovery through the moved portal:" \
			"$(paste -sd' ' "$work/disc-bond.log")"
		grep -q "$iqn" "$work/disc-bond.log" && [ "$(rstat accepted)" -gt "$a0" ] || rc=1
		iscsiadm -m node -p 10.78.2.1:3260 -o delete >/dev/null 2>&1
	fi
	echo 0 >"$np3/iser" 2>/dev/null
	rmdir "$np3" 2>/dev/null
	rdma link delete rxe3 2>/dev/null
	ip link del rbond0 2>/dev/null
	ip link del rbs0 2>/dev/null
	ip link del rbs1 2>/dev/null
	[ "$rc" = 0 ] && all_freed
}

mkdir -p "$work"
: >"$work/iscsiadm-crashes"
: >"$work/orphans"
rstorage_case "rdma_rxe on a veth pair" iser_rxe_up
rstorage_case "LIO target with a ramdisk LUN and a portal, open-iscsi with ib_iser" \
	eval 'iser_lio_up 8192 && iser_initiator_up'
rstorage_case "C ib_isert: iSER login, fio verify=crc32c, logout" c_isert
rstorage_case "C ib_isert unloads after the portal's iser is disabled" c_isert_unload
rstorage_case "risert loads and listens on the portal" risert_listens
rstorage_case "rmmod risert is refused while a portal uses it" busy_rmmod_refused
case_name="iSER discovery through risert: login, SendTargets, disconnect,"
rstorage_case "$case_name connection drained and freed" discovery
rstorage_case "10 more discoveries, every connection drained and freed" discoveries
case_name="malformed and out-of-order PDUs from a userspace peer:"
rstorage_case "$case_name dropped or disconnected, all freed" malformed
rstorage_case "risert: iSER login, fio verify=crc32c, logout, connection freed" risert_session
rstorage_case "InitialR2T=No: unsolicited Data-Out PDUs, fio verify=crc32c" unsolicited
rstorage_case "ImmediateData=No: write data by RDMA READ, 1 MiB I/O, fio verify=crc32c" no_immediate
rstorage_case "two targets, three LUNs, two sessions at once: fio verify=crc32c on all" two_sessions
rstorage_case "four sessions to one target at once: fio verify=crc32c on every disk" four_sessions
rstorage_case "CHAP: a wrong secret is refused, the right one logs in, fio verify=crc32c" chap
case_name="NOP-Out pings and a LUN reset (task management) on a live session,"
rstorage_case "$case_name then verified I/O" tmf_nop
rstorage_case "logout while fio runs: no hang, connection drained and freed" logout_under_io
rstorage_case "portal disabled under a live session: I/O verified, logout, freed" \
	portal_removed_live
rstorage_case "20 portal disable/enable cycles, one listener each" cycles
rstorage_case "RDMA device removed under a live session with fio running: no hang, all freed" \
	device_removed
rstorage_case "risert unloads, reloads with budget=0 and serves a verified session" reload
case_name="adaptive completion mode: busy-polled CQ, fio verify=crc32c,"
rstorage_case "$case_name left and rejoined the polling set" adaptive
rstorage_case "send queue of 4: posts refused when full, LIO queues again, fio verify=crc32c" \
	queue_full
case_name="ABORT TASK of a WRITE the backend holds: function complete, command freed,"
rstorage_case "$case_name verified I/O after" abort_task
case_name="10,000 malformed full-feature PDUs from a userspace peer"
rstorage_case "$case_name while a session runs fio verify=crc32c" fuzz_full_feature
case_name="an initiator that vanishes without a disconnect: session closed, connection freed,"
rstorage_case "$case_name verified I/O after" vanish
case_name="the portal's address moves to another device (bonding fail-over):"
rstorage_case "$case_name risert listens again, discovery works" addr_change

# Tear down, best effort.
iser_autoload on
tpg_idle "$tpg" >/dev/null
rstorage_loaded risert && { echo 0 >"$np/iser" 2>/dev/null; rmmod risert; }
echo 0 >"$tpg/enable" 2>/dev/null
rm -f "$tpg/lun/lun_0/ram0" 2>/dev/null
rmdir "$tpg/lun/lun_0" "$np" "$tpg" "$cfs/iscsi/$iqn" "$cfs/core/rd_mcp_0/ram0" \
	"$cfs/core/rd_mcp_0" 2>/dev/null
rdma link delete rxe0 2>/dev/null
ip link del veth0 2>/dev/null
ktap_finished
