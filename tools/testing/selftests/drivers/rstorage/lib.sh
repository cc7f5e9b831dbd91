# SPDX-License-Identifier: GPL-2.0
# Shared helpers for the rstorage selftests (sourced).

. "$(dirname "${BASH_SOURCE[0]}")/ktap_helpers.sh"

# Our modules, in build order, from the out-of-tree build's modules.order,
# plus a module that does not exist when RSTORAGE_INJECT=missing-module.
rstorage_modules() {
	sed -e 's|.*/||' -e 's|\.o$||' "$RSTORAGE_MODDIR/modules.order"
	[ "${RSTORAGE_INJECT:-}" = missing-module ] && echo rstorage_missing
	return 0
}

# rstorage_ko NAME: path of our module NAME.
rstorage_ko() {
	local p
	p=$(grep -E "(^|/)$1\.o\$" "$RSTORAGE_MODDIR/modules.order" | head -n1)
	echo "$RSTORAGE_MODDIR/${p%.o}.ko"
}

# rstorage_insmod NAME [PARAMS...]: load our module NAME.
rstorage_insmod() {
	local name=$1
	shift
	[ "$name" = rstorage_sample ] && [ "${RSTORAGE_INJECT:-}" = warn ] && set -- "$@" warn_on_load=1
	insmod "$(rstorage_ko "$name")" "$@"
}

rstorage_loaded() { [ -d "/sys/module/$1" ]; }

# rstorage_quick_params NAME: parameters for a quick load/unload of NAME
# (modules that do their work at load time get a small amount of it).
rstorage_quick_params() {
	case "$1" in
	rstorage_batch_stress) echo total=2000 inline=0 ;;
	esac
}

# rstorage_qmp JSON: runs a QMP command in the QEMU that runs this guest (the
# host's vm.py --qmp-dir bridge, given to tests as RSTORAGE_QMP_DIR) and
# prints QEMU's answer. Fails without a bridge or after 30 s.
rstorage_qmp() {
	local dir=${RSTORAGE_QMP_DIR:-} name i
	[ -n "$dir" ] && [ -d "$dir" ] || return 1
	name=$dir/req$$-$RANDOM
	printf '%s\n' "$1" >"$name.tmp" && mv "$name.tmp" "$name.req" || return 1
	for i in $(seq 150); do
		if [ -f "$name.resp" ]; then
			cat "$name.resp"
			rm -f "$name.resp"
			return 0
		fi
		sleep 0.2
	done
	rm -f "$name.req"
	return 1
}
