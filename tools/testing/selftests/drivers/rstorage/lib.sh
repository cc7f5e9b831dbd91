# SPDX-License-Identifier: GPL-2.0
# Shared helpers for the rstorage selftests (sourced).

# The kernel's KTAP helpers (ktap_print_header, ktap_set_plan, ktap_test_pass,
# ktap_test_fail, ktap_test_skip, ktap_finished; exit codes KSFT_*), where the
# kselftest tree and its installed copy both keep them.
. "$(dirname "${BASH_SOURCE[0]}")/../../kselftest/ktap_helpers.sh"

# Mark the program's start in the kernel log, so that a splat can be tied to it.
echo "rstorage selftest: $(basename "$0")" >/dev/kmsg 2>/dev/null

# rstorage_case NAME CMD...: one test case from a command's exit status. Like
# ktap_test_result, but the command's arguments are passed as given (that one
# re-splits them, which breaks patterns and lists that contain spaces).
rstorage_case() {
	local name=$1
	shift
	if "$@"; then
		ktap_test_pass "$name"
	else
		ktap_test_fail "$name"
	fi
}

# rstorage_require TOOL...: skip the whole program (exit 4) when a tool it
# needs is not installed.
rstorage_require() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null && continue
		ktap_skip_all "$t is not installed"
		exit "$KSFT_SKIP"
	done
}

# The modules under test: a directory with our .ko files at their kernel-tree
# paths and a modules.order (the in-tree modules the top-level Makefile
# collects from the kernel build, or an out-of-tree build's output).
if [ ! -r "${RSTORAGE_MODDIR:-}/modules.order" ]; then
	ktap_print_header
	ktap_skip_all "RSTORAGE_MODDIR does not name the rstorage module build (modules.order)"
	exit "$KSFT_SKIP"
fi

# Our modules, in build order, from that modules.order,
# plus a module that does not exist when RSTORAGE_INJECT=missing-module.
rstorage_modules() {
	sed -e 's|.*/||' -e 's|\.o$||' "$RSTORAGE_MODDIR/modules.order"
	[ "${RSTORAGE_INJECT:-}" = missing-module ] && echo rstorage_missing
	return 0
}

# rstorage_ko NAME: path of our module NAME.
rstorage_ko() {
	local p
	p=$(grep -E "(^|/)$1\.o\$" "$RSTORAGE_MODDIR/modules.order" | head -n1)
	echo "$RSTORAGE_MODDIR/${p%.o}.ko"
}

# rstorage_insmod NAME [PARAMS...]: load our module NAME.
rstorage_insmod() {
	local name=$1
	shift
	[ "$name" = rstorage_sample ] && [ "${RSTORAGE_INJECT:-}" = warn ] &&
		set -- "$@" warn_on_load=1
	insmod "$(rstorage_ko "$name")" "$@"
}

rstorage_loaded() { [ -d "/sys/module/$1" ]; }

# rstorage_rmmod NAME: unloads module NAME. udev may still hold a disk of it
# open for a moment after I/O (it probes disks after writes), so this waits
# for udev and tries for up to 5 s; when the module stays, it reports what
# held it: the module's reference count and holders, and the processes with
# a block device open.
rstorage_rmmod() {
	local i p d
	for i in $(seq 10); do
		udevadm settle 2>/dev/null
		rmmod "$1" 2>/dev/null && return 0
		rstorage_loaded "$1" || return 0
		sleep 0.5
	done
	ktap_print_msg "rmmod $1 failed: refcnt $(cat "/sys/module/$1/refcnt" 2>/dev/null)," \
		"holders: $(ls "/sys/module/$1/holders" 2>/dev/null | paste -sd' ')"
	for p in /proc/[0-9]*; do
		for d in "$p"/fd/*; do
			d=$(readlink "$d" 2>/dev/null) || continue
			case "$d" in
			/dev/sd* | /dev/etherd/*)
				ktap_print_msg "  held open: $d by pid ${p#/proc/}" \
					"($(cat "$p/comm" 2>/dev/null))"
				;;
			esac
		done
	done
	return 1
}

# rstorage_quick_params NAME: parameters for a quick load/unload of NAME
# (modules that do their work at load time get a small amount of it).
rstorage_quick_params() {
	case "$1" in
	rstorage_batch_stress) echo total=2000 inline=0 ;;
	esac
}

# rstorage_fio_verify NAME SIZE DEVICE... [-- FIO_ARGS...]: random writes of
# 4 to 64 KiB at queue depth 16 on each DEVICE (one job each, SIZE bytes),
# checked with crc32c when read back; the first bad block fails the run.
# FIO_ARGS change the job (block sizes, a time limit, verify_backlog...).
# The log is /tmp/fio-NAME.log; prints fio's totals, and its last lines when
# it failed. Returns fio's exit status.
rstorage_fio_verify() {
	local name=$1 size=$2 jobs=() rc
	shift 2
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		jobs+=(--name="${1##*/}" --filename="$1")
		shift
	done
	[ "${1:-}" = -- ] && shift
	fio --output="/tmp/fio-$name.log" --ioengine=libaio --direct=1 --iodepth=16 \
		--rw=randwrite --bsrange=4k-64k --size="$size" --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --group_reporting "$@" "${jobs[@]}" >/dev/null 2>&1
	rc=$?
	# On failure: fio's own error lines (a verify failure names the offset and
	# the checksums; they are at the top of the log), then the end of the log.
	[ "$rc" = 0 ] || { grep -iE "verify|error|err=|bad |expected" "/tmp/fio-$name.log" |
		head -n 20; tail -n 12 "/tmp/fio-$name.log"; } | sed 's/^/# /'
	grep -E "WRITE:|READ:" "/tmp/fio-$name.log" | sed 's/^ */# /'
	return "$rc"
}

# rstorage_qmp JSON: runs a QMP command in the QEMU that runs this guest (the
# host's vm.py --qmp-dir bridge, given to tests as RSTORAGE_QMP_DIR) and
# prints QEMU's answer. Fails without a bridge or after 30 s.
rstorage_qmp() {
	local dir=${RSTORAGE_QMP_DIR:-} name i
	[ -n "$dir" ] && [ -d "$dir" ] || return 1
	name=$dir/req$$-$RANDOM
	printf '%s\n' "$1" >"$name.tmp" && mv "$name.tmp" "$name.req" || return 1
	for i in $(seq 150); do
		if [ -f "$name.resp" ]; then
			cat "$name.resp"
			rm -f "$name.resp"
			return 0
		fi
		sleep 0.2
	done
	rm -f "$name.req"
	return 1
}
