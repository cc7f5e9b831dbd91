#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Our modules, as the kernel build made them in its tree from their Kconfig
# options (=m), copied into OUT at their kernel-tree paths with a
# modules.order in build order: the layout the tests take as their module
# directory (RSTORAGE_MODDIR), the same as an out-of-tree build's.
#
# Which modules are ours, and where, comes from our Kbuild files: the
# directories that drivers/Kbuild lists, then samples/rust/Kbuild.
#
# With "builtin" (a kernel with our drivers built in), nothing is copied: OUT
# gets the same modules.order, an empty file "builtin", and "options" (each
# object with its Kconfig option), which make run's guest reads to check that
# each one is built in and to skip loading it.
#
# Usage: collect-modules.sh PROJECT_DIR KERNEL_OBJ OUT [builtin]
set -euo pipefail

project=$1 obj=$2 out=$3 mode=${4:-}
rm -rf "$out"
mkdir -p "$out"
# kbuild_objs DIR: "PATH OPTION" for each object DIR/Kbuild builds from an option.
kbuild_objs() {
	sed -n 's/^obj-\$(\(CONFIG_[A-Z0-9_]*\)) *+= *\([a-z0-9_]*\.o\)$/\2 \1/p' "$project/$1/Kbuild" |
		sed "s|^|$1/|"
}
objs=$(for d in $(sed -n 's/^obj-y *+= *\(.*\)\/$/\1/p' "$project/drivers/Kbuild"); do
	kbuild_objs "drivers/$d"
done; kbuild_objs samples/rust)
order=($(cut -d' ' -f1 <<<"$objs"))
[ "${#order[@]}" -gt 0 ] || { echo "collect-modules: no modules found in the Kbuild files" >&2; exit 1; }

if [ "$mode" = builtin ]; then
	missing=0
	for o in "${order[@]}"; do
		grep -qx "kernel/${o%.o}.ko" "$obj/modules.builtin" ||
			{ echo "error: ${o%.o}.ko is not built in ($obj/modules.builtin)" >&2; missing=1; }
	done
	[ "$missing" = 0 ] || exit 1
	printf '%s\n' "${order[@]}" >"$out/modules.order"
	: >"$out/builtin"
	echo "$objs" >"$out/options"
	exit 0
fi

missing=0
for o in "${order[@]}"; do
	ko=${o%.o}.ko
	if [ ! -f "$obj/$ko" ]; then
		echo "error: $ko was not built: is its option =m in $obj/.config?" >&2
		missing=1
		continue
	fi
	mkdir -p "$out/$(dirname "$ko")"
	cmp -s "$obj/$ko" "$out/$ko" || cp "$obj/$ko" "$out/$ko"
done
[ "$missing" = 0 ] || exit 1
printf '%s\n' "${order[@]}" >"$out/modules.order"
