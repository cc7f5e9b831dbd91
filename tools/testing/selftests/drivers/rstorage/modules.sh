#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Every module the out-of-tree build produced exists, loads and unloads.
. "$(dirname "$0")/lib.sh"

mapfile -t mods < <(rstorage_modules)
ktap_print_header
ktap_set_plan $((${#mods[@]} * 2))
for m in "${mods[@]}"; do
	ko=$(rstorage_ko "$m")
	# shellcheck disable=SC2046
	if [ -f "$ko" ] && rstorage_insmod "$m" $(rstorage_quick_params "$m") &&
		rstorage_loaded "$m"; then
		ktap_test_pass "load $m"
	else
		ktap_print_msg "$m: ${ko:-no such module in modules.order} did not load"
		ktap_test_fail "load $m"
	fi
	if rstorage_loaded "$m" && rmmod "$m" && ! rstorage_loaded "$m"; then
		ktap_test_pass "unload $m"
	else
		ktap_test_fail "unload $m"
	fi
done
ktap_finished
