#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# KUnit suites: built-in ones ran at boot, module ones run when the module
# loads. Both leave their KTAP results in debugfs; this prints them as
# subtests, one per suite.
. "$(dirname "$0")/lib.sh"

kunit=/sys/kernel/debug/kunit
# Modules of ours that carry KUnit suites.
kunit_modules=(rstorage_sample rvirtio_scsi raoe risert)
for m in "${kunit_modules[@]}"; do
	rstorage_insmod "$m" || echo "# failed to load $m"
done

mapfile -t suites < <(ls "$kunit" 2>/dev/null)
ktap_header
ktap_plan "${#suites[@]}"
for s in "${suites[@]}"; do
	r=$(cat "$kunit/$s/results")
	# The suite's own cases, as a nested KTAP document.
	sed -n '/^ /p' <<<"$r"
	if grep -q '^ok ' <<<"$r"; then ktap_pass "$s"; else ktap_fail "$s"; fi
done
for m in "${kunit_modules[@]}"; do
	rstorage_loaded "$m" && rmmod "$m"
done
[ "${#suites[@]}" -gt 0 ] || { echo "# no KUnit suite found"; exit 1; }
ktap_finished
