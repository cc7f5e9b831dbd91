#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the iSER benchmark (see iser.sh): rdma_rxe on a veth pair,
# LIO with a 128 MiB ramdisk LUN and an iSER portal, open-iscsi with ib_iser.
# Alternates C ib_isert, risert, risert with budget=0 and risert in its
# adaptive completion mode (busy-polled completion queues, poll_idle_us=500),
# round after round, and writes one JSON line per run, with the completion
# queue events of the target's queues per I/O. The rdma_core:cq_schedule
# tracepoint that counts ib_isert's events is on during every run, whichever
# the driver, so that its cost (the initiator's queues fire it too) is the
# same for all.
#
# Usage: iser-guest.sh MODULE_DIR OUTPUT ROUNDS SECONDS
set -u
moddir=$1 out=$2 rounds=$3 secs=$4
ko=$moddir/drivers/infiniband/ulp/risert/risert.ko
iqn=iqn.2026-11.org.rstorage:bench
cfs=/sys/kernel/config/target
tpg=$cfs/iscsi/$iqn/tpgt_1
portal=10.77.0.2:3260
np=$tpg/np/$portal
tr=/sys/kernel/tracing
work=/tmp/iser-bench
: >"$out"
mkdir -p "$work"
: >"$work/c-cqs"

ip link add veth0 type veth peer name veth1
ip addr add 10.77.0.1/24 dev veth0
ip addr add 10.77.0.2/24 dev veth1
ip link set veth0 up
ip link set veth1 up
modprobe rdma_rxe
rdma link add rxe0 type rxe netdev veth1
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
mkdir -p "$cfs/core/rd_mcp_0/ram0"
echo rd_pages=32768 >"$cfs/core/rd_mcp_0/ram0/control"
echo 1 >"$cfs/core/rd_mcp_0/ram0/enable"
mkdir -p "$tpg/lun/lun_0"
ln -s "$cfs/core/rd_mcp_0/ram0" "$tpg/lun/lun_0/ram0"
mkdir "$np"
echo 0 >"$tpg/attrib/authentication"
echo 1 >"$tpg/attrib/generate_node_acls"
echo 1 >"$tpg/attrib/cache_dynamic_acls"
echo 0 >"$tpg/attrib/demo_mode_write_protect"
echo 1 >"$tpg/enable"
modprobe ib_iser
iscsid
sleep 1
mountpoint -q "$tr" || mount -t tracefs nodev "$tr"
echo 16384 >"$tr/buffer_size_kb"
# The target's iscsi_np thread loads ib_isert itself when a portal enables
# iser; only this script decides which transport is loaded.
modprobe_path=$(cat /proc/sys/kernel/modprobe)
echo /bin/true >/proc/sys/kernel/modprobe

disk() {
	local i d
	for i in $(seq 60); do
		d=$(iscsiadm -m session -P3 2>/dev/null | awk '/Attached scsi disk/ { print $4; exit }')
		[ -n "$d" ] && [ -b "/dev/$d" ] && { echo "$d"; return 0; }
		sleep 0.5
	done
	return 1
}

# SendTargets discovery; iscsiadm (open-iscsi 2.1.8) now and then stalls
# and segfaults in an iSER discovery, with either target: retried.
discovery() {
	local i
	for i in 1 2 3; do
		iscsiadm -m discovery -t sendtargets -p "$portal" -I iser >/dev/null 2>&1 && return 0
		echo "iscsiadm discovery failed ($?), retrying"
	done
	return 1
}

