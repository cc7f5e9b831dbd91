# SPDX-License-Identifier: GPL-2.0
#
# Guest library of the benchmarks, sourced by bench/KIND-guest.sh. It loads
# the selftests' helpers (rstorage_insmod, rstorage_rmmod, iser_lib.sh, aoe_lib.sh) from
# the installed kselftest target (with aoe_lib.sh) and runs the rounds the same way for every
# kind of device:
#
#   - the rounds are a multiple of the number of drivers, and the order of the
#     drivers rotates by one each round, so that every driver takes every
#     place in the order equally often;
#   - after a driver is loaded: bench_up (the kind's set-up, which waits for
#     the devices), `udevadm settle`, then a warm-up run of every workload
#     that is not recorded;
#   - every run writes one JSON line; a run that fails, or every run of a
#     driver that did not come up, writes a line with "failed": true, so the
#     table shows it instead of dropping it;
#   - the same instrumentation for every driver: bench_events (the kind's
#     count of interrupts or completion-queue events, empty for none) is read
#     before and after each run, and bench_run_begin/bench_run_end (tracing
#     switches) run around every run, whichever the driver;
#   - the guest's busy CPU time (all CPUs, /proc/stat: user, nice, system,
#     irq, softirq) is read before and after each run, for the CPU time per
#     I/O of every driver alike.
#
# The kind's script sets:
#   BENCH_DRIVERS      the drivers, the C baseline first ("c")
#   BENCH_WORKLOADS    RW-BS names: randread-4k, randwrite-4k, seqread-128k,
#                      seqwrite-128k; pollread-4k is randread-4k as polled
#                      I/O (io_uring, --hipri)
#   BENCH_TARGETS      target counts to run each workload on (e.g. "1 8")
#   BENCH_IODEPTH      fio's queue depth per device (default 16)
# and defines:
#   bench_load DRIVER     load the driver's module(s) and bring up its devices
#   bench_unload DRIVER   take them down and unload
#   bench_devs            print the device nodes, in target order
# and may define bench_events DRIVER, bench_target DRIVER (the target side's
# count of commands served and of requests it dropped, "CMDS DROPS", for a kind
# whose target runs in the guest; empty for none), bench_run_begin DRIVER,
# bench_run_end DRIVER and bench_workloads DRIVER (the workloads of one
# driver; default: BENCH_WORKLOADS).
#
# Usage of the kind's script: KIND-guest.sh MODULE_DIR OUTPUT ROUNDS SECONDS KSELFTEST_DIR [PROFILE]
#   PROFILE=1 samples every run with `perf record -a -e cpu-clock` and writes
#   the top of its profile next to OUTPUT as profile-DRIVER-WORKLOAD-TARGETS-rROUND.txt;
#   PROFILE=2 records call chains too and adds the chains of the hottest symbols;
#   PROFILE=3 counts the work items queued during the run, by function.

bench_moddir=$1 bench_out=$2 bench_rounds=$3 bench_secs=$4 bench_ksft=$5 bench_profile=${6:-0}
export RSTORAGE_MODDIR=$bench_moddir
# shellcheck source=../../selftests/drivers/rstorage/lib.sh
. "$bench_ksft/drivers/rstorage/lib.sh"
# shellcheck source=../../selftests/drivers/rstorage/iser_lib.sh
. "$bench_ksft/drivers/rstorage/iser_lib.sh"
# shellcheck source=../../selftests/drivers/rstorage/aoe_lib.sh
. "$bench_ksft/drivers/rstorage/aoe_lib.sh"
bench_work=/tmp/rstorage-bench
mkdir -p "$bench_work"

bench_events() { :; }
bench_target() { :; }
bench_workloads() { echo "$BENCH_WORKLOADS"; }
# The workloads of DRIVER that BENCH_ONLY_WORKLOADS keeps.
bench_kept_workloads() {
	local wl
	for wl in $(bench_workloads "$1"); do
		bench_only "${BENCH_ONLY_WORKLOADS:-}" "$wl" && echo "$wl"
	done
}
bench_run_begin() { :; }
bench_run_end() { :; }

