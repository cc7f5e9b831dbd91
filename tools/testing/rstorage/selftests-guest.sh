#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of `make check`: runs the installed kselftest target
# drivers/rstorage with the kernel's own runner (run_kselftest.sh from
# kselftest-install) and keeps its TAP output for the host's summary.
#
# Usage: selftests-guest.sh KSELFTEST_DIR MODULE_DIR OUTPUT [TEST...]
#   KSELFTEST_DIR  the kselftest install (run_kselftest.sh, kselftest-list.txt)
#   MODULE_DIR     output directory of the out-of-tree module build (modules.order)
#   OUTPUT         file for the TAP output (in a directory the host can read)
#   TEST           test programs to run (default: the whole target)
# RSTORAGE_INJECT (ktap-fail, missing-module, missing-suite, warn) injects a
# deliberate failure, to prove that the harness reports it. RSTORAGE_TIMEOUT
# overrides the per-program time limit of the target's settings file.
set -u
ksft=$1
export RSTORAGE_MODDIR=$2
out=$3
shift 3
sel=()
[ -n "${RSTORAGE_TIMEOUT:-}" ] && sel+=(-o "$RSTORAGE_TIMEOUT")
for t in "$@"; do
	sel+=(-t "drivers/rstorage:$t")
done
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
# The runner writes each program's output to /dev/stdout. virtme-ng links
# that to its console port, past the output file below (which would have the
# runner's own lines only): point it at the process's own standard output,
# as on any other system.
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
cd /tmp
# The output goes to a file, and is followed from there: a daemon a test
# left running (vblade, iscsid) holds the descriptors it inherited, so a pipe
# from the runner would never see its end. The file is the guest's own (tail
# cannot follow a file on the host's 9p share); OUTPUT gets it at the end.
# Opened for appending: the runner reopens /dev/stdout for each program's
# output, which makes a second open file of it; with two offsets, the
# runner's own lines would overwrite the programs'.
log=/tmp/rstorage-selftests.tap
: >"$log"
"$ksft/run_kselftest.sh" "${sel[@]}" >>"$log" 2>&1 &
runner=$!
tail -n +1 -f --pid="$runner" "$log"
wait "$runner"
# The results are in the TAP output; this script's status says only that the
# run got to its end.
cp "$log" "$out"
