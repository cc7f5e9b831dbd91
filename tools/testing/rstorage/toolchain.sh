# SPDX-License-Identifier: GPL-2.0
# Sourced by the build scripts: the Rust toolchain the kernel is built with.
# Debian's rustc-web ships rustc with matching library sources (rust-src),
# which the kernel needs; rustup's toolchain on PATH does not have them.
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
RSTORAGE_MAKE_FLAGS=(
	RUSTC="${RUSTC:-/usr/bin/rustc}"
	RUSTDOC="${RUSTDOC:-/usr/bin/rustdoc}"
	BINDGEN="${BINDGEN:-bindgen}"
)
