#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Fetch the pristine Linux 7.3 source from Debian (package linux-source-7.3 in
# trixie-backports) without touching the host's apt configuration, and unpack
# it into DEST. Skips everything when DEST already holds the source.
#
# Usage: fetch-kernel.sh DEST
set -euo pipefail

dest=${1:?usage: fetch-kernel.sh DEST}
mkdir -p "$(dirname "$dest")"
dest=$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")
say() { printf '[kernel-src] %s\n' "$*"; }

if [ -f "$dest/Makefile" ] && [ -f "$dest/.rstorage-pristine" ]; then
	say "$(cat "$dest/.rstorage-pristine"): present in $dest"
	exit 0
fi

work=$(dirname "$dest")/apt
mkdir -p "$work"/{lists/partial,cache/archives/partial,etc/preferences.d,deb}
cat >"$work/etc/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
LIST
opts=(
	-o "Dir::Etc::SourceList=$work/etc/sources.list"
	-o "Dir::Etc::SourceParts=-"
	-o "Dir::Etc::PreferencesParts=$work/etc/preferences.d"
	-o "Dir::State::Lists=$work/lists"
	-o "Dir::Cache=$work/cache"
	-o "Dir::State::status=/var/lib/dpkg/status"
	-o "APT::Architecture=amd64"
	-o "Debug::NoLocking=1"
	-o "APT::Sandbox::User=root"
)
say "looking up linux-source-7.3 in trixie-backports"
apt-get "${opts[@]}" -qq update
(cd "$work/deb" && rm -f linux-source-7.3_*.deb &&
	apt-get "${opts[@]}" -qq download linux-source-7.3)
deb=$(ls "$work"/deb/linux-source-7.3_*.deb)
say "unpacking $(basename "$deb")"
rm -rf "$work/x" && mkdir -p "$work/x"
dpkg-deb -x "$deb" "$work/x"
tarball=$(ls "$work"/x/usr/src/linux-source-7.3*.tar.xz)
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
tar -xJf "$tarball" -C "$dest.tmp" --strip-components=1
basename "$deb" .deb >"$dest.tmp/.rstorage-pristine"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
rm -rf "$work/x"
say "source ready in $dest ($(make -s -C "$dest" kernelversion))"
