#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# raoe against vblade (Debian's AoE target) over a veth pair inside the
# guest: raoe on aoe0, the targets on aoe1, backing files on tmpfs. aoetools
# drive discovery; data is checked with fio verify=crc32c; faults are a
# killed target, a link going down, injected garbage frames, memory
# pressure, CPU hotplug and module unload under load.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/aoe_lib.sh"

here=$(dirname "$0")
work=/tmp/raoe
ntargets=8
size_mb=24

ktap_print_header
rstorage_require fio vblade aoe-discover aoe-stat
ktap_set_plan 29

stats=/sys/kernel/debug/raoe/stats

# target N / stop_target N: vblade for e0.N on $work/tN.
target() { aoe_target "$1" "$work/t$1"; }
stop_target() { aoe_target_stop "$work/t$1"; }
wait_devs() { aoe_wait_devs "$1"; }

load() { # PARAMS...
	rstorage_insmod raoe "$@" || return 1
	aoe-interfaces aoe0 aoe3 && aoe-discover
}

unload() { rstorage_rmmod raoe; }

# fio_verify NAME DEVS [EXTRA...]: rstorage_fio_verify on the etherd disks DEVS.
fio_verify() {
	local name=$1 d paths=()
	for d in $2; do
		paths+=("/dev/etherd/$d")
	done
	shift 2
	rstorage_fio_verify "$name" "${FIO_SIZE:-8m}" "${paths[@]}" -- "$@"
}

# dev_field DEV FIELD: a field of a device's line in the stats file.
dev_field() {
	grep "^$1:" "$stats" | tr ' ' '\n' | grep -A1 -x "$2" | tail -n 1
}

# in_flight DEV: waits (up to 20 s) until DEV has frames outstanding, so that
# a fault injected next hits I/O in flight; prints how many.
in_flight() {
	local i n
	for i in $(seq 200); do
		n=$(dev_field "$1" nout)
		[ "${n:-0}" -gt 0 ] && { echo "$n"; return 0; }
		sleep 0.1
	done
	echo 0
	return 1
}

# A verified fio that runs for a fixed time (checking what it wrote as it
# goes), so that it is still running when a fault is injected and after.
timed=(--time_based --runtime=12 --verify_backlog=64)

mkdir -p "$work"
mount -t tmpfs -o size=$((ntargets * size_mb + 16))m raoe "$work"
for i in $(seq 0 $((ntargets - 1))); do
	truncate -s ${size_mb}M "$work/t$i"
done
# aoe0-aoe1 carries the targets; aoe2-aoe3 carries injected garbage only (raoe
# listens on aoe3 too), so that the targets never see it.
aoe_veth_up
ip link add aoe2 type veth peer name aoe3
ip link set aoe2 up
ip link set aoe3 up
mac1=$(cat /sys/class/net/aoe1/address)
mac0=$(cat /sys/class/net/aoe0/address)

# 1-3: the C driver is not loaded; ours loads, makes the control files and
# finds one target through aoetools.
[ -d /sys/module/aoe ] && rmmod aoe
rstorage_case "C aoe not loaded" test ! -d /sys/module/aoe
target 0
rstorage_case "raoe loads and makes the /dev/etherd control files" \
	eval 'load && test -c /dev/etherd/discover && test -c /dev/etherd/interfaces &&
	test -c /dev/etherd/revalidate && test -c /dev/etherd/flush && test -c /dev/etherd/err'
[ -d /sys/module/raoe ] || { ktap_print_msg "driver not loaded, giving up"; exit 1; }
found() {
	wait_devs 1 || return 1
	aoe-stat | sed 's/^/# /'
	aoe-stat | grep -q 'e0.0 .*aoe0.*up' &&
		[ "$(cat '/sys/block/etherd!e0.0/size')" = $((size_mb * 2048)) ] &&
		[ "$(cat '/sys/block/etherd!e0.0/mac')" = "$(tr -d : <<<"$mac1")" ] &&
		[ "$(cat '/sys/block/etherd!e0.0/queue/max_hw_sectors_kb')" = 1280 ] &&
		[ "$(grep -c '^thread ' "$stats")" = 1 ]
}
case_name="aoe-discover finds e0.0 (size, MAC, interface via aoe-stat; 1280 KiB requests;"
rstorage_case "$case_name one completion thread started)" found

