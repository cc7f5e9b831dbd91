#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# rvirtio_scsi against QEMU's virtio-scsi-pci: the topology of
# tools/testing/rstorage/vscsi.sh (controllers with 1, 2 and 4 request queues,
# 8 targets on one, 2 LUNs on one target, a disk failing reads at one sector).
# Data is checked with fio verify=crc32c on all disks at once, for both
# steering policies; steering is checked from the driver's debugfs counters.
. "$(dirname "$0")/lib.sh"

disks_expected=${RSTORAGE_VSCSI_DISKS:-11}
queues_expected=${RSTORAGE_VSCSI_QUEUES:-1 2 4}
err_sector=${RSTORAGE_VSCSI_ERR_SECTOR:-4096}

ktap_header
ktap_plan 21

# Hosts of rvirtio_scsi (host numbers).
our_hosts() {
	local h
	for h in /sys/class/scsi_host/host*; do
		[ "$(cat "$h/proc_name" 2>/dev/null)" = rvirtio_scsi ] && echo "${h##*host}"
	done
}

# Disks (sdX) of the given driver's hosts, with the test disks (not ERRDISK) first.
disks_of() { # PROC_NAME [all|data|err]
	local h d dev model
	for h in /sys/class/scsi_host/host*; do
		[ "$(cat "$h/proc_name" 2>/dev/null)" = "$1" ] || continue
		for d in /sys/class/scsi_disk/"${h##*host}":*; do
			[ -e "$d" ] || continue
			dev=$(ls "$d/device/block" 2>/dev/null) || continue
			model=$(tr -d ' ' <"$d/device/model")
			case "${2:-data}" in
			all) echo "$dev" ;;
			data) [ "$model" != ERRDISK ] && echo "$dev" ;;
			err) [ "$model" = ERRDISK ] && echo "$dev" ;;
			esac
		done
	done
}

# wait_disks PROC_NAME COUNT: wait until the driver's hosts show COUNT disks.
wait_disks() {
	local i
	for i in $(seq 60); do
		[ "$(disks_of "$1" all | wc -l)" -ge "$2" ] && return 0
		sleep 0.5
	done
	ktap_info "$1: $(disks_of "$1" all | wc -l) disks, expected $2"
	return 1
}

# load STEERING: timeouts go to error handling (abort, LUN reset), for the
# timeout case below; without I/O timeouts this changes nothing.
load() {
	rstorage_insmod rvirtio_scsi "steering=$1" timeout_abort=1 &&
		wait_disks rvirtio_scsi $((disks_expected + 1))
}

# unload: udev may still hold a disk open (it probes disks after writes), retry.
unload() {
	local i
	for i in $(seq 20); do
		udevadm settle 2>/dev/null
		rmmod rvirtio_scsi 2>/dev/null && return 0
		sleep 0.5
	done
	rmmod rvirtio_scsi
}

# The stats file of the host of disk $1.
stats_of() {
	local host
	host=$(readlink -f "/sys/block/$1/device" | sed -n 's#.*/host\([0-9]*\)/.*#\1#p')
	echo "/sys/kernel/debug/rvirtio_scsi-host$host/stats"
}

# fio_verify NAME [EXTRA...]: random writes then verified reads on every data disk.
fio_verify() {
	local name=$1 args=() d
	shift
	for d in $(disks_of rvirtio_scsi data); do
		args+=(--name="$d" --filename="/dev/$d")
	done
	ktap_info "$name: fio on $((${#args[@]} / 2)) disks"
	fio --output="/tmp/fio-$name.log" --ioengine=libaio --direct=1 --iodepth=16 \
		--rw=randwrite --bsrange=4k-64k --size=16m --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --group_reporting "$@" "${args[@]}" >/dev/null 2>&1
	local rc=$?
	[ "$rc" = 0 ] || tail -n 20 "/tmp/fio-$name.log" | sed 's/^/# /'
	grep -E "WRITE:|READ:" "/tmp/fio-$name.log" | sed 's/^ */# /'
	return "$rc"
}

# One field from a stats line: stat_field FILE 'queue 0:' submitted
stat_field() {
	grep "^$2" "$1" | tr ' ' '\n' | grep -A1 -x "$3" | tail -n 1
}

# 1-2: the C driver gives the devices up, ours takes them.
[ -d /sys/module/virtio_scsi ] && modprobe -r virtio_scsi
ktap_check "C virtio_scsi not bound" test ! -d /sys/module/virtio_scsi
ktap_check "rvirtio_scsi loads (per-target steering) and finds $((disks_expected + 1)) disks" load 1
[ -d /sys/module/rvirtio_scsi ] || { ktap_info "driver not loaded, giving up"; exit 1; }

# 3-4: topology.
queues=$(for h in $(our_hosts); do cat "/sys/class/scsi_host/host$h/nr_hw_queues"; done | sort -n | xargs)
ktap_info "request queues per host: $queues"
ktap_check "hosts with $queues_expected request queues" test "$queues" = "$queues_expected"
luns=$(ls /sys/class/scsi_disk | awk -F: '$4 == 1' | wc -l)
ktap_check "a target with more than one LUN" test "$luns" -ge 1

