#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The out-of-tree build of our modules (the project's top-level Kbuild),
# against a kernel build that carries the kernel-crate changes, the way a
# user of their own kernel tree builds them:
#   make -C KERNEL_OBJ M=<project> MO=OUT modules
# A kernel built with clang is built against with clang again.
#
# Usage: build-oot.sh PROJECT_DIR KERNEL_OBJ OUT
set -euo pipefail

project=$1 obj=$2 out=$3
. "$project/tools/testing/rstorage/toolchain.sh"
llvm=()
grep -q '^CONFIG_CC_IS_CLANG=y' "$obj/.config" && llvm=(LLVM=-19)
mkdir -p "$out"
make -s -C "$obj" M="$project" MO="$out" "${RSTORAGE_MAKE_FLAGS[@]}" "${llvm[@]}" modules