# 4: data on one target; write frames carry the request's own pages (lent
# under a loan), not a copy.
one() {
	local lent copied
	fio_verify one e0.0 || return 1
	lent=$(dev_field e0.0 lent)
	copied=$(grep -o 'lent_copied [0-9]*' "$stats" | awk '{print $2}')
	ktap_print_msg "write frames with lent pages: ${lent:-?};" \
		"lent frames copied by a receiver on this host: ${copied:-?}"
	[ "${lent:-0}" -gt 0 ]
}
rstorage_case "fio verify=crc32c on 1 target, write data sent as the request's pages" one

# 5: HDIO_GETGEO and HDIO_GET_IDENTITY; the same ioctls on a file opened before
# its device was flushed fail with ENODEV (the disk outlives the device).
hdio() {
	python3 "$here/hdio.py" show /dev/etherd/e0.0 >"$work/hdio.raoe" || return 1
	ktap_print_msg "raoe: $(cat "$work/hdio.raoe")"
	local geo="geo 255 63 $((size_mb * 2048 / 16065)) capacity $((size_mb * 2048))"
	grep -qx "$geo ident [0-9a-f]*" "$work/hdio.raoe" || return 1
	python3 "$here/hdio.py" flushed /dev/etherd/e0.0 e0.0 | sed 's/^/# /'
	[ "${PIPESTATUS[0]}" = 0 ] || return 1
	aoe-discover
	wait_devs 1
}
rstorage_case "HDIO_GETGEO/HDIO_GET_IDENTITY on e0.0; ENODEV on a file open across aoe-flush" hdio

# 6-8: eight targets at once; completions spread over threads, one per target.
for i in $(seq 1 $((ntargets - 1))); do target "$i"; done
aoe-discover
rstorage_case "aoe-discover finds $ntargets targets" wait_devs $ntargets
all=$(for i in $(seq 0 $((ntargets - 1))); do echo "e0.$i"; done)
rstorage_case "fio verify=crc32c on $ntargets targets at once" fio_verify eight "$all"
sed 's/^/# /' "$stats"
threads() {
	local busy owners
	local running
	busy=$(grep -c '^thread .* completions [1-9]' "$stats")
	running=$(grep -c '^thread ' "$stats")
	owners=$(for i in $(seq 0 $((ntargets - 1))); do dev_field "e0.$i" thread; done |
		sort -u | wc -l)
	ktap_print_msg "threads started: $running, with completions: $busy," \
		"distinct threads owning targets: $owners"
	[ "$busy" -ge 2 ] && [ "$owners" -ge 2 ] && [ "$owners" -le "$(nproc)" ] &&
		[ "$running" = "$owners" ]
}
case_name="completions run on several per-CPU threads, each target on one,"
rstorage_case "$case_name only those threads started" threads

# 9: a target killed mid-I/O and restarted: I/O resumes (retransmission).
killed() {
	local before after rc
	local n
	before=$(dev_field e0.1 retransmits)
	FIO_SIZE=16m fio_verify killed e0.1 "${timed[@]}" &
	local fio=$!
	n=$(in_flight e0.1) || { ktap_print_msg "no I/O in flight on e0.1"; wait $fio; return 1; }
	stop_target 1
	sleep 3
	target 1
	wait $fio
	rc=$?
	after=$(dev_field e0.1 retransmits)
	ktap_print_msg "target killed with $n frames in flight;" \
		"e0.1 retransmits $before -> $after; fio exit $rc"
	[ "$rc" = 0 ] && [ "$after" -gt "$before" ]
}
rstorage_case "target killed and restarted during fio: I/O resumes, data verified" killed

# 10: link down and up during I/O. vblade exits when a send fails while the
# link is down ("write to network: No buffer space available"): then it is
# restarted, as a target's supervisor would; the driver must carry on either way.
link() {
	local n running rc
	FIO_SIZE=16m fio_verify link e0.2 "${timed[@]}" &
	local fio=$!
	n=$(in_flight e0.2) || { ktap_print_msg "no I/O in flight on e0.2"; wait $fio; return 1; }
	ip link set aoe0 down
	sleep 2
	ip link set aoe0 up
	kill -0 $fio 2>/dev/null && running=1 || running=0
	if ! kill -0 "$(cat "$work/t2.pid")" 2>/dev/null; then
		ktap_print_msg "vblade e0.2 exited during the outage:" \
			"$(tail -n1 "$work/t2.log"); restarted"
		target 2
	fi
	wait $fio
	rc=$?
	ktap_print_msg "link down with $n frames in flight," \
		"fio still running after the outage: $running, fio exit $rc"
	[ "$rc" = 0 ] && [ "$running" = 1 ]
}
rstorage_case "link down/up during fio: data verified" link

