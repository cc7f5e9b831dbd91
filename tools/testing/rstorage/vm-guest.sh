#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of `make vm` (vm.sh): set up the test topology, print how to load
# each of our modules, then either give an interactive root shell (started by
# virtme-ng as root's shell, no arguments) or run a command (-c COMMAND; its
# exit status is this script's).
#
# The topology:
#   virtio-scsi  three controllers with 11 disks and a failing one, attached by
#                QEMU (vscsi.sh), no driver bound;
#   AoE          a veth pair aoe0 (initiator side) / aoe1, and vblade serving a
#                64 MiB file as e0.0 on aoe1;
#   iSER         a veth pair veth0 (10.77.0.1) / veth1 (10.77.0.2) with rdma_rxe
#                on veth1, and a LIO iSCSI target with a 64 MiB ramdisk LUN and
#                a portal on 10.77.0.2:3260, on which iSER is switched on once
#                an iSER transport (risert) is loaded.
# The shell also has the selftests' helpers (aoe_lib.sh, iser_lib.sh, lib.sh)
# and vm_check, which checks that all of the above is there.
#
# vm.sh passes the set-up's settings in a file named by rstorage.vm= on the
# kernel command line.

vm_env=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^rstorage\.vm=//p')
# shellcheck source=/dev/null
. "$vm_env" || { echo "vm-guest: no settings (rstorage.vm=) on the command line" >&2; exit 1; }
export RSTORAGE_MODDIR=$vm_moddir
vm_work=/tmp/rstorage-vm
# shellcheck source=../selftests/drivers/rstorage/lib.sh
. "$vm_ksft/drivers/rstorage/lib.sh"
# shellcheck source=../selftests/drivers/rstorage/aoe_lib.sh
. "$vm_ksft/drivers/rstorage/aoe_lib.sh"
# shellcheck source=../selftests/drivers/rstorage/iser_lib.sh
. "$vm_ksft/drivers/rstorage/iser_lib.sh"

# vm_controllers: the number of virtio-scsi PCI functions (legacy and modern).
vm_controllers() {
	local d n=0
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat "$d/vendor")" = 0x1af4 ] || continue
		case $(cat "$d/device") in 0x1004 | 0x1048) n=$((n + 1)) ;; esac
	done
	echo "$n"
}

# vm_hints: one line per module of ours: how to load it on this topology.
vm_hints() {
	local m ko
	echo "Our modules ($vm_release), none loaded; to try each:"
	for m in $(rstorage_modules); do
		ko=$(rstorage_ko "$m")
		case $m in
		rvirtio_scsi)
			echo "  insmod $ko   # binds the 3 virtio-scsi controllers; lsscsi" ;;
		raoe)
			echo "  insmod $ko aoe_iflist=aoe0 && aoe-discover && aoe-stat   # e0.0 by vblade" ;;
		raoe_target)
			echo "  insmod $ko && aoe_ktarget 1 $vm_work/e0.1.img   # serves e0.1 on aoe1" ;;
		risert)
			echo "  insmod $ko && echo 1 >$iser_np/iser &&" \
				"iser_initiator_up && iser_login   # LUN as an sd disk" ;;
		rstorage_sample)
			echo "  insmod $ko   # /dev/rstorage-sample" ;;
		rstorage_batch_stress)
			echo "  insmod $ko   # the stress runs at load; dmesg | tail" ;;
		*)
			echo "  insmod $ko" ;;
		esac
	done
}

# vm_check: each part of the topology is there, and each module has a hint.
vm_check() {
	local bad=0 m hints
	vm_ok() {
		if "${@:2}"; then echo "ok: $1"; else echo "not ok: $1"; bad=1; fi
	}
	vm_ok "3 virtio-scsi controllers, no driver bound" \
		eval '[ "$(vm_controllers)" = 3 ] && ! ls /sys/bus/virtio/drivers/*scsi* >/dev/null 2>&1'
	vm_ok "veth aoe0/aoe1 up" eval 'ip link show aoe0 | grep -q "state UP" &&
		ip link show aoe1 | grep -q "state UP"'
	vm_ok "vblade serves e0.0 on aoe1" eval 'kill -0 "$(cat "$vm_work/e0.0.img.pid")"'
	vm_ok "rdma_rxe device rxe0 on veth1" eval 'rdma link show rxe0/1 | grep -q "netdev veth1"'
	vm_ok "LIO target with a LUN and a portal on $iser_portal" \
		eval '[ "$(cat "$iser_tpg/enable")" = 1 ] && [ -d "$iser_tpg/lun/lun_0" ] && [ -d "$iser_np" ]'
	hints=$(vm_hints)
	for m in $(rstorage_modules); do
		vm_ok "module $m built, with a hint" eval '[ -f "$(rstorage_ko "$m")" ] &&
			grep -q "/$m.ko" <<<"$hints"'
	done
	vm_ok "none of our modules loaded" eval '! grep -qE "^(rvirtio_scsi|raoe|raoe_target|risert) " /proc/modules'
	return "$bad"
}

# Sourced as the interactive shell's rc file: the helpers only.
if [ -n "${RSTORAGE_VM_RC:-}" ]; then
	PS1='rstorage-vm:\w# '
	return 0
fi

vm_setup() {
	mkdir -p "$vm_work" &&
		aoe_veth_up &&
		truncate -s 64M "$vm_work/e0.0.img" "$vm_work/e0.1.img" &&
		aoe_target 0 "$vm_work/e0.0.img" &&
		iser_rxe_up &&
		iser_autoload off &&
		iser_lio_up 16384
}
if ! out=$(vm_setup 2>&1); then
	echo "vm-guest: the topology set-up failed:" >&2
	echo "$out" >&2
fi
vm_hints

if [ "${1:-}" = -c ]; then
	eval "$2"
	exit
fi
echo "The helpers of the selftests are defined (aoe_ktarget, iser_login, ...)."
echo "Check the topology with vm_check. Exit the shell to power off."
RSTORAGE_VM_RC=1 exec bash --rcfile "${BASH_SOURCE[0]}" -i
