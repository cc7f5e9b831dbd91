#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The kernel's Rust lints on what the series adds, for make check:
#
#   clippy   make CLIPPY=1 of the kernel crate (rust/) and of our drivers' and
#            samples' crates, with the clippy-driver that matches the
#            rustc the kernel is built with (Debian's rust-web-clippy);
#   rustdoc  make rustdoc (the kernel crate's documentation, with our
#            abstractions' doc comments and intra-doc links).
#
# Any warning fails the result. Both run in their own object directory
# (LINT_OBJ, configured like KERNEL_OBJ), so that the tested kernel's objects
# are neither rebuilt nor replaced; it is reused between runs. Prints result
# lines "ok:<name>" / "fail:<name>" for check.sh; the logs go to RESULTS_DIR.
#
# Usage: lint.sh PROJECT_DIR KERNEL_OBJ MODULE_DIR LINT_OBJ RESULTS_DIR
#   MODULE_DIR's modules.order names our modules (collect-modules.sh).
set -uo pipefail

project=$1 kobj=$2 moddir=$3 lobj=$4 results=$5
ksrc=$(readlink -f "$kobj/source")
source "$project/tools/testing/rstorage/toolchain.sh"
clippy=${CLIPPY_DRIVER:-/usr/bin/clippy-driver}
kmake=(make -C "$ksrc" O="$lobj" ARCH=x86_64 "${RSTORAGE_MAKE_FLAGS[@]}" CLIPPY_DRIVER="$clippy")
grep -q '^CONFIG_CC_IS_CLANG=y' "$kobj/.config" && kmake+=(LLVM=-19)

mkdir -p "$lobj"
if ! cmp -s "$kobj/.config" "$lobj/.config"; then
	cp "$kobj/.config" "$lobj/.config"
fi
# Warnings only, as rustc and clippy print them ("warning: ..." and the
# summary "warning: N warnings emitted").
warnings() { grep -E '^(warning|error)(\[[^]]*\])?:' "$1"; }

log=$results/clippy.log
# Our modules' objects (single-object targets: each crate is compiled, no
# modpost, and nothing else of their directories).
objs=$(cat "$moddir/modules.order")
# shellcheck disable=SC2086
if "${kmake[@]}" -s olddefconfig >"$log" 2>&1 &&
	"${kmake[@]}" -j"$(nproc)" CLIPPY=1 prepare >>"$log" 2>&1 &&
	"${kmake[@]}" -j"$(nproc)" CLIPPY=1 rust/ $objs >>"$log" 2>&1 && ! warnings "$log" >&2; then
	echo "ok:lint/make CLIPPY=1: no warning in the kernel crate, our drivers and samples"
else
	tail -n 20 "$log" >&2
	echo "fail:lint/make CLIPPY=1: no warning in the kernel crate, our drivers and samples (see $log)"
fi

log=$results/rustdoc.log
if "${kmake[@]}" -j"$(nproc)" rustdoc >"$log" 2>&1 && ! warnings "$log" >&2; then
	echo "ok:lint/make rustdoc: no warning"
else
	tail -n 20 "$log" >&2
	echo "fail:lint/make rustdoc: no warning (see $log)"
fi
