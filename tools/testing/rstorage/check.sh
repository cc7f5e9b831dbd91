#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Host side of `make check`: install the kselftest target drivers/rstorage
# (kselftest-install, from the kernel tree the overlay put it in), boot the
# debug kernel, run it there with the kernel's run_kselftest.sh (KUnit suites
# included), then prove that the harness itself can fail.
#
# Usage: check.sh KERNEL_OBJ MODULE_DIR RESULTS_DIR
# Environment:
#   RSTORAGE_INJECT=ktap-fail|missing-module|missing-suite|warn
#                                                   inject a failure into the main run
#   RSTORAGE_HARNESS=0                              skip the harness self-test boots
#   RSTORAGE_TESTS="a.sh b.sh"                      run only these test programs
#   RSTORAGE_VM_TEST=0                              skip the boot of make vm's VM
#   BLKTESTS=<blktests checkout>                    also run blktests' device cases on
#                                                   our drivers' devices (blktests.sh)
set -uo pipefail

project=$(cd "$(dirname "$0")/../../.." && pwd)
here=$project/tools/testing/rstorage
. "$here/common.sh"
rstorage_dirs "$1" "$2" "$3" || exit 1
say() { printf '[check] %s\n' "$*"; }
extra=()
. "$here/vscsi.sh"

# The kselftest target, built (iser_peer) and installed on the host, the way
# `make kselftest-install` does; the guest runs the installed copy.
ksrc=$(readlink -f "$obj/source")
ksft=$results/kselftest
rm -rf "$results/kselftest-inject"
if rstorage_kselftest_install "$ksrc" "$results"; then
	extra+=(--result "ok:kselftest/drivers/rstorage builds and installs (kselftest-install)")
else
	tail -n 20 "$results/kselftest-install.log"
	extra+=(--result "fail:kselftest/drivers/rstorage builds and installs (kselftest-install)")
fi
say "kselftest: $(wc -l <"$ksft/kselftest-list.txt" 2>/dev/null || echo 0) programs installed in $ksft"

