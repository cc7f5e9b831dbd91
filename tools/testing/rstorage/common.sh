# SPDX-License-Identifier: GPL-2.0
# Shared by the host-side scripts (sourced).

# rstorage_dirs KERNEL_OBJ MODULE_DIR RESULTS_DIR: sets obj, moddir and
# results to absolute paths, creating RESULTS_DIR.
rstorage_dirs() {
	obj=$(cd "$1" && pwd) && moddir=$(cd "$2" && pwd) && mkdir -p "$3" &&
		results=$(cd "$3" && pwd)
}