load() {
	case $1 in
	c) echo "$modprobe_path" >/proc/sys/kernel/modprobe
	   modprobe ib_isert
	   echo /bin/true >/proc/sys/kernel/modprobe
	   : >"$tr/trace"
	   echo 1 >"$tr/events/rdma_core/cq_alloc/enable"
	   echo 1 >"$tr/tracing_on" ;;
	rust) insmod "$ko" ;;
	rust-nobatch) insmod "$ko" budget=0 ;;
	rust-adaptive) insmod "$ko" poll_idle_us=500 ;;
	esac || return 1
	echo 1 >"$np/iser" && discovery &&
		iscsiadm -m node -T "$iqn" -p "$portal" -I iser --login >/dev/null 2>&1 &&
		dev=$(disk) || return 1
	if [ "$1" = c ]; then
		echo 0 >"$tr/tracing_on"
		echo 0 >"$tr/events/rdma_core/cq_alloc/enable"
		sed -n 's/.*cq_alloc: cq.id=\([0-9]*\) .*poll_ctx=WORKQUEUE.*/\1/p' "$tr/trace" >>"$work/c-cqs"
	fi
}

unload() {
	iscsiadm -m node -T "$iqn" -p "$portal" -I iser --logout >/dev/null 2>&1
	iscsiadm -m node -o delete >/dev/null 2>&1
	echo 0 >"$np/iser"
	local i
	for i in $(seq 20); do
		case $1 in
		c) rmmod ib_isert 2>/dev/null && return 0 ;;
		*) rmmod risert 2>/dev/null && return 0 ;;
		esac
		sleep 0.5
	done
	return 1
}

# Completion queue events of the target so far: risert counts its own; for
# ib_isert, the rdma_core:cq_schedule events of its CQs, which come from the
# RDMA core's CQ pool (polled from a workqueue) and were recorded by their
# cq_alloc events when the first ib_isert connection created the pool (the
# initiator's CQs are polled in softirq context).
events() {
	case $1 in
	c) local ids
	   ids=$(paste -sd'|' "$work/c-cqs" 2>/dev/null)
	   [ -n "$ids" ] || { echo 0; return; }
	   grep -cE "cq_schedule: cq.id=($ids)\$" "$tr/trace" ;;
	*) awk '$1 == "cq_events" { print $2 }' /sys/kernel/debug/risert/stats ;;
	esac
}

run() { # DRIVER ROUND WORKLOAD
	local drv=$1 round=$2 wl=$3 rw e0 e1
	case $wl in
	randread-4k) rw=randread ;;
	randwrite-4k) rw=randwrite ;;
	esac
	echo 0 >"$tr/tracing_on"
	: >"$tr/trace"
	echo 1 >"$tr/events/rdma_core/cq_schedule/enable"
	echo 1 >"$tr/tracing_on"
	e0=$(events "$drv")
	fio --output-format=json --name=b --filename="/dev/$dev" --ioengine=libaio --direct=1 \
		--iodepth=16 --rw="$rw" --bs=4k --size=120m --time_based --runtime="$secs" \
		--group_reporting >/tmp/bench.json 2>/dev/null || return 1
	e1=$(events "$drv")
	echo 0 >"$tr/tracing_on"
	echo 0 >"$tr/events/rdma_core/cq_schedule/enable"
	python3 - "$drv" "$round" "$wl" "$((e1 - e0))" >>"$out" <<'PY'
import json, sys
drv, rnd, wl, ev = sys.argv[1:]
job = json.load(open("/tmp/bench.json"))["jobs"][0]
j = job["read"] if wl.startswith("randread") else job["write"]
print(json.dumps({"driver": drv, "round": int(rnd), "workload": wl, "targets": 1,
                  "iops": j["iops"], "bw_kib": j["bw"], "ios": j["total_ios"],
                  "irqs_per_io": int(ev) / max(1, j["total_ios"])}))
PY
}

drivers=(c rust rust-nobatch rust-adaptive)
n=${#drivers[@]}
for r in $(seq "$rounds"); do
	# Rotate the order every round, so no driver always runs first.
	for k in $(seq 0 $((n - 1))); do
		drv=${drivers[$(((k + r) % n))]}
		load "$drv" || { echo "load $drv failed"; exit 1; }
		for wl in randread-4k randwrite-4k; do
			run "$drv" "$r" "$wl" || echo "run $drv $wl failed"
		done
		unload "$drv" || { echo "unload $drv failed"; exit 1; }
		echo "round $r: $drv done"
	done
done
echo "$modprobe_path" >/proc/sys/kernel/modprobe
