#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Deliberate failure, run only with RSTORAGE_INJECT=ktap-fail: proves that a
# failing KTAP case fails `make check`.
. "$(dirname "$0")/lib.sh"
ktap_print_header
ktap_set_plan 1
ktap_test_fail "injected failing case"
ktap_finished
