#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The completion-batching helper under real concurrency: producers on every
# CPU, a consumer draining with kernel::completion_batch::Batcher, every
# completion checked to be handled exactly once (rstorage_batch_stress).
. "$(dirname "$0")/lib.sh"

# name: module parameters
runs=(
	"budget 8, post-arm poll only:budget=8 report_missed=0"
	"budget 1, post-arm poll only:budget=1 report_missed=0 completions=5000"
	"budget 64, post-arm poll only:budget=64 report_missed=0"
	"budget 8, arm reports missed events:budget=8 report_missed=1"
	"budget 64, widened re-arm window, post-arm poll must catch:budget=64 arm_delay_us=20 expect_post_arm=1"
	"budget 8, busy polling with 500 us idle drop:budget=8 poll_idle_us=500"
)
ktap_header
ktap_plan "${#runs[@]}"
for r in "${runs[@]}"; do
	name=${r%%:*}
	read -ra params <<<"${r#*:}"
	mark="rstorage batch.sh: $name"
	echo "$mark" >/dev/kmsg
	if rstorage_insmod rstorage_batch_stress "${params[@]}"; then
		ok=1
		rmmod rstorage_batch_stress || ok=0
	else
		ok=0
	fi
	# The module's own report, from the kernel log after the mark.
	report=$(dmesg | sed -n "\|$mark|,\$p" | grep 'rstorage_batch_stress:')
	sed 's/^\[[^]]*\] */# /' <<<"$report"
	if [ "$ok" = 1 ] && grep -q 'PASS: every completion handled exactly once' <<<"$report"; then
		ktap_pass "$name"
	else
		ktap_fail "$name"
	fi
done
ktap_finished