# run_suite NAME INJECT [TEST...]: one VM boot running the given tests (all of
# the target by default) with run_kselftest.sh, each case printed as it
# completes. The main run gets 4 CPUs and the virtio-scsi disks (vscsi.sh);
# the C drivers the tests replace, and rvirtio_scsi (an in-tree module with
# the virtio-scsi device alias), are kept from autoloading; tests load what
# they need. A ktap-fail run uses a copy of the install whose test list also
# has the deliberately failing program.
run_suite() {
	local name=$1 inject=$2 vm=() env=() dir=$ksft
	shift 2
	if [ "$inject" = ktap-fail ]; then
		dir=$results/kselftest-inject
		rm -rf "$dir" && cp -a "$ksft" "$dir" &&
			echo drivers/rstorage:inject_fail.sh >>"$dir/kselftest-list.txt"
		set -- "$@" inject_fail.sh
	fi
	rm -f "$results/$name".*
	local limit=3000
	# KASAN (LLVM=1) makes the guest about twice as slow: twice the time.
	if grep -q '^CONFIG_KASAN=y' "$obj/.config"; then
		env+=(RSTORAGE_TIMEOUT=1800 RSTORAGE_KASAN=1)
		limit=6000
	fi
	if [ "$name" = main ]; then
		vscsi_setup "$results/vscsi"
		vm=(--cpus 4 "--qemu-opts=$vscsi_qemu" --qmp-dir "$results/qmp")
		env+=("${vscsi_env[@]}" RSTORAGE_QMP_DIR="$results/qmp")
	fi
	say "$name: booting $(cat "$obj/include/config/kernel.release") ${inject:+(injected: $inject)}"
	python3 "$here/vm.py" --kernel "$obj" --log "$results/$name.console" \
		--status "$results/$name.status" --rwdir "$results" --timeout "$limit" --show-output \
		--append "modprobe.blacklist=virtio_scsi,rvirtio_scsi,aoe" "${vm[@]}" -- \
		env RSTORAGE_INJECT="$inject" "${env[@]}" bash "$here/selftests-guest.sh" \
		"$dir" "$moddir" "$results/$name.ktap" "$@" | python3 "$here/ktap.py" --progress
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
	run_suite "harness-$inject" "$inject" "$@" >/dev/null 2>&1
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
# shellcheck disable=SC2046
if out=$(cd "$project" && rustfmt --check --edition 2021 --config-path "$ksrc/.rustfmt.toml" \
	$(find rust samples drivers -name '*.rs' 2>/dev/null) 2>&1); then
	extra+=(--result "ok:style/rustfmt --check")
else
	echo "$out" | head -n 20
	extra+=(--result "fail:style/rustfmt --check")
fi

# rustfmt of the upstream Rust files that the series changes, in the kernel tree
# the tests built (rustfmt follows their modules, so lib.rs covers the crate).
# shellcheck disable=SC2046
if out=$(cd "$ksrc" && rustfmt --check --edition 2021 --config-path .rustfmt.toml \
	$(python3 -c 'import json, sys; print(" ".join(f for f in json.load(open(sys.argv[1]))["hooked"] if f.endswith(".rs")))' \
		.rstorage-overlay.json) 2>&1); then
	extra+=(--result "ok:style/rustfmt --check of the upstream Rust files the series changes")
else
	echo "$out" | head -n 20
	extra+=(--result "fail:style/rustfmt --check of the upstream Rust files the series changes")
fi

# The patch series: make patches, git am on pristine 7.3, checkpatch --strict
# (checkpatch.sh).
while IFS= read -r r; do
	extra+=(--result "$r")
done < <(bash "$here/checkpatch.sh" "$project" "$ksrc" "$(dirname "$obj")" "$results")

# clippy and rustdoc (lint.sh), in their own object directory beside the
# kernel's.
while IFS= read -r r; do
	extra+=(--result "$r")
done < <(bash "$here/lint.sh" "$project" "$obj" "$moddir" "$(dirname "$obj")/lint-$(basename "$obj")" \
	"$results")

# The out-of-tree build (the top-level Kbuild), as users of their own kernel
# tree run it, against the same kernel: it must build the modules the kernel
# build made in its tree.
if out=$(bash "$here/build-oot.sh" "$project" "$obj" "$results/modules-oot" 2>&1) &&
	cmp -s "$results/modules-oot/modules.order" "$moddir/modules.order"; then
	extra+=(--result "ok:build/out-of-tree build (make -C <kernel build> M=...) of the same modules")
else
	echo "$out" | tail -n 20
	extra+=(--result "fail:build/out-of-tree build (make -C <kernel build> M=...) of the same modules")
fi

# Safe drivers: all `unsafe` lives in the kernel crate's abstractions
# (rust/kernel/), none in the Rust code of drivers/ and samples/ (comments and
# string literals aside). The scanner must also find a planted `unsafe`, and
# pass its own cases, or a scanner that finds nothing would pass.
if out=$(cd "$project" && python3 "$here/no_unsafe.py" drivers samples 2>&1); then
	extra+=(--result "ok:style/no unsafe in drivers/ and samples/")
else
	echo "$out" | head -n 20
	extra+=(--result "fail:style/no unsafe in drivers/ and samples/")
fi
mkdir -p "$results/unsafe-plant" &&
	printf 'fn f() {\n    // SAFETY: planted.\n    unsafe { g() }\n}\n' >"$results/unsafe-plant/plant.rs"
if python3 "$here/no_unsafe.py" --self-test &&
	! python3 "$here/no_unsafe.py" "$results/unsafe-plant" >/dev/null; then
	extra+=(--result "ok:harness/the unsafe scanner finds a planted unsafe block")
else
	extra+=(--result "fail:harness/the unsafe scanner finds a planted unsafe block")
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

# The per-case display reads the VM's console, where a test's line can cut a
# kernel message ("[   4# ok 8 ..."): that case must still be shown as run.
cut=$(printf '%s\n' '# selftests: drivers/rstorage: cut.sh' '# TAP version 13' '# 1..2' \
	'# ok 1 first' '[   4# ok 2 second' '0.123456] a kernel message' \
	'ok 1 selftests: drivers/rstorage: cut.sh' | python3 "$here/ktap.py" --progress)
if grep -qx '  ok cut/second' <<<"$cut" && ! grep -q 'not ok' <<<"$cut"; then
	extra+=(--result "ok:harness/a case whose line cut a kernel message on the console is shown as run")
else
	extra+=(--result "fail:harness/a case whose line cut a kernel message on the console is shown as run")
fi

# The VM runner's time limit holds when the guest prints nothing: a stand-in
# for virtme-ng that prints one line and then hangs silently must be killed
# at the limit (3 s), with the timeout status (no VM needed).
fake_vng=$results/harness-silent-vng
printf '#!/bin/sh\necho booting\nexec sleep 60\n' >"$fake_vng" && chmod +x "$fake_vng"
t0=$(date +%s)
RSTORAGE_VNG=$fake_vng python3 "$here/vm.py" --kernel "$obj" --log "$results/harness-silent.console" \
	--timeout 3 -- true >/dev/null 2>&1
rc=$? took=$(($(date +%s) - t0))
if [ "$rc" = 124 ] && [ "$took" -lt 20 ]; then
	extra+=(--result "ok:harness/a silent hung guest is stopped at the VM runner's time limit")
else
	extra+=(--result "fail:harness/a silent hung guest is stopped at the VM runner's time limit (exit $rc after $took s)")
fi

# shellcheck disable=SC2086
run_suite main "${RSTORAGE_INJECT:-}" ${RSTORAGE_TESTS:-}
vm_results main

# make vm: the VM it gives users, booted with a command instead of the shell
# (vm.sh): vm_check must find the whole test topology there, and must fail
# once a part of it (the AoE veth pair) is removed.
if [ "${RSTORAGE_VM_TEST:-1}" != 0 ]; then
	say "make vm: booting the VM with the test topology (console log: $results/vm/vm.console)"
	vm_out=$(RSTORAGE_VM_TIMEOUT=600 bash "$here/vm.sh" "$obj" "$moddir" "$results" \
		'vm_check; a=$?; ip link del aoe0; vm_check >/dev/null; echo "vm_check: $a $?"' 2>&1)
	vm_rc=$?
	echo "$vm_out" | grep -E '^(ok|not ok): ' | sed 's/^/  /'
	if [ "$vm_rc" = 0 ] && grep -q '^vm_check: 0 ' <<<"$vm_out"; then
		extra+=(--result "ok:vm/make vm boots with the test topology and a hint per module")
	else
		echo "$vm_out" | tail -n 20
		extra+=(--result "fail:vm/make vm boots with the test topology and a hint per module (exit $vm_rc)")
	fi
	if grep -qE '^vm_check: [0-9]+ [1-9]' <<<"$vm_out"; then
		extra+=(--result "ok:harness/vm_check fails once the AoE veth pair is removed")
	else
		extra+=(--result "fail:harness/vm_check fails once the AoE veth pair is removed")
	fi
fi

# blktests on our three drivers' devices, each case x device one result.
if [ -n "${BLKTESTS:-}" ]; then
	say "blktests: device cases on rvirtio_scsi, raoe and risert devices"
	n=0
	while IFS= read -r r; do
		# Printed as ktap.py --progress prints the VM's cases.
		case "$r" in
		ok:*) echo "  ok ${r#*:}" ;;
		fail:*) echo "  not ok ${r#*:}" ;;
		skip:*) echo "  ok ${r#*:} # SKIP" ;;
		*) continue ;;
		esac
		extra+=(--result "$r")
		n=$((n + 1))
	done < <(bash "$here/blktests.sh" "$obj" "$moddir" "$results" "$BLKTESTS" ours 2>"$results/blktests.log")
	[ "$n" -gt 0 ] || extra+=(--result "fail:blktests (no result; see $results/blktests.log)")
	if [ -f "$results/blktests/table.inc" ]; then
		say "blktests: case x device (pass / FAIL / not run [reason])"
		grep -v '^\.\. ' "$results/blktests/table.inc" | sed 's/^/  /'
	fi
else
	extra+=(--result "skip:blktests (BLKTESTS=<blktests checkout> not given)")
fi

if [ "${RSTORAGE_HARNESS:-1}" != 0 ]; then
	harness ktap-fail "a failing KTAP case" 'FAIL .*injected failing case' modules.sh
	harness missing-module "a missing module" 'FAIL .*load rstorage_missing' modules.sh
	harness missing-suite "a missing KUnit suite" 'FAIL .*rstorage_missing_suite (suite missing' kunit.sh
	harness warn "a kernel WARNING" 'WARNING:.*rstorage_sample' modules.sh
fi

say "results in $results"
python3 "$here/ktap.py" "$results/main.ktap" "${extra[@]}"
