# SPDX-License-Identifier: GPL-2.0
#
# rstorage: Rust storage drivers for Linux 7.3, as a kernel-tree overlay.
#
#   make run     build the release kernel and modules, boot a VM, load the
#                drivers and move data through each one (BUILTIN=1: a kernel
#                with the drivers built in, nothing loaded)
#   make check   build the debug kernel and modules, boot a VM, run the KUnit
#                suites and the kselftest target; with BLKTESTS=<checkout>,
#                blktests' device cases on our three drivers' devices too;
#                ends with "N passed, N failed"
#
#   make blktests BLKTESTS=<blktests checkout>
#                blktests' device cases on each driver's device and on the
#                same device under the C driver (debug kernel, one VM boot
#                per kind of device); writes Documentation/rstorage/blktests.inc
#   make vm [VARIANT=debug|release] [CMD='...']
#                a VM with the test topology (virtio-scsi controllers and disks,
#                AoE target on a veth pair, rxe + LIO iSCSI target with an iSER
#                portal) and our modules built but not loaded: an interactive
#                root shell that prints how to load each; with CMD, runs it
#                there instead and exits with its status
#   make patches
#                the project as a git format-patch series on Linux 7.3, with
#                a cover letter, into build/patches/ (applied with git am to
#                check it); the same series the test kernels are built from
#   make patches-build-test
#                build every prefix of that series (release configuration,
#                one object directory reused; about an hour on 2 CPUs)
#   make bench-vscsi
#                benchmark C virtio_scsi vs rvirtio_scsi (release kernel);
#                writes Documentation/rstorage/rvirtio-scsi-bench.{inc,png}
#   make bench-aoe
#                benchmark C aoe vs raoe (release kernel);
#                writes Documentation/rstorage/raoe-bench.{inc,png}
#   make bench-iser
#                benchmark C ib_isert vs risert (budget 16, no budget, adaptive
#                busy polling) (release kernel); writes
#                Documentation/rstorage/risert-bench.{inc,png}
#
# Options: KDIR=<Linux 7.3 source tree> (default: Debian's linux-source-7.3,
# fetched into build/), LLVM=1 (build with clang; adds KASAN to the debug
# kernel), BUILD=<dir> (default: ./build).
#
# The kernels built here contain our drivers and samples as in-tree modules,
# from their Kconfig options (SCSI_RUST_VIRTIO, BLK_DEV_RUST_AOE,
# BLK_DEV_RUST_AOE_TARGET, INFINIBAND_RUST_ISERT, SAMPLE_RUST_RSTORAGE*).
# They also build out of tree (see Kbuild; make modules-oot-debug):
#   make -C <kernel build dir> M=$(CURDIR) MO=<output dir> modules

SHELL := /bin/bash
BUILD ?= $(CURDIR)/build
TOOLS := $(CURDIR)/tools/testing/rstorage
KSRC := $(if $(KDIR),$(abspath $(KDIR)),$(BUILD)/src)
LLVM_ARG := $(if $(filter 1,$(LLVM)),LLVM=1)
ifeq ($(LLVM),1)
KMAKE_LLVM := LLVM=-19
# clang builds live beside the GCC ones, so switching does not rebuild either.
SUFFIX := -llvm
endif

.PHONY: all help deps source kernel-debug kernel-release kernel-builtin modules-debug blktests bench-vscsi bench-aoe bench-iser \
	modules-release modules-oot-debug modules-oot-release check run vm fmt patches patches-build-test clean distclean

all: help

help:
	@awk 'NR >= 3 { if (!/^#/) exit; sub(/^# ?/, ""); print }' Makefile

deps:
	@bash $(TOOLS)/deps.sh $(LLVM_ARG)

source: deps
ifeq ($(KDIR),)
	@bash $(TOOLS)/fetch-kernel.sh $(KSRC)
else
	@test -f $(KSRC)/Makefile || { echo "error: KDIR=$(KDIR) is not a kernel source tree" >&2; exit 1; }
endif

kernel-debug kernel-release kernel-builtin: kernel-%: source
	@bash $(TOOLS)/build-kernel.sh $(CURDIR) $(KSRC) $(BUILD)/$*$(SUFFIX) $* $(LLVM_ARG)

