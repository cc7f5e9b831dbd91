#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Host side of `make check`: boot the debug kernel, run the selftests and
# KUnit suites inside it, then prove that the harness itself can fail.
#
# Usage: check.sh KERNEL_OBJ MODULE_DIR RESULTS_DIR
# Environment:
#   RSTORAGE_INJECT=ktap-fail|missing-module|warn  inject a failure into the main run
#   RSTORAGE_HARNESS=0                              skip the harness self-test boots
#   RSTORAGE_TESTS="a.sh b.sh"                      run only these test programs
set -uo pipefail

project=$(cd "$(dirname "$0")/../../.." && pwd)
here=$project/tools/testing/rstorage
. "$here/common.sh"
rstorage_dirs "$1" "$2" "$3" || exit 1
selftests=$project/tools/testing/selftests/drivers/rstorage
say() { printf '[check] %s\n' "$*"; }
extra=()
. "$here/vscsi.sh"

# run_suite NAME INJECT [TEST...]: one VM boot running the given tests. The
# main run gets 4 CPUs and the virtio-scsi disks (vscsi.sh); the C drivers the
# tests replace are kept from autoloading, tests load what they need.
run_suite() {
	local name=$1 inject=$2 vm=() env=()
	shift 2
	rm -f "$results/$name".*
	if [ "$name" = main ]; then
		vscsi_setup "$results/vscsi"
		vm=(--cpus 4 "--qemu-opts=$vscsi_qemu" --qmp-dir "$results/qmp")
		env=("${vscsi_env[@]}" RSTORAGE_QMP_DIR="$results/qmp")
	fi
	say "$name: booting $(cat "$obj/include/config/kernel.release") ${inject:+(injected: $inject)}"
	python3 "$here/vm.py" --kernel "$obj" --log "$results/$name.console" \
		--status "$results/$name.status" --rwdir "$results" --timeout 1800 \
		--append "modprobe.blacklist=virtio_scsi,aoe" "${vm[@]}" -- \
		env RSTORAGE_INJECT="$inject" "${env[@]}" bash "$selftests/run_tests.sh" \
		"$moddir" "$results/$name.ktap" "$@" >/dev/null
}

# status_field NAME FIELD: a field of a run's vm.py status file.
status_field() {
	python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print(len(v) if isinstance(v, list) else v)' \
		"$results/$1.status" "$2"
}

# vm_results NAME: host-side results of a run (completion, clean kernel log).
vm_results() {
	local rc splats
	if [ ! -f "$results/$1.status" ]; then
		extra+=(--result "fail:$1/vm runner did not finish (see $results/$1.console)")
		return
	fi
	rc=$(status_field "$1" rc)
	splats=$(status_field "$1" splats)
	# The guest runner itself exits 0; 125 only adds a splat to that.
	if [ "$rc" = 0 ] || [ "$rc" = 125 ]; then
		extra+=(--result "ok:$1/vm booted, ran the tests and powered off")
	else
		extra+=(--result "fail:$1/vm booted, ran the tests and powered off (exit $rc, see $results/$1.console)")
	fi
	if [ "$splats" = 0 ]; then
		extra+=(--result "ok:$1/kernel log free of WARNING/BUG/lockdep/KASAN/hung-task splats")
	else
		extra+=(--result "fail:$1/kernel log free of WARNING/BUG/lockdep/KASAN/hung-task splats ($splats splat lines, see $results/$1.console)")
	fi
}

# harness INJECT WHAT PATTERN TEST...: a run with an injected failure must
# fail, and for the injected reason (PATTERN, found among the failed cases or
# the kernel splat lines), not for any other.
harness() {
	local inject=$1 what=$2 pattern=$3
	shift 3
	run_suite "harness-$inject" "$inject" "$@" 2>/dev/null
	local report
	report=$(python3 "$here/ktap.py" "$results/harness-$inject.ktap";
		python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["splats"]))' \
			"$results/harness-$inject.status")
	if grep -q "$pattern" <<<"$report" && ! grep -q '^0 passed, 0 failed' <<<"$report"; then
		say "harness-$inject: the run failed, as it must: $(grep -m1 "$pattern" <<<"$report" | cut -c1-100)"
		extra+=(--result "ok:harness/$what makes the run fail")
	else
		extra+=(--result "fail:harness/$what makes the run fail (not detected; see $results/harness-$inject.console)")
	fi
}

# Coding style: rustfmt with the kernel's settings, on every Rust file of ours.
ksrc=$(readlink -f "$obj/source")
# shellcheck disable=SC2046
if out=$(cd "$project" && rustfmt --check --edition 2021 --config-path "$ksrc/.rustfmt.toml" \
	$(find rust samples drivers -name '*.rs' 2>/dev/null) 2>&1); then
	extra+=(--result "ok:style/rustfmt --check")
else
	echo "$out" | head -n 20
	extra+=(--result "fail:style/rustfmt --check")
fi

# The completion-batching helper's KUnit cases, built for the host: they pass
# unchanged, and each deliberate bug of batch-host/mutants.py makes the case
# written for it fail (no VM needed).
while IFS= read -r line; do
	case "$line" in
	"ok "*) extra+=(--result "ok:kunit-mutants/${line#ok * }") ;;
	"not ok "*) extra+=(--result "fail:kunit-mutants/${line#not ok * }") ;;
	"# "*) echo "$line" ;;
	esac
done < <(python3 "$here/batch-host/mutants.py" "$project" "${RUSTC:-/usr/bin/rustc}" 2>&1 ||
	echo "not ok 0 mutants.py exited with an error")

# The summary itself: a test program that reports fewer cases than its plan
# announced must count as a failure (no VM needed).
printf '%s\n' 'KTAP version 1' '1..1' '    # Subtest: short' '    KTAP version 1' '    1..3' \
	'    ok 1 a' '    ok 2 b' 'ok 1 short' >"$results/harness-plan.ktap"
# (ktap.py exits non-zero here, as it must; only its report is checked.)
plan_report=$(python3 "$here/ktap.py" "$results/harness-plan.ktap")
if grep -q 'FAIL .*short (plan of 3 cases, 2 ran)' <<<"$plan_report"; then
	extra+=(--result "ok:harness/a test program that ran fewer cases than planned makes the run fail")
else
	extra+=(--result "fail:harness/a test program that ran fewer cases than planned makes the run fail")
fi

# shellcheck disable=SC2086
run_suite main "${RSTORAGE_INJECT:-}" ${RSTORAGE_TESTS:-}
vm_results main

if [ "${RSTORAGE_HARNESS:-1}" != 0 ]; then
	harness ktap-fail "a failing KTAP case" 'FAIL .*injected failing case' modules.sh
	harness missing-module "a missing module" 'FAIL .*load rstorage_missing' modules.sh
	harness warn "a kernel WARNING" 'WARNING:.*rstorage_sample' modules.sh
fi

say "results in $results"
python3 "$here/ktap.py" "$results/main.ktap" "${extra[@]}"