# 11: garbage frames while I/O runs.
# The receive counters (rx: cfg short not_response ...), as numbers.
rx_counts() { grep '^rx:' "$stats" | tr ' ' '\n' | grep -E '^[0-9]+$'; }
garbage() {
	local before after sent rc u0 u1 moved counted running
	before=($(rx_counts))
	u0=$(dev_field e0.3 unexpected)
	FIO_SIZE=16m fio_verify garbage "e0.3 e0.4" "${timed[@]}" &
	local fio=$!
	# The injection starts with I/O in flight.
	in_flight e0.3 >/dev/null && running=1 || running=0
	sent=$(python3 "$here/aoe_inject.py" aoe2 "$(cat /sys/class/net/aoe3/address)" "$mac1" \
		12000 0 3)
	wait $fio
	rc=$?
	after=($(rx_counts))
	u1=$(dev_field e0.3 unexpected)
	# Every kind of bad frame lands in its own counter: most frames must be
	# accounted for, in at least three different counters.
	moved=0 counted=$((u1 - u0))
	for i in "${!after[@]}"; do
		[ "${after[$i]}" -gt "${before[$i]}" ] && moved=$((moved + 1))
		counted=$((counted + after[i] - before[i]))
	done
	ktap_print_msg "injected $sent frames, I/O in flight at the start: $running;" \
		"rx $(grep '^rx:' "$stats");" \
		"e0.3 unexpected +$((u1 - u0)); $counted accounted for in $moved rx counters"
	[ "$rc" = 0 ] && [ "$running" = 1 ] && [ "${sent:-0}" -ge 10000 ] &&
		[ "$counted" -ge $((sent / 2)) ] && [ "$moved" -ge 3 ]
}
rstorage_case "10000+ malformed/unexpected frames during fio: data verified" garbage

# 12: /dev/etherd/err: the unexpected responses of case 11 wait there, one per
# read; with O_NONBLOCK a read of the empty log fails with EAGAIN instead of
# blocking.
errlog() {
	python3 - <<'PY'
import errno, os, sys
fd = os.open("/dev/etherd/err", os.O_RDONLY | os.O_NONBLOCK)
msgs = []
while True:
    try:
        m = os.read(fd, 256)
    except OSError as e:
        if e.errno != errno.EAGAIN:
            raise
        break
    msgs.append(m.decode())
print(f"# {len(msgs)} message(s), first: {msgs[0].strip() if msgs else '-'}")
sys.exit(0 if msgs and all(m.endswith("\n") for m in msgs)
         and any("unexpected rsp e0.3" in m for m in msgs) else 1)
PY
}
rstorage_case "/dev/etherd/err reports unexpected responses; O_NONBLOCK gets EAGAIN when empty" \
	errlog

# 13: memory pressure: a hog holds all but ~160 MiB while fio runs.
pressure() {
	local avail hog rc i
	avail=$(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)
	rm -f "$work/hog.ready"
	python3 -c 'import sys, time
b = bytearray(int(sys.argv[1]) << 20)
for i in range(0, len(b), 4096): b[i] = 1
open(sys.argv[2], "w").close()
time.sleep(600)' $((avail - 160)) "$work/hog.ready" &
	hog=$!
	for i in $(seq 240); do
		[ -e "$work/hog.ready" ] && break
		sleep 0.5
	done
	[ -e "$work/hog.ready" ] || { ktap_print_msg "hog not ready"; kill $hog; return 1; }
	ktap_print_msg "hog holds $((avail - 160)) MiB; $(grep MemAvailable /proc/meminfo)"
	FIO_SIZE=16m fio_verify pressure "e0.5 e0.6"
	rc=$?
	kill $hog
	wait $hog 2>/dev/null
	ktap_print_msg "reserved buffers used: $(grep -o 'reserve_used [0-9]*' "$stats")"
	return $rc
}
rstorage_case "fio under memory pressure: data verified" pressure

