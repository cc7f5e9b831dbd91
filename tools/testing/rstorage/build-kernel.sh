#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build one variant of the rstorage kernel (bzImage and modules) out of tree.
#
# Usage: build-kernel.sh PROJECT_DIR KERNEL_SRC OBJ_DIR VARIANT [LLVM=1]
#   VARIANT is "debug" (make check), "release" (make run, benchmarks) or
#   "builtin" (the release kernel with our drivers built in: make run BUILTIN=1).
#
# The overlay (tools/testing/rstorage/overlay.py) is applied to KERNEL_SRC
# first. The configuration is tinyconfig plus the fragments under
# tools/testing/rstorage/configs/; it is regenerated only when a fragment
# changes, so repeated builds are incremental.
set -euo pipefail

project=$(cd "$1" && pwd)
ksrc=$(cd "$2" && pwd)
mkdir -p "$3"
obj=$(cd "$3" && pwd)
variant=$4
llvm=${5:-}
cfgdir=$project/tools/testing/rstorage/configs
say() { printf '[kernel:%s] %s\n' "$variant" "$*"; }

source "$project/tools/testing/rstorage/toolchain.sh"
kmake=(make -C "$ksrc" O="$obj" ARCH=x86_64 "${RSTORAGE_MAKE_FLAGS[@]}")
[ "$llvm" = LLVM=1 ] && kmake+=(LLVM=-19)

if [ -f "$ksrc/.config" ] || [ -d "$ksrc/include/config" ]; then
	echo "error: $ksrc has been configured or built in place; out-of-tree builds" >&2
	echo "       need a clean source tree (run 'make mrproper' there first)." >&2
	exit 1
fi

python3 "$project/tools/testing/rstorage/overlay.py" "$project" "$ksrc"

# Stop early, with the kernel's own explanation, when Rust is not usable.
if ! out=$("${kmake[@]}" -s rustavailable 2>&1); then
	echo "error: Rust support is not available for this kernel build:" >&2
	grep -v '^make' <<<"$out" >&2
	exit 1
fi

frags=("$cfgdir/base.config")
[ "$variant" = builtin ] && frags+=("$cfgdir/release.config")
frags+=("$cfgdir/$variant.config")
if [ "$variant" = debug ] && [ "$llvm" = LLVM=1 ]; then
	frags+=("$cfgdir/kasan.config")
fi
stamp=$(cat "${frags[@]}" <(echo "$llvm") | sha256sum | cut -d' ' -f1)
if [ ! -f "$obj/.config" ] || [ "$(cat "$obj/.rstorage-config" 2>/dev/null)" != "$stamp" ]; then
	say "configuring: tinyconfig + ${frags[*]##*/}"
	"${kmake[@]}" -s tinyconfig >/dev/null
	(cd "$obj" && KCONFIG_CONFIG=.config "$ksrc/scripts/kconfig/merge_config.sh" \
		-m -O "$obj" .config "${frags[@]}" >/dev/null)
	"${kmake[@]}" -s olddefconfig >/dev/null
	# Every option a fragment asks for must have survived olddefconfig (a
	# later fragment's value of an option replaces an earlier one's).
	bad=0
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*) grep -qxF "$line" "$obj/.config" || { echo "error: $line did not stick" >&2; bad=1; } ;;
		"# CONFIG_"*" is not set")
			opt=${line#\# }; opt=${opt%% *}
			grep -q "^$opt=" "$obj/.config" && { echo "error: $opt should be unset" >&2; bad=1; } ;;
		esac
	done < <(cat "${frags[@]}" | awk '
		/^CONFIG_[A-Za-z0-9_]*=/ { o = $0; sub(/=.*/, "", o) }
		/^# CONFIG_.* is not set$/ { o = $2 }
		o != "" { if (!(o in last)) order[n++] = o; last[o] = $0; o = "" }
		END { for (i = 0; i < n; i++) print last[order[i]] }')
	[ "$bad" = 0 ] || exit 1
	echo "$stamp" >"$obj/.rstorage-config"
fi

say "building bzImage and modules (log: $obj/build.log)"
start=$(date +%s)
set +e
"${kmake[@]}" -j"$(nproc)" bzImage modules 2>&1 | tee "$obj/build.log" |
	awk -v p="[kernel:$variant]" '
		/^ *(CC|RUSTC|LD|AR|AS|BINDGEN)/ { n++; if (n % 400 == 0) { printf "%s %6d steps, now %s\n", p, n, $2; fflush() } }
		/: error|\*\*\* / { print; fflush() }'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
	echo "error: kernel build failed; last lines of $obj/build.log:" >&2
	tail -n 30 "$obj/build.log" >&2
	exit "$rc"
fi
say "done in $(($(date +%s) - start)) s: $(cat "$obj/include/config/kernel.release")"
