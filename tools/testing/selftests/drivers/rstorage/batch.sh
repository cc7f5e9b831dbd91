#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The completion-batching helper under real concurrency (rstorage_batch_stress):
# producers on every CPU push completions and run batcher passes themselves
# when they raise the notification, while a consumer work item on another CPU
# runs the rescheduled passes. Each run handles at least 1,000,000 completions
# and checks that each is handled exactly once and in per-producer order, that
# passes never overlap, and that deferred calls and hand-overs happened. The
# last run drops the hand-over on purpose and must fail.
. "$(dirname "$0")/lib.sh"

# name: module parameters
post_arm="budget 64, widened re-arm window, post-arm poll must catch"
runs=(
	"budget 8, concurrent passes, post-arm poll only:budget=8 report_missed=0"
	"budget 64, completions handled under the queue lock:budget=64 locked=1 report_missed=0"
	"budget 8, arm reports missed events:budget=8 report_missed=1"
	"$post_arm:budget=64 arm_delay_us=20 expect_post_arm=1"
	"budget 8, busy polling with 500 us idle drop:budget=8 poll_idle_us=500 inline=0"
)
# A batcher without the hand-over must be caught: the run fails (completions
# stranded) after dropping at least one hand-over. Under KASAN
# (RSTORAGE_KASAN=1) passes overlap less often: the run may take four times as
# long to strand a completion.
limit=30
[ "${RSTORAGE_KASAN:-0}" = 1 ] && limit=120
broken="budget 8, hand-over dropped on purpose, the check must fail:"
broken+="budget=8 report_missed=1 broken_handover=1 timeout_secs=$limit"

# stress NAME PARAMS...: loads the module; prints its report, returns its load status.
stress() {
	local mark="rstorage batch.sh: $1" rc=0
	shift
	echo "$mark" >/dev/kmsg
	if rstorage_insmod rstorage_batch_stress "$@"; then
		rmmod rstorage_batch_stress || rc=2
	else
		rc=1
	fi
	report=$(dmesg | sed -n "\|$mark|,\$p" | grep 'rstorage_batch_stress:')
	sed 's/^\[[^]]*\] */# /' <<<"$report"
	return "$rc"
}

ktap_print_header
ktap_set_plan $((${#runs[@]} + 1))
for r in "${runs[@]}"; do
	name=${r%%:*}
	read -ra params <<<"${r#*:}"
	if stress "$name" "${params[@]}" &&
		grep -q 'PASS: every completion handled exactly once' <<<"$report"; then
		ktap_test_pass "$name"
	else
		ktap_test_fail "$name"
	fi
done

name=${broken%%:*}
read -ra params <<<"${broken#*:}"
stress "$name" "${params[@]}"
rc=$?
dropped=$(grep -o 'dropped_handovers=[0-9]*' <<<"$report" | cut -d= -f2)
if [ "$rc" = 1 ] && [ "${dropped:-0}" -gt 0 ] &&
	grep -q 'FAIL: completions lost, stranded' <<<"$report"; then
	ktap_test_pass "$name"
else
	ktap_test_fail "$name (load status $rc, ${dropped:-0} hand-overs dropped)"
fi
ktap_finished
