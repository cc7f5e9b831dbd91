#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of `make check`: runs every rstorage test program inside the VM
# and writes one KTAP document with each program as a subtest.
#
# Usage: run_tests.sh MODULE_DIR OUTPUT [TEST...]
#   MODULE_DIR  output directory of the out-of-tree module build (modules.order)
#   OUTPUT      file for the KTAP document (in a directory the host can read)
#   TEST        test programs to run (default: all *.sh tests listed in TESTS)
# RSTORAGE_INJECT (ktap-fail, missing-module, warn) injects a deliberate
# failure, to prove that the harness reports it.
set -u
here=$(cd "$(dirname "$0")" && pwd)
export RSTORAGE_MODDIR=$1
out=$2
shift 2
tests=("$@")
[ "${#tests[@]}" -gt 0 ] || mapfile -t tests < <(grep -v '^#' "$here/TESTS")
[ "${RSTORAGE_INJECT:-}" = ktap-fail ] && tests+=(inject_fail.sh)

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
cd /tmp

{
	echo "KTAP version 1"
	echo "1..${#tests[@]}"
	n=0
	for t in "${tests[@]}"; do
		n=$((n + 1))
		echo "# running $t" >/dev/kmsg
		echo "    # Subtest: ${t%.sh}"
		timeout 600 bash "$here/$t" 2>&1 | sed 's/^/    /'
		rc=${PIPESTATUS[0]}
		if [ "$rc" = 0 ]; then
			echo "ok $n ${t%.sh}"
		else
			echo "not ok $n ${t%.sh} # exit status $rc"
		fi
	done
} | tee "$out"