# 14: the transmit reserve carries frames when allocations fail: failslab,
# limited to the threads that build frames after the first ones of a request
# (the completion threads, which refill the window, and the transmit thread;
# task filter) and, where the slab has a sysfs (not SLUB_TINY), to the socket
# buffers' head cache, fails a burst of 100 of their allocations (half of them
# while the burst lasts) while fio writes and verifies; the data must verify
# and the reserve must have been used. (A sustained failure rate instead
# slows every frame to its retransmission timeout: the case measures the
# reserve, not that.)
failslab_tx() { # 1|0
	local f=/sys/kernel/debug/failslab c=/sys/kernel/slab/skbuff_head_cache/failslab pid pids
	pids=$(pgrep -x raoe_tx; pgrep '^raoe_compl/')
	[ -n "$pids" ] || return 1
	if [ "$1" = 1 ]; then
		if [ -e "$c" ] && echo 1 >"$c" 2>/dev/null; then
			echo Y >"$f/cache-filter"
		else
			echo N >"$f/cache-filter"
		fi
		ktap_print_msg "failslab: tasks $(echo $pids)," \
			"cache filter $(cat "$f/cache-filter")"
		echo N >"$f/ignore-gfp-wait" && echo 0 >"$f/verbose" && echo Y >"$f/task-filter" &&
			echo 0 >"$f/space" && echo 1 >"$f/interval" && echo 100 >"$f/times" &&
			echo 50 >"$f/probability" || return 1
		for pid in $pids; do
			echo 1 >"/proc/$pid/make-it-fail" || return 1
		done
	else
		for pid in $pids; do
			echo 0 >"/proc/$pid/make-it-fail"
		done
		echo 0 >"$f/probability"
		[ -e "$c" ] && echo 0 >"$c"
		return 0
	fi
}
tx_reserve() {
	local before after rc pid i
	if [ ! -d /sys/kernel/debug/failslab ]; then
		ktap_print_msg "no /sys/kernel/debug/failslab" \
			"(CONFIG_FAILSLAB, CONFIG_FAULT_INJECTION_DEBUG_FS)"
		return "$KSFT_SKIP"
	fi
	before=$(grep -o 'reserve_used [0-9]*' "$stats" | cut -d' ' -f2)
	failslab_tx 1 || { failslab_tx 0; ktap_print_msg "failslab set-up failed"; return 1; }
	# Bounded: frames that are never sent would hold fio until the
	# program's time limit.
	FIO_SIZE=8m fio_verify reserve "e0.5 e0.6" &
	pid=$!
	for i in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 1
	done
	if kill -0 "$pid" 2>/dev/null; then
		ktap_print_msg "fio did not finish in 300 s"
		pkill -x fio
		wait "$pid"
		rc=1
	else
		wait "$pid"
		rc=$?
	fi
	failslab_tx 0
	after=$(grep -o 'reserve_used [0-9]*' "$stats" | cut -d' ' -f2)
	ktap_print_msg "reserved buffers used: $((after - before)); transmit errors:" \
		"$(grep -o 'xmit_errors [0-9]*' "$stats" | awk '{s += $2} END {print s + 0}');" \
		"deferred to the transmit work:" \
		"$(grep -o 'tx_deferred [0-9]*' "$stats" | awk '{s += $2} END {print s + 0}')"
	[ "$rc" = 0 ] && [ "$((after - before))" -gt 0 ]
}
tx_reserve_case() {
	tx_reserve
	case $? in
	0) ktap_test_pass "$1" ;;
	"$KSFT_SKIP") ktap_test_skip "$1" ;;
	*) ktap_test_fail "$1" ;;
	esac
}
case_name="failed allocations in the frame-building threads: the reserve carries frames,"
tx_reserve_case "$case_name data verified"

