#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The kernel's Rust lints on what the series adds, for make check:
#
#   clippy   make CLIPPY=1 of the kernel crate (rust/) and of our drivers' and
#            samples' crates, with the clippy-driver that matches the
#            rustc the kernel is built with (Debian's rust-web-clippy);
#            then a planted crate with one known clippy warning must be
#            reported, which shows that the check can fail;
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

# The clippy check can fail: an out-of-tree crate with one known warning
# (clippy::len_zero), built the same way, must report it.
planted=$results/lint-planted
rm -rf "$planted" && mkdir -p "$planted"
echo 'obj-m += rstorage_lint_planted.o' >"$planted/Kbuild"
cat >"$planted/rstorage_lint_planted.rs" <<'EOF'
// SPDX-License-Identifier: GPL-2.0

//! A module with one clippy warning, which lint.sh must report.

use kernel::prelude::*;

module! {
    type: Planted,
    name: "rstorage_lint_planted",
    authors: ["rstorage"],
    description: "A planted clippy warning",
    license: "GPL",
}

struct Planted;

impl kernel::Module for Planted {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let v: KVec<u8> = KVec::new();
        if v.len() == 0 {
            pr_info!("empty\n");
        }
        Ok(Planted)
    }
}
EOF
log=$results/clippy-planted.log
"${kmake[@]}" M="$planted" CLIPPY=1 rstorage_lint_planted.o >"$log" 2>&1
if grep -q 'clippy::len_zero' "$log" && warnings "$log" >/dev/null; then
	echo "ok:lint/make CLIPPY=1 reports a planted warning (clippy::len_zero)"
else
	tail -n 20 "$log" >&2
	echo "fail:lint/make CLIPPY=1 reports a planted warning (clippy::len_zero) (see $log)"
fi

log=$results/rustdoc.log
if "${kmake[@]}" -j"$(nproc)" rustdoc >"$log" 2>&1 && ! warnings "$log" >&2; then
	echo "ok:lint/make rustdoc: no warning"
else
	tail -n 20 "$log" >&2
	echo "fail:lint/make rustdoc: no warning (see $log)"
fi
