# SPDX-License-Identifier: GPL-2.0
# Shared by the host-side scripts (sourced).

# rstorage_dirs KERNEL_OBJ MODULE_DIR RESULTS_DIR: sets obj, moddir and
# results to absolute paths, creating RESULTS_DIR.
rstorage_dirs() {
	obj=$(cd "$1" && pwd) && moddir=$(cd "$2" && pwd) && mkdir -p "$3" &&
		results=$(cd "$3" && pwd)
}

# rstorage_plot_python: prints a Python interpreter that can import
# matplotlib (for the benchmark plots), installing Debian's when none can.
rstorage_plot_python() {
	local py
	for py in python3 /usr/bin/python3; do
		"$py" -c 'import matplotlib' 2>/dev/null && { echo "$py"; return 0; }
	done
	echo "[bench] installing python3-matplotlib for the plot" >&2
	apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null &&
		echo /usr/bin/python3
}

# rstorage_kselftest_install KERNEL_SRC RESULTS_DIR: builds and installs the
# kselftest target drivers/rstorage (the overlay put it in KERNEL_SRC) into
# RESULTS_DIR/kselftest, the way kselftest-install does; the log goes to
# RESULTS_DIR/kselftest-install.log. The programs are user space, built with
# the host's cc: a make variable of the caller (LLVM=1 of the KASAN lane, which
# would ask for an unversioned clang) is not passed on.
rstorage_kselftest_install() {
	rm -rf "$2/kselftest"
	env -u LLVM MAKEFLAGS= MFLAGS= MAKEOVERRIDES= make -C "$1/tools/testing/selftests" O="$2/kselftest-build" TARGETS=drivers/rstorage \
		KSFT_INSTALL_PATH="$2/kselftest" install >"$2/kselftest-install.log" 2>&1
}