# 15: CPUs offline and online during I/O.
hotplug() {
	FIO_SIZE=16m fio_verify hotplug "$all" &
	local fio=$! c r hp=0 rc
	for r in 1 2; do
		for c in /sys/devices/system/cpu/cpu[1-9]*; do
			echo 0 >"$c/online" || hp=1
			sleep 0.5
			echo 1 >"$c/online" || hp=1
		done
	done
	wait $fio
	rc=$?
	ktap_print_msg "cpu offline/online writes:" \
		"$([ $hp = 0 ] && echo all took || echo some failed)," \
		"online $(cat /sys/devices/system/cpu/online), fio exit $rc"
	[ "$rc" = 0 ] && [ "$hp" = 0 ] &&
		[ "$(cat /sys/devices/system/cpu/online)" = "0-$(($(nproc --all) - 1))" ]
}
rstorage_case "CPUs offlined and onlined during fio: data verified" hotplug

# 16: revalidate through aoetools.
revalidate() {
	aoe-revalidate e0.7 && sleep 1 && grep -q '^up$' '/sys/block/etherd!e0.7/state'
}
rstorage_case "aoe-revalidate e0.7 keeps it up" revalidate

# 17-18: unload under load is refused (the disk is open), then works; data
# written before the unload reads back after the reload.
busy_unload() {
	dd if=/dev/urandom of="$work/pattern" bs=1M count=4 2>/dev/null
	dd if="$work/pattern" of=/dev/etherd/e0.0 bs=1M oflag=direct 2>/dev/null || return 1
	FIO_SIZE=16m fio_verify busy e0.1 "${timed[@]}" &
	local fio=$! rc=0 n
	# fio must have the disk open, with I/O in flight, when rmmod comes.
	n=$(in_flight e0.1) || { ktap_print_msg "no I/O in flight on e0.1"; wait $fio; return 1; }
	ktap_print_msg "rmmod with $n frames in flight on e0.1"
	if rmmod raoe 2>/dev/null; then
		ktap_print_msg "rmmod succeeded with a disk open"
		rc=1
	fi
	wait $fio || rc=1
	return $rc
}
rstorage_case "rmmod under load is refused while fio runs, fio verifies" busy_unload
reload() {
	unload || return 1
	load && wait_devs $ntargets &&
		cmp <(dd if=/dev/etherd/e0.0 bs=1M count=4 iflag=direct 2>/dev/null) "$work/pattern"
}
rstorage_case "rmmod after I/O, reload: targets back, data intact" reload

# 19-20: a target that stays dead: I/O fails with EIO within aoe_deadsecs and
# nothing hangs; it comes back with discovery.
dead() {
	unload && load aoe_deadsecs=4 && wait_devs $ntargets || return 1
	stop_target 2
	local start end rc
	start=$(date +%s)
	dd if=/dev/etherd/e0.2 of=/dev/null bs=64k count=16 iflag=direct 2>"$work/dead.log"
	rc=$?
	end=$(date +%s)
	ktap_print_msg "read of a dead target: exit $rc after $((end - start)) s:" \
		"$(tail -n1 "$work/dead.log")"
	grep -q 'Input/output error' "$work/dead.log" && [ $((end - start)) -le 30 ] &&
		grep -q '^down$' '/sys/block/etherd!e0.2/state'
}
rstorage_case "a dead target fails I/O with EIO within aoe_deadsecs, no hang" dead
back() {
	target 2
	aoe-discover
	wait_devs $ntargets &&
		dd if=/dev/etherd/e0.2 of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null
}
rstorage_case "the restarted target comes back with aoe-discover" back

# 21: flush of a down device removes it.
flush() {
	stop_target 7
	dd if=/dev/etherd/e0.7 of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null
	sleep 1
	aoe-flush 2>/dev/null
	[ ! -e '/sys/block/etherd!e0.7' ]
}
rstorage_case "aoe-flush removes a down device" flush

