#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of `make run`: load each of our modules, move data through it,
# unload it, and write a one-line summary per module to SUMMARY. When
# MODULE_DIR says the modules are built in (a file "builtin", with "options"
# naming each one's Kconfig option), each must be built into the running
# kernel (/proc/config.gz), and data moves through it without loading or
# unloading anything.
#
# Usage: demo.sh MODULE_DIR SUMMARY KSELFTEST_DIR
#   KSELFTEST_DIR  the installed kselftest target, whose helpers this uses
#                  (module loading and unloading, the iSER set-up)
set -u
moddir=$1
summary=$2
ksft=$3
: >"$summary"
cd /tmp
fail=0
export RSTORAGE_MODDIR=$moddir
# shellcheck source=../selftests/drivers/rstorage/lib.sh
. "$ksft/drivers/rstorage/lib.sh"

# move_sample: 4 MiB through /dev/rstorage-sample, read back and compared.
move_sample() {
	python3 - <<'PY'
import hashlib, os, time
data = os.urandom(4 << 20)
fd = os.open("/dev/rstorage-sample", os.O_RDWR)
t = time.monotonic()
for off in range(0, len(data), 1 << 16):
    os.pwrite(fd, data[off:off + (1 << 16)], off)
back = b"".join(os.pread(fd, 1 << 16, off) for off in range(0, len(data), 1 << 16))
t = time.monotonic() - t
os.close(fd)
same = hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
print(f"4 MiB written and read back, {'identical' if same else 'MISMATCH'}, "
      f"{2 * len(data) / t / 1e6:.0f} MB/s")
raise SystemExit(0 if same else 1)
PY
}

# move_batch_stress: the stress ran at load; report what it measured.
move_batch_stress() {
	dmesg | grep 'rstorage_batch_stress:' | tail -n 3 | sed 's/^\[[^]]*\] rstorage_batch_stress: //' |
		tr '\n' ' '
}

# fio_verify LABEL FIO_JOB_ARGS...: random 64 KiB writes with crc32c, then
# verified reads, on the given jobs; prints one summary line headed LABEL.
fio_verify() {
	local label=$1
	shift
	fio --output-format=json --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite \
		--bs=64k --size=16m --verify=crc32c --do_verify=1 --verify_fatal=1 --group_reporting \
		"$@" >/tmp/demo-fio.json 2>/dev/null || { echo "$label: fio verify failed"; return 1; }
	python3 - "$label" <<'PY'
import json, sys
j = json.load(open("/tmp/demo-fio.json"))["jobs"][0]
w, r = j["write"], j["read"]
print(f"{sys.argv[1]}: {w['io_bytes'] >> 20} MiB written, {r['io_bytes'] >> 20} MiB read back "
      f"and verified (crc32c), write {w['bw'] / 1024:.1f} MiB/s, read {r['bw'] / 1024:.1f} MiB/s")
PY
}

# move_rvirtio_scsi: fio verify=crc32c on every data disk of the driver's hosts.
move_rvirtio_scsi() {
	local i d h args=() n
	for i in $(seq 60); do
		args=()
		for d in /sys/class/scsi_disk/*; do
			h=${d##*/}
			[ "$(cat "/sys/class/scsi_host/host${h%%:*}/proc_name")" = rvirtio_scsi ] || continue
			[ "$(tr -d ' ' <"$d/device/model")" = ERRDISK ] && continue
			args+=(--name="$h" --filename="/dev/$(ls "$d/device/block")")
		done
		[ "${#args[@]}" -ge 22 ] && break
		sleep 0.5
	done
	n=$((${#args[@]} / 2))
	[ "$n" -gt 0 ] || { echo "no disks"; return 1; }
	fio_verify "$n disks" "${args[@]}"
}

# move_raoe: two vblade targets on tmpfs behind a veth pair; discovery with
# aoetools, then fio verify=crc32c on both /dev/etherd disks.
move_raoe() {
	local w=/tmp/raoe-demo i n rc=0 pids=()
	mkdir -p "$w" && mount -t tmpfs -o size=80m raoe-demo "$w" || return 1
	ip link add aoe0 type veth peer name aoe1 && ip link set aoe0 up && ip link set aoe1 up
	for i in 0 1; do
		truncate -s 32M "$w/t$i"
		vblade 7 "$i" aoe1 "$w/t$i" >/dev/null 2>&1 &
		pids+=($!)
	done
	aoe-interfaces aoe0 && aoe-discover
	for i in $(seq 60); do
		n=$(cat /sys/block/etherd\!e7.*/size 2>/dev/null | grep -cv '^0$')
		[ "$n" -ge 2 ] && break
		sleep 0.5
	done
	if [ "${n:-0}" -ge 2 ]; then
		fio_verify "2 vblade targets" --name=a --filename=/dev/etherd/e7.0 \
			--name=b --filename=/dev/etherd/e7.1 || rc=1
	else
		echo "${n:-0} of 2 targets found"
		rc=1
	fi
	kill "${pids[@]}" 2>/dev/null
	wait "${pids[@]}" 2>/dev/null
	ip link del aoe0
	umount "$w"
	return "$rc"
}

# move_risert: rdma_rxe on a veth pair, a LIO target with a ramdisk LUN and an
# iSER portal served by risert, the kernel's iSER initiator; fio
# verify=crc32c on the session's disk, then logout and tear-down.
move_risert() {
	local rc=0
	# The target must not load the C ib_isert for the portal.
	iser_autoload off
	iser_rxe_up && iser_lio_up 8192 && echo 1 >"$iser_np/iser" && iser_initiator_up &&
		iser_login && iser_disks 1 || rc=1
	if [ "$rc" = 0 ]; then
		fio_verify "iSER session through rdma_rxe" --name=s --filename="/dev/${DISKS[0]}" || rc=1
	else
		echo "iSER set-up or login failed"
	fi
	iser_teardown
	return "$rc"
}

# shellcheck source=../selftests/drivers/rstorage/iser_lib.sh
. "$ksft/drivers/rstorage/iser_lib.sh"

builtin=0
[ -f "$moddir/builtin" ] && builtin=1
modprobe -r virtio_scsi 2>/dev/null
while read -r o; do
	m=${o##*/}
	m=${m%.o}
	if [ "$builtin" = 1 ]; then
		opt=$(awk -v o="$o" '$1 == o { print $2 }' "$moddir/options")
		if ! zcat /proc/config.gz | grep -qx "$opt=y"; then
			echo "$m: FAILED: not built in ($opt is not y in /proc/config.gz)" >>"$summary"
			fail=1
			continue
		fi
		echo "[guest] $m: built in ($opt=y)"
	else
		echo "[guest] $m: loading"
		# shellcheck disable=SC2046
		if ! rstorage_insmod "$m" $(rstorage_quick_params "$m"); then
			echo "$m: FAILED to load" >>"$summary"
			fail=1
			continue
		fi
	fi
	if declare -F "move_${m#rstorage_}" >/dev/null; then
		echo "[guest] $m: moving data"
		if out=$("move_${m#rstorage_}"); then
			echo "$m: $out" >>"$summary"
		else
			echo "$m: FAILED: $out" >>"$summary"
			fail=1
		fi
	else
		if [ "$builtin" = 1 ]; then
			echo "$m: built in (no data mover yet)" >>"$summary"
		else
			echo "$m: loaded (no data mover yet)" >>"$summary"
		fi
	fi
	[ "$builtin" = 1 ] && continue
	rstorage_rmmod "$m" || { echo "$m: FAILED to unload" >>"$summary"; fail=1; }
done <"$moddir/modules.order"
exit "$fail"