# bench_fio WORKLOAD TARGETS SECONDS JSON: one fio run of WORKLOAD on the first
# TARGETS devices, its JSON output in JSON; fio runs under the command in the
# array bench_wrap, if any (the profiler).
bench_wrap=()
bench_fio() {
	local rw=${1%-*} bs=${1##*-} args=() d engine=(--ioengine=libaio)
	case $rw in
	seqread) rw=read ;;
	seqwrite) rw=write ;;
	pollread) rw=randread engine=(--ioengine=io_uring --hipri) ;;
	esac
	for d in $(bench_devs | head -n "$2"); do
		args+=(--name="${d##*/}" --filename="$d")
	done
	[ "${#args[@]}" = "$((2 * $2))" ] || return 1
	"${bench_wrap[@]}" fio --output-format=json "${engine[@]}" --direct=1 \
		--iodepth="${BENCH_IODEPTH:-16}" --rw="$rw" --bs="$bs" \
		--time_based --runtime="$3" --ramp_time=1 --group_reporting "${args[@]}" >"$4" 2>/dev/null
}

# bench_busy: the busy CPU time of all CPUs so far, in USER_HZ ticks.
bench_busy() {
	awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat
}

# bench_record DRIVER ROUND WORKLOAD TARGETS EVENTS|"" BUSY_TICKS|"" TARGET|"" [JSON]: one
# line of OUTPUT; without JSON (or with a JSON fio did not finish) the run is
# failed. BUSY_TICKS spans the whole fio run, ramp time included, so CPU time
# per I/O is taken over all the I/Os the disks saw during the run (fio's
# disk_util, from the block layer's counters), not only those of the measured
# window. TARGET is "CMDS DROPS" served and dropped by the target side during
# the run (bench_target), per I/O the disks completed.
bench_record() {
	python3 - "$@" >>"$bench_out" <<'PY'
import json, os, sys
drv, rnd, wl, nt, ev, busy, tgt = sys.argv[1:8]
row = {"driver": drv, "round": int(rnd), "workload": wl, "targets": int(nt)}
try:
    job = json.load(open(sys.argv[8]))["jobs"][0]
    j = job["write"] if "write" in wl else job["read"]
    ios = j["total_ios"]
    if not ios:
        raise ValueError("no I/O")
    util = json.load(open(sys.argv[8])).get("disk_util", [])
    issued = sum(d.get("read_ios", 0) + d.get("write_ios", 0) for d in util) or None
    hz = os.sysconf("SC_CLK_TCK")
    row.update(iops=j["iops"], bw_kib=j["bw"], ios=ios,
               irqs_per_io=int(ev) / ios if ev else None,
               cpu_us_per_io=int(busy) * 1e6 / hz / issued if busy and issued else None)
    if tgt and issued:
        cmds, drops = (int(x) for x in tgt.split())
        row.update(target_cmds_per_io=cmds / issued, target_drops=drops)
except (IndexError, KeyError, OSError, ValueError):
    row["failed"] = True
print(json.dumps(row))
PY
}