# 22-23: single completion thread mode, then the C driver on the same targets.
single() {
	unload && load single_thread=1 && wait_devs $((ntargets - 1)) || return 1
	FIO_SIZE=4m fio_verify single "e0.0 e0.1 e0.2" || return 1
	[ "$(grep -c '^thread ' "$stats")" = 1 ]
}
rstorage_case "single_thread=1: one completion thread, data verified" single
cdriver() {
	# Fresh data written through raoe (the fio runs above overwrote e0.0).
	dd if=/dev/urandom of="$work/pattern" bs=1M count=4 2>/dev/null
	dd if="$work/pattern" of=/dev/etherd/e0.0 bs=1M oflag=direct 2>/dev/null || return 1
	# raoe's geometry and IDENTIFY data from the same target process as the C
	# driver reads below (vblade's serial number may change with a restart).
	python3 "$here/hdio.py" show /dev/etherd/e0.0 >"$work/hdio.raoe" || return 1
	unload || return 1
	modprobe aoe aoe_iflist=aoe0 || return 1
	echo >/dev/etherd/discover
	local i
	for i in $(seq 40); do
		[ -e '/sys/block/etherd!e0.0' ] &&
			[ "$(cat '/sys/block/etherd!e0.0/size')" -gt 0 ] && break
		sleep 0.5
	done
	cmp <(dd if=/dev/etherd/e0.0 bs=1M count=4 iflag=direct 2>/dev/null) "$work/pattern"
	local rc=$?
	# The same geometry and IDENTIFY data as raoe gave.
	python3 "$here/hdio.py" show /dev/etherd/e0.0 >"$work/hdio.c" || rc=1
	ktap_print_msg "raoe: $(cat "$work/hdio.raoe"); C aoe: $(cat "$work/hdio.c")"
	cmp -s "$work/hdio.c" "$work/hdio.raoe" || rc=1
	udevadm settle 2>/dev/null
	rmmod aoe || rc=1
	return $rc
}
rstorage_case "C aoe takes the same targets, reads raoe's data, same HDIO geometry and IDENTIFY" \
	cdriver

# 24: raoe loads again after the C driver; aoe_iflist limits the interfaces
# from load time on (aoe3 only carries garbage, so nothing is found), and a
# list of too many names is refused.
iflist() {
	local n rc=0
	if rstorage_insmod raoe aoe_iflist=a,b,c,d,e,f,g,h,i 2>/dev/null; then
		ktap_print_msg "nine interface names accepted"
		unload
		return 1
	fi
	rstorage_insmod raoe aoe_iflist=aoe3 || return 1
	aoe-discover
	sleep 2
	n=$(grep -c '^e[0-9]' "$stats")
	ktap_print_msg "devices found with aoe_iflist=aoe3: $n"
	[ "$n" = 0 ] || rc=1
	aoe-interfaces aoe0 && aoe-discover && wait_devs 1 || rc=1
	unload || rc=1
	return $rc
}
case_name="raoe loads again after the C driver; aoe_iflist=aoe3 finds nothing,"
rstorage_case "$case_name 9 names refused" iflist

# 25: partial completion: e0.5's vblade restarts on its file cut to 20 MiB
# while raoe still sees 24 MiB. Three adjacent 4 KiB direct reads submitted in
# one io_submit() (merged by the block layer into one request of three bios)
# end at, and just past, the cut: the two bios before it complete and only the
# third fails (the target answers out of range), as the C driver ends requests
# bio by bio.
partial() {
	local cut=$((20 * 1024 * 1024)) before after res rc=0
	load && wait_devs $((ntargets - 1)) || return 1
	stop_target 5
	truncate -s $cut "$work/t5"
	target 5
	sleep 1
	before=$(awk '{print $2}' '/sys/block/etherd!e0.5/stat')
	res=$(python3 "$here/aio_read.py" /dev/etherd/e0.5 $((cut - 8192)) 3 4096)
	after=$(awk '{print $2}' '/sys/block/etherd!e0.5/stat')
	ktap_print_msg "results of the three reads: $res; read merges: $((after - before))"
	[ "$res" = "4096 4096 -5" ] && [ "$((after - before))" -ge 2 ] || rc=1
	stop_target 5
	truncate -s ${size_mb}M "$work/t5"
	target 5
	unload || rc=1
	return $rc
}
case_name="partial completion: one request of three bios,"
rstorage_case "$case_name only the bio past the target's end fails" partial

