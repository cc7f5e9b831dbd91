#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# KUnit suites: built-in ones ran at boot, module ones run when the module
# loads. Both leave their KTAP results in debugfs; this prints them as
# subtests, one per suite. Every suite of ours must be there and must have
# run: a suite that is missing, or whose cases were all skipped, fails.
. "$(dirname "$0")/lib.sh"

kunit=/sys/kernel/debug/kunit
# Modules of ours that carry KUnit suites.
kunit_modules=(rstorage_sample rvirtio_scsi raoe raoe_target risert)
# Our suites: built into the kernel, then those of the modules above.
expected=(rust_completion_batch rust_net_zerocopy rstorage_sample rvirtio_scsi_steering raoe_wire
	raoe_target_proto risert_wire rust_rdma_send_queue)
# The kernel crate's doc examples, ours among them, when the kernel has them
# (CONFIG_RUST_KERNEL_DOCTESTS, set in the debug kernels).
if zcat /proc/config.gz 2>/dev/null | grep -qx 'CONFIG_RUST_KERNEL_DOCTESTS=y'; then
	expected+=(rust_doctests_kernel)
fi
[ "${RSTORAGE_INJECT:-}" = missing-suite ] && expected+=(rstorage_missing_suite)

ktap_print_header
for m in "${kunit_modules[@]}"; do
	rstorage_insmod "$m" || ktap_print_msg "failed to load $m"
done

mapfile -t suites < <({ ls "$kunit" 2>/dev/null; printf '%s\n' "${expected[@]}"; } | sort -u)
ktap_set_plan "${#suites[@]}"
for s in "${suites[@]}"; do
	if [ ! -r "$kunit/$s/results" ]; then
		ktap_test_fail "$s (suite missing: it did not run)"
		continue
	fi
	r=$(cat "$kunit/$s/results")
	# The suite's own cases, as a nested KTAP document.
	sed -n '/^ /p' <<<"$r"
	if grep -qE '^ok [0-9]+ .*# SKIP' <<<"$r"; then
		ktap_test_fail "$s (every case skipped)"
	elif grep -q '^ok ' <<<"$r"; then
		ktap_test_pass "$s"
	else
		ktap_test_fail "$s"
	fi
done
for m in "${kunit_modules[@]}"; do
	rstorage_loaded "$m" && rmmod "$m"
done
ktap_finished