# Our modules are built by the kernel build, in its tree, from their Kconfig
# options; this collects them for the tests (tools/testing/rstorage/collect-modules.sh).
modules-debug modules-release: modules-%: kernel-%
	@bash $(TOOLS)/collect-modules.sh $(CURDIR) $(BUILD)/$*$(SUFFIX) $(BUILD)/modules-$*$(SUFFIX)
	@echo "[modules:$*] $$(wc -l < $(BUILD)/modules-$*$(SUFFIX)/modules.order) in-tree module(s):" \
		$$(sed 's|.*/||; s|\.o$$||' $(BUILD)/modules-$*$(SUFFIX)/modules.order)

# The out-of-tree build (make -C <kernel build> M=$(CURDIR)), as users of their
# own kernel tree run it; make check runs it too.
modules-oot-debug modules-oot-release: modules-oot-%: kernel-%
	@echo "[modules-oot:$*] building out of tree against $(BUILD)/$*$(SUFFIX)"
	@bash $(TOOLS)/build-oot.sh $(CURDIR) $(BUILD)/$*$(SUFFIX) $(BUILD)/modules-oot-$*$(SUFFIX)

check: modules-debug
	@BLKTESTS="$(if $(BLKTESTS),$(abspath $(BLKTESTS)))" bash $(TOOLS)/check.sh $(BUILD)/debug$(SUFFIX) $(BUILD)/modules-debug$(SUFFIX) $(BUILD)/results

# blktests (an external checkout) on our drivers' devices and the C drivers'.
blktests: modules-debug
	@test -n "$(BLKTESTS)" || { echo "make blktests needs BLKTESTS=<blktests checkout>"; exit 1; }
	@bash $(TOOLS)/blktests.sh $(BUILD)/debug$(SUFFIX) $(BUILD)/modules-debug$(SUFFIX) \
		$(BUILD)/results $(abspath $(BLKTESTS)) both

# Benchmarks (not tests): C vs Rust drivers in one VM boot of the release kernel;
# write tables and plots into Documentation/rstorage/.
bench-vscsi bench-aoe bench-iser: bench-%: modules-release
	@bash $(TOOLS)/bench/bench.sh $* $(BUILD)/release$(SUFFIX) $(BUILD)/modules-release$(SUFFIX) \
		$(BUILD)/results

ifeq ($(BUILTIN),1)
# The release kernel with our drivers and samples built in (configs/builtin.config).
run: kernel-builtin
	@bash $(TOOLS)/collect-modules.sh $(CURDIR) $(BUILD)/builtin$(SUFFIX) $(BUILD)/modules-builtin$(SUFFIX) builtin
	@bash $(TOOLS)/run.sh $(BUILD)/builtin$(SUFFIX) $(BUILD)/modules-builtin$(SUFFIX) $(BUILD)/results
else
run: modules-release
	@bash $(TOOLS)/run.sh $(BUILD)/release$(SUFFIX) $(BUILD)/modules-release$(SUFFIX) $(BUILD)/results
endif

# A VM with the test topology, our modules built and not loaded (vm.sh). CMD
# reaches the guest's shell as written ($(value ...): make does not expand it).
VARIANT ?= debug
export RSTORAGE_VM_CMD := $(value CMD)
vm: modules-$(VARIANT)
	@case "$(VARIANT)" in debug|release) ;; *) echo "make vm: VARIANT is debug or release" >&2; exit 1 ;; esac
	@bash $(TOOLS)/vm.sh $(BUILD)/$(VARIANT)$(SUFFIX) $(BUILD)/modules-$(VARIANT)$(SUFFIX) \
		$(BUILD)/results "$$RSTORAGE_VM_CMD"

# The patch series (tools/testing/rstorage/patches/series) as git format-patch
# output on a pristine tree, checked with git am.
patches: source
	@python3 $(TOOLS)/make-patches.py --verify $(CURDIR) $(KSRC) $(BUILD)/patches-git $(BUILD)/patches

patches-build-test: patches
	@bash $(TOOLS)/build-series.sh $(CURDIR) $(BUILD) $(LLVM_ARG)

# rustfmt check of our Rust sources, with the kernel's rustfmt settings.
fmt:
	@rustfmt --check --edition 2021 --config-path $(KSRC)/.rustfmt.toml \
		$$(find rust samples drivers -name "*.rs" 2>/dev/null)

clean:
	rm -rf $(BUILD)/modules-* $(BUILD)/results

distclean:
	rm -rf $(BUILD)