# 26: multipath: e0.6 is served on a second veth pair too (aoe4-aoe5, a second
# vblade on the same file), so raoe has two paths to it; the second link goes
# down while a verified fio runs on e0.6.
multipath() {
	local vb rc paths=0 i fio
	ip link add aoe4 type veth peer name aoe5 && ip link set aoe4 up && ip link set aoe5 up ||
		return 1
	vblade 0 6 aoe5 "$work/t6" >"$work/t6.mp.log" 2>&1 &
	vb=$!
	if load && aoe-interfaces aoe0 aoe3 aoe4 && aoe-discover; then
		# e0.6 up with both paths (the other targets do not matter here).
		for i in $(seq 100); do
			paths=$(dev_field e0.6 paths)
			[ "${paths:-0}" -ge 2 ] && grep -q '^e0.6: state up' "$stats" && break
			aoe-discover
			sleep 0.2
		done
		FIO_SIZE=16m fio_verify multipath e0.6 "${timed[@]}" &
		fio=$!
		in_flight e0.6 >/dev/null
		sleep 2
		ip link set aoe4 down
		wait $fio
		rc=$?
	else
		rc=1
	fi
	ktap_print_msg "e0.6 paths before: ${paths:-0}; after aoe4 went down:" \
		"$(grep '^e0.6:' "$stats" | grep -o 'retransmits [0-9]*\|xmit_errors [0-9]*' |
			tr '\n' ' ')"
	kill $vb
	wait $vb 2>/dev/null
	ip link del aoe4
	unload || rc=1
	[ "$rc" = 0 ] && [ "${paths:-0}" -ge 2 ]
}
rstorage_case "two paths to a target, one taken down under fio: data verified" multipath

# 27: aoe_dyndevs=0: each disk numbered from its address under the major
# raoe registers, minor (shelf * 16 + slot) * 16 as the C driver's static
# numbering. Seven targets answer here (e0.7 was stopped by the flush case).
dyndevs() {
	local major d num want rc=0
	load aoe_dyndevs=0 && wait_devs $((ntargets - 1)) || return 1
	major=$(awk '$2 == "raoe" {print $1}' /proc/devices)
	for d in 0 3 6; do
		num=$(cat "/sys/block/etherd!e0.$d/dev")
		want="$major:$((d * 16))"
		ktap_print_msg "e0.$d: $num (expected $want)"
		[ -n "$major" ] && [ "$num" = "$want" ] || rc=1
	done
	FIO_SIZE=4m fio_verify dyndevs e0.3 || rc=1
	unload || rc=1
	[ "$rc" = 0 ] && ! grep -q ' raoe$' /proc/devices
}
case_name="aoe_dyndevs=0: static device numbers from shelf and slot, data verified,"
rstorage_case "$case_name major released" dyndevs

# 28: jumbo frames: with MTU 9000 on the link (and vblade restarted to see it), a
# frame carries 17 sectors; fio verifies through such frames.
jumbo() {
	local rc payload
	stop_target 0
	ip link set aoe0 mtu 9000 && ip link set aoe1 mtu 9000 || return 1
	target 0
	if load && wait_devs 1; then
		payload=$(cat '/sys/block/etherd!e0.0/payload')
		FIO_SIZE=16m fio_verify jumbo e0.0
		rc=$?
	else
		rc=1
	fi
	ktap_print_msg "payload at MTU 9000: ${payload:-?} bytes per frame"
	unload || rc=1
	stop_target 0
	ip link set aoe0 mtu 1500
	ip link set aoe1 mtu 1500
	target 0
	[ "$rc" = 0 ] && [ "${payload:-0}" -ge 8192 ]
}
rstorage_case "jumbo frames (MTU 9000): 8 KiB+ per frame, data verified" jumbo

# 29: the interface is deleted while raoe holds paths through it: raoe drops
# its device references when told, so the deletion completes.
ifgone() {
	local before
	load && wait_devs 1 || return 1
	before=$(dmesg | grep -c 'aoe0: interface going away')
	if ! timeout 30 ip link del aoe0; then
		ktap_print_msg "ip link del aoe0 did not complete in 30 s"
		return 1
	fi
	ktap_print_msg "$(dmesg | grep 'aoe0: interface going away' | tail -n1 |
		sed 's/^\[[^]]*\] //')"
	[ "$(dmesg | grep -c 'aoe0: interface going away')" -gt "$before" ] && unload
}
rstorage_case "an interface deleted under raoe: its paths are dropped, the deletion completes" \
	ifgone

for i in $(seq 0 $((ntargets - 1))); do stop_target "$i"; done
ip link del aoe0 2>/dev/null
ip link del aoe2
umount "$work"
ktap_finished