# bench_run DRIVER ROUND WORKLOAD TARGETS
bench_run() {
	local drv=$1 round=$2 wl=$3 nt=$4 e0 e1 ev= b0 busy= t0 t1 tgt= json=$bench_work/fio.json
	rm -f "$json"
	case $bench_profile in
	1) bench_wrap=(perf record -q -a -e cpu-clock -o "$bench_work/perf.data" --) ;;
	2) bench_wrap=(perf record -q -a -g -e cpu-clock -o "$bench_work/perf.data" --) ;;
	3) bench_wrap=(perf record -q -a -e workqueue:workqueue_queue_work -o "$bench_work/perf.data" --) ;;
	esac
	bench_run_begin "$drv"
	e0=$(bench_events "$drv")
	t0=$(bench_target "$drv")
	b0=$(bench_busy)
	if bench_fio "$wl" "$nt" "$bench_secs" "$json"; then
		busy=$(($(bench_busy) - b0))
		e1=$(bench_events "$drv")
		[ -n "$e0" ] && ev=$((e1 - e0))
		t1=$(bench_target "$drv")
		[ -n "$t0" ] && tgt="$((${t1% *} - ${t0% *})) $((${t1#* } - ${t0#* }))"
	else
		echo "run $drv $wl $nt failed"
		rm -f "$json"
	fi
	bench_wrap=()
	bench_run_end "$drv"
	bench_record "$drv" "$round" "$wl" "$nt" "$ev" "$busy" "$tgt" "$json"
	if [ "$bench_profile" = 3 ] && [ -f "$bench_work/perf.data" ]; then
		# Work items queued during the run, by function, most first.
		perf script -i "$bench_work/perf.data" -F event,trace 2>/dev/null |
			grep -o 'function=[^ ]*' | sort | uniq -c | sort -rn | head -30 \
			>"$(dirname "$bench_out")/profile-$drv-$wl-$nt-r$round.txt"
		rm -f "$bench_work/perf.data"
	elif [ "$bench_profile" != 0 ] && [ -f "$bench_work/perf.data" ]; then
		{ perf report -i "$bench_work/perf.data" --no-children --sort dso --stdio 2>/dev/null |
			grep -v '^# [^S]' | grep -v '^#$' | grep -v '^$' | head -16
		  echo
		  perf report -i "$bench_work/perf.data" --no-children --sort sym --stdio 2>/dev/null |
			grep -v '^#' | grep -v '^$' | head -60; } \
			>"$(dirname "$bench_out")/profile-$drv-$wl-$nt-r$round.txt"
		# All call chains (root first) of the symbols above 3 %, one per line.
		[ "$bench_profile" = 2 ] &&
			perf report -i "$bench_work/perf.data" --no-children --sort sym --stdio \
				-g folded,0,caller,function,count --percent-limit 3 2>/dev/null | grep -v '^#' \
				>"$(dirname "$bench_out")/profile-$drv-$wl-$nt-r$round.chains"
		rm -f "$bench_work/perf.data"
	fi
}

# bench_only LIST NAME: whether NAME is in LIST (an empty LIST holds every name).
bench_only() {
	[ -z "$1" ] || [[ " $1 " == *" $2 "* ]]
}

# bench_main: the rounds (see the top of this file).
bench_main() {
	local d kept=()
	for d in "${BENCH_DRIVERS[@]}"; do
		bench_only "${BENCH_ONLY_DRIVERS:-}" "$d" && kept+=("$d")
	done
	BENCH_DRIVERS=("${kept[@]}")
	local n=${#BENCH_DRIVERS[@]} r k drv wl nt up
	local rounds=$(((bench_rounds + n - 1) / n * n))
	[ "$rounds" = "$bench_rounds" ] ||
		echo "[bench] $bench_rounds rounds rounded up to $rounds, a multiple of the $n drivers"
	: >"$bench_out"
	for r in $(seq "$rounds"); do
		for k in $(seq 0 $((n - 1))); do
			drv=${BENCH_DRIVERS[$(((k + r) % n))]}
			up=1
			if bench_load "$drv"; then
				udevadm settle
				for wl in $(bench_kept_workloads "$drv"); do
					bench_fio "$wl" "${BENCH_TARGETS##* }" 2 "$bench_work/warmup.json" ||
						{ echo "warm-up $drv $wl failed"; up=0; }
				done
			else
				echo "load $drv failed"
				up=0
			fi
			for wl in $(bench_kept_workloads "$drv"); do
				for nt in $BENCH_TARGETS; do
					if [ "$up" = 1 ]; then
						bench_run "$drv" "$r" "$wl" "$nt"
					else
						bench_record "$drv" "$r" "$wl" "$nt" "" "" ""
					fi
				done
			done
			bench_unload "$drv" || { echo "unload $drv failed: the rounds stop here"; return 1; }
			echo "round $r/$rounds: $drv done"
		done
	done
}
