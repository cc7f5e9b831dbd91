#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build every prefix of the patch series (make patches-build-test): check out
# each commit of the series that make patches wrote, in order, and build the
# kernel and its modules with the release configuration (tinyconfig +
# base.config + release.config, with all of our options =m). One object
# directory is reused, so each step rebuilds what the patch changed. Prints
# one line per patch with its build time; stops at the first patch that does
# not build (its log is in OBJ/step.log).
#
# Usage: build-series.sh PROJECT_DIR BUILD_DIR [LLVM=1]
set -euo pipefail

project=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
llvm=${3:-}
repo=$build/patches-git
tree=$build/series-tree
obj=$build/series-obj
cfgdir=$project/tools/testing/rstorage/configs
say() { printf '[series] %s\n' "$*"; }

git -C "$repo" rev-parse -q --verify rstorage >/dev/null ||
	{ echo "error: no series in $repo; run make patches first" >&2; exit 1; }
source "$project/tools/testing/rstorage/toolchain.sh"

if [ ! -d "$tree" ]; then
	git -C "$repo" worktree prune
	git -C "$repo" worktree add -q --detach "$tree" v7.3
fi
kmake=(make -C "$tree" O="$obj" ARCH=x86_64 "${RSTORAGE_MAKE_FLAGS[@]}")
[ "$llvm" = LLVM=1 ] && kmake+=(LLVM=-19)

# The full configuration, made once on the whole series, so that the options
# that later patches add are asked for from the start.
mkdir -p "$obj"
git -C "$tree" checkout -q --detach rstorage
if [ ! -f "$obj/series.config" ]; then
	say "configuring on the whole series: tinyconfig + base.config release.config"
	"${kmake[@]}" -s tinyconfig >/dev/null
	(cd "$obj" && KCONFIG_CONFIG=.config "$tree/scripts/kconfig/merge_config.sh" \
		-m -O "$obj" .config "$cfgdir/base.config" "$cfgdir/release.config" >/dev/null)
	"${kmake[@]}" -s olddefconfig >/dev/null
	cp "$obj/.config" "$obj/series.config"
fi

total=0 n=0
for c in $(git -C "$repo" rev-list --reverse v7.3..rstorage); do
	n=$((n + 1))
	subject=$(git -C "$repo" log -1 --format=%s "$c")
	git -C "$tree" checkout -q --detach "$c"
	cp "$obj/series.config" "$obj/.config"
	start=$(date +%s)
	if ! "${kmake[@]}" -s olddefconfig >"$obj/step.log" 2>&1 ||
		! "${kmake[@]}" -j"$(nproc)" vmlinux modules >>"$obj/step.log" 2>&1; then
		tail -n 30 "$obj/step.log" >&2
		say "$n: $subject: does NOT build (log: $obj/step.log)"
		exit 1
	fi
	if grep -E '^(warning|error)(\[|:)|: warning:' "$obj/step.log" >&2; then
		say "$n: $subject: builds with warnings (log: $obj/step.log)"
		exit 1
	fi
	t=$(($(date +%s) - start))
	total=$((total + t))
	mods=$(grep -cE 'rvirtio_scsi|raoe|risert|rstorage' "$obj/modules.order" || true)
	say "$n: $subject: builds ($t s; $mods of our modules)"
done
say "all $n prefixes build, $total s in all"