# 5: data, per-target steering, all disks at once.
ktap_check "fio verify=crc32c on all disks (per-target)" fio_verify per-target

# 6-7: steering. Disk on the 2-queue host, one job per CPU of both queues.
two=$(for h in $(our_hosts); do
	[ "$(cat "/sys/class/scsi_host/host$h/nr_hw_queues")" = 2 ] && echo "$h"
done)
t0=$(ls -d /sys/class/scsi_disk/"$two":0:0:0/device/block/* | xargs -n1 basename)
t1=$(ls -d /sys/class/scsi_disk/"$two":0:1:0/device/block/* | xargs -n1 basename)
t2=$(ls -d /sys/class/scsi_disk/"$two":0:2:0/device/block/* | xargs -n1 basename)
cpu_q0=$(cut -d, -f1 "/sys/block/$t0/mq/0/cpu_list" | tr -d ' ')
cpu_q1=$(cut -d, -f1 "/sys/block/$t0/mq/1/cpu_list" | tr -d ' ')
stats=$(stats_of "$t0")
ktap_info "busy target: $t0 from CPUs $cpu_q0 (queue 0) and $cpu_q1 (queue 1)"
fio --name=a --filename="/dev/$t0" --cpus_allowed="$cpu_q0" --name=b --filename="/dev/$t0" \
	--cpus_allowed="$cpu_q1" --ioengine=libaio --direct=1 --iodepth=16 --rw=randread \
	--bs=4k --size=16m --time_based --runtime=3 >/dev/null 2>&1
cp "$stats" /tmp/stats-busy
grep -v '^target' /tmp/stats-busy | sed 's/^/# /'
grep '^target 0:' /tmp/stats-busy | sed 's/^/# /'
viol=$(awk '/^violations/ {print $2}' /tmp/stats-busy)
steered=$(( $(stat_field /tmp/stats-busy 'queue 0:' steered_in) + $(stat_field /tmp/stats-busy 'queue 1:' steered_in) ))
ktap_check "busy target: every completion on the target's queue (violations ${viol:-?})" test "${viol:-1}" = 0
ktap_check "busy target: requests from the other CPU's queue follow the target (steered_in $steered)" test "$steered" -gt 0

# 8: idle targets (one request at a time) take the queue of the submitting CPU.
counts() { # TARGET: its request counts per queue
	grep "^target $1:" "$stats" | sed 's/.*requests //'
}
read -r a0 a1 < <(counts 1)
read -r b0 b1 < <(counts 2)
fio --name=a --filename="/dev/$t1" --cpus_allowed="$cpu_q0" --ioengine=psync --direct=1 \
	--rw=randread --bs=4k --size=16m --number_ios=300 >/dev/null 2>&1
fio --name=b --filename="/dev/$t2" --cpus_allowed="$cpu_q1" --ioengine=psync --direct=1 \
	--rw=randread --bs=4k --size=16m --number_ios=300 >/dev/null 2>&1
read -r x0 x1 < <(counts 1)
read -r y0 y1 < <(counts 2)
a0=$((x0 - a0)) a1=$((x1 - a1)) b0=$((y0 - b0)) b1=$((y1 - b1))
ktap_info "idle targets: target 1 (CPU $cpu_q0) queues $a0/$a1, target 2 (CPU $cpu_q1) queues $b0/$b1"
ktap_check "idle targets spread over queues by CPU" \
	test $((a0 * 10)) -ge $((9 * (a0 + a1))) -a $((b1 * 10)) -ge $((9 * (b0 + b1)))

# 9-10: hot-plug and hot-unplug of a disk through QEMU's monitor.
hp_dev() { ls "/sys/class/scsi_disk/$two:0:9:0/device/block" 2>/dev/null; }
hotplug_add() {
	local i d r
	r=$(rstorage_qmp '{"execute": "device_add", "arguments": {"driver": "scsi-hd",
		"id": "hpdisk", "drive": "hp", "bus": "scsi2q.0", "scsi-id": 9, "lun": 0}}')
	grep -q '"return"' <<<"$r" || { ktap_info "device_add: ${r:-no answer}"; return 1; }
	for i in $(seq 60); do
		d=$(hp_dev)
		[ -n "$d" ] && break
		sleep 0.5
	done
	[ -n "$d" ] || return 1
	ktap_info "hot-plugged disk: $d ($two:0:9:0)"
	fio --name=hp --filename="/dev/$d" --ioengine=libaio --direct=1 --iodepth=8 \
		--rw=randwrite --bs=4k --size=4m --verify=crc32c --do_verify=1 --verify_fatal=1 \
		>/dev/null 2>&1
}
hotplug_del() {
	local i r
	udevadm settle 2>/dev/null
	r=$(rstorage_qmp '{"execute": "device_del", "arguments": {"id": "hpdisk"}}')
	grep -q '"return"' <<<"$r" || { ktap_info "device_del: ${r:-no answer}"; return 1; }
	for i in $(seq 60); do
		[ -z "$(hp_dev)" ] && [ ! -e "/sys/class/scsi_disk/$two:0:9:0" ] && return 0
		sleep 0.5
	done
	return 1
}
ktap_check "hot-plug (QMP device_add): the disk appears and passes fio verify" hotplug_add
ktap_check "hot-unplug (QMP device_del): the disk disappears" hotplug_del
grep '^tmf' "$stats" | sed 's/^/# /'

# 11: CPUs go offline and online during verified I/O.
hotplug() {
	local i c
	for i in 1 2 3; do
		for c in 1 2 3; do
			echo 0 >"/sys/devices/system/cpu/cpu$c/online" || return 1
			sleep 0.3
			echo 1 >"/sys/devices/system/cpu/cpu$c/online" || return 1
		done
	done
}
hotplug_io() {
	fio_verify hotplug &
	local fio_pid=$!
	hotplug
	local hp=$?
	wait "$fio_pid"
	local rc=$?
	ktap_info "cpu hotplug loop: $hp, fio: $rc, online: $(cat /sys/devices/system/cpu/online)"
	[ "$hp" = 0 ] && [ "$rc" = 0 ] && [ "$(cat /sys/devices/system/cpu/online)" = 0-3 ]
}
ktap_check "CPUs offlined and onlined during fio verify" hotplug_io

# 12-13: an injected medium error reaches the application as EIO, without a hang.
err=$(disks_of rvirtio_scsi err)
out=$(timeout 120 dd if="/dev/$err" of=/dev/null bs=512 skip="$err_sector" count=1 iflag=direct 2>&1)
rc=$?
ktap_info "dd at the failing sector: exit $rc: $(echo "$out" | head -n 1)"
ktap_check "read of the failing sector fails with EIO" grep -q "Input/output error" <<<"$out"
ktap_check "read of another sector of that disk succeeds" \
	timeout 60 dd if="/dev/$err" of=/dev/null bs=512 skip=0 count=8 iflag=direct status=none

# 14-15: a command that times out goes through abort (task management on the
# control queue): QEMU holds the disk's next read (blkdebug breakpoint) until
# the abort is under way, then lets it go; nothing hangs, the disk still works.
hmp() {
	rstorage_qmp "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"$1\"}}"
}
timeout_abort() {
	local before after pid rc
	before=$(awk '/^tmf/ {print $2}' "$(stats_of "$err")")
	echo 4 >"/sys/block/$err/device/timeout"
	hmp 'qemu-io err \"break read_aio held\"' >/dev/null || return 1
	dd if="/dev/$err" of=/dev/null bs=4k skip=16 count=1 iflag=direct status=none &
	pid=$!
	sleep 10
	after=$(awk '/^tmf/ {print $2}' "$(stats_of "$err")")
	hmp 'qemu-io err \"resume held\"' >/dev/null
	timeout 60 tail --pid="$pid" -f /dev/null
	wait "$pid"
	rc=$?
	echo 30 >"/sys/block/$err/device/timeout"
	ktap_info "task management functions: $before before, $after after the timeout; dd exit $rc"
	dmesg | grep -E "rvirtio_scsi: (abort|LUN reset)" | tail -n 3 | sed 's/^/# /'
	[ "$after" -gt "$before" ]
}
ktap_check "a timed-out command is aborted through the control queue" timeout_abort
ktap_check "the disk works after the abort" \
	timeout 60 dd if="/dev/$err" of=/dev/null bs=4k skip=32 count=8 iflag=direct status=none

# 16-17: unload and reload, idle, then right after I/O; then the mq policy.
cycles() {
	local i
	for i in 1 2 3; do
		unload || return 1
		load 1 || return 1
	done
}
ktap_check "rmmod/insmod three times, idle" cycles
after_io() {
	fio --name=w --filename="/dev/$(disks_of rvirtio_scsi data | head -n 1)" --ioengine=libaio \
		--direct=1 --iodepth=32 --rw=randwrite --bs=4k --size=8m >/dev/null 2>&1 &&
		unload && load 0
}
ktap_check "rmmod right after I/O, reload with mq steering" after_io

# 18-19: data and steering with the mq policy.
ktap_check "fio verify=crc32c on all disks (mq)" fio_verify mq
stats=$(stats_of "$t0")
steered=0
for q in 0 1; do steered=$((steered + $(stat_field "$stats" "queue $q:" steered_in))); done
ktap_check "mq: every request on the queue blk-mq chose (steered_in $steered)" test "$steered" = 0

# 20-21: the C driver takes the devices back.
unload
ktap_check "rvirtio_scsi unloads" test ! -d /sys/module/rvirtio_scsi
c_back() {
	modprobe virtio_scsi && wait_disks virtio_scsi $((disks_expected + 1)) &&
		modprobe -r virtio_scsi
}
ktap_check "C virtio_scsi binds the same $((disks_expected + 1)) disks again" c_back
ktap_finished
