#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install what building and testing the overlay needs on a Debian 12 host.
# Idempotent: every step checks first and skips what is already present.
#
# Usage: deps.sh [LLVM=1]
set -euo pipefail

say() { printf '[deps] %s\n' "$*"; }

llvm=0
for a in "$@"; do
	case "$a" in
	LLVM=1) llvm=1 ;;
	esac
done

# Debian packages, grouped by what needs them.
pkgs=(
	# kernel build
	build-essential bc flex bison libelf-dev libssl-dev cpio dwarves kmod
	python3 rsync patch xz-utils
	# Rust for Linux: rustc/rustdoc with matching library sources, libclang for
	# bindgen, clippy of the same release (make check runs make CLIPPY=1)
	rustc-web rust-web-src rust-web-clippy libclang-19-dev
	# VM runner (virtme-ng boots the kernel on the host's root file system)
	qemu-system-x86 python3-pip udev
	# user space exercised inside the VM
	fio vblade aoetools open-iscsi iproute2
	librdmacm-dev libibverbs-dev ibverbs-providers sg3-utils
	# blktests (its ./check and the device cases)
	gawk pciutils xfsprogs liburing-dev
)
if [ "$llvm" = 1 ]; then
	pkgs+=(clang-19 lld-19 llvm-19)
fi

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ "${#missing[@]}" -gt 0 ]; then
	say "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
		say "apt-get failed once; finishing interrupted configuration and retrying"
		dpkg --configure -a || true
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
else
	say "Debian packages: all present"
fi

# bindgen: bookworm's is too old for 7.3 (needs >= 0.71.1).
need_bindgen=1
if command -v bindgen >/dev/null 2>&1; then
	v=$(bindgen --version 2>/dev/null | awk '{print $2}')
	if [ -n "$v" ] && [ "$(printf '%s\n0.71.1\n' "$v" | sort -V | head -n1)" = 0.71.1 ]; then
		need_bindgen=0
		say "bindgen $v: present"
	fi
fi
if [ "$need_bindgen" = 1 ]; then
	cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
	say "installing bindgen-cli 0.72.1 from crates.io (about a minute)"
	"$cargo" install --quiet --locked --root /usr/local bindgen-cli --version 0.72.1
fi

# virtme-ng: the VM runner.
if ! command -v vng >/dev/null 2>&1; then
	say "installing virtme-ng from PyPI"
	python3 -m pip install --quiet --root-user-action=ignore 'virtme-ng==1.42' ||
		python3 -m pip install --quiet --root-user-action=ignore --break-system-packages 'virtme-ng==1.42'
else
	say "virtme-ng: present"
fi
# checkpatch.pl's SPDX check (scripts/spdxcheck.py) needs ply and GitPython in
# the python3 it runs.
if ! python3 -c 'import ply, git' 2>/dev/null; then
	say "installing ply and GitPython from PyPI (for checkpatch.pl)"
	python3 -m pip install --quiet --root-user-action=ignore 'ply==3.11' 'GitPython==3.1.45' ||
		python3 -m pip install --quiet --root-user-action=ignore --break-system-packages \
			'ply==3.11' 'GitPython==3.1.45'
else
	say "ply, GitPython: present"
fi
say "done"
