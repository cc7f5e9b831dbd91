# SPDX-License-Identifier: GPL-2.0
# Minimal KTAP output helpers for the rstorage selftests (sourced).

KTAP_CNT=0
KTAP_FAIL=0

ktap_header() { echo "KTAP version 1"; }
ktap_plan() { echo "1..$1"; }
ktap_info() { echo "# $*"; }
ktap_pass() { KTAP_CNT=$((KTAP_CNT + 1)); echo "ok $KTAP_CNT $*"; }
ktap_fail() { KTAP_CNT=$((KTAP_CNT + 1)); KTAP_FAIL=$((KTAP_FAIL + 1)); echo "not ok $KTAP_CNT $*"; }
ktap_skip() { KTAP_CNT=$((KTAP_CNT + 1)); echo "ok $KTAP_CNT $1 # SKIP ${2:-}"; }

# ktap_check NAME CMD...: one test case from a command's exit status.
ktap_check() {
	local name=$1
	shift
	if "$@"; then ktap_pass "$name"; else ktap_fail "$name"; fi
}

# Exit status for the test program: 1 if anything failed.
ktap_finished() { [ "$KTAP_FAIL" = 0 ]; }
