#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Apply the project's kernel overlay to a Linux source tree.

The overlay is the patch series applied (``series.py`` describes it):

* new files: everything under the project's ``rust/``, ``drivers/`` and
  ``samples/`` directories and its kselftest target
  ``tools/testing/selftests/drivers/rstorage/`` is copied to the same path in
  the kernel tree (with its file mode), except the two Kbuild files that only
  the out-of-tree build uses (``drivers/Kbuild``, ``samples/rust/Kbuild``: in
  the kernel tree the Makefiles there list the drivers and samples); each of
  them is added by one patch of the series, which is checked;
* hooks: the patches' diffs change a few existing files
  (``rust/kernel/lib.rs``, ``rust/bindings/bindings_helper.h``,
  ``rust/helpers/helpers.c``, the Kconfig and Makefile hooks of the drivers
  and samples, ...); they are applied in series order.

The pristine version of every hooked file is saved once under
``.rstorage-orig/`` in the kernel tree; the diffs are always applied to those
pristine copies, so editing a patch and re-running is safe. A file is only
written when its content changes, which keeps kernel rebuilds incremental.
Files copied by an earlier run and since removed from the overlay are deleted,
and hooked files no longer touched by any patch are restored.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the project
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import series  # noqa: E402

STATE = ".rstorage-overlay.json"
ORIG = ".rstorage-orig"


def write_if_changed(path, data):
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return True


def read(path):
    with open(path, "rb") as f:
        return f.read()


def patched_files(diff):
    names = []
    for line in diff.splitlines():
        m = re.match(r"^\+\+\+ b/(\S+)", line)
        if m:
            names.append(m.group(1))
    return names


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: overlay.py PROJECT_DIR KERNEL_SRC")
    project, ksrc = (os.path.abspath(a) for a in sys.argv[1:])
    state_path = os.path.join(ksrc, STATE)
    try:
        state = json.loads(read(state_path))
    except FileNotFoundError:
        state = {"files": [], "hooked": []}

    changed = []

    # New files.
    patches = series.read(project)
    series.check_coverage(project, patches)
    files = series.project_files(project)
    for rel in files:
        dst = os.path.join(ksrc, rel)
        if rel not in state["files"] and os.path.exists(dst):
            sys.exit(f"overlay: {rel} already exists in the kernel tree; "
                     "the overlay only adds new files (use a patch to change one)")
        if write_if_changed(dst, read(os.path.join(project, rel))):
            changed.append(rel)
        mode = os.stat(os.path.join(project, rel)).st_mode & 0o777
        if os.stat(dst).st_mode & 0o777 != mode:
            os.chmod(dst, mode)
    for rel in state["files"]:
        if rel not in files:
            try:
                os.unlink(os.path.join(ksrc, rel))
                changed.append(f"{rel} (removed)")
            except FileNotFoundError:
                pass

    # Hooks.
    hooked = sorted({f for p in patches for f in patched_files(p.diff)})
    for rel in hooked:
        orig = os.path.join(ksrc, ORIG, rel)
        if not os.path.exists(orig):
            os.makedirs(os.path.dirname(orig), exist_ok=True)
            shutil.copyfile(os.path.join(ksrc, rel), orig)
    with tempfile.TemporaryDirectory() as tmp:
        for rel in hooked:
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            shutil.copyfile(os.path.join(ksrc, ORIG, rel), os.path.join(tmp, rel))
        for p in patches:
            if not p.diff:
                continue
            r = subprocess.run(
                ["patch", "-p1", "-s", "--forward", "--no-backup-if-mismatch", "-d", tmp],
                input=p.diff, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"overlay: {p.name} does not apply to this tree:\n"
                         f"{r.stdout}{r.stderr}")
        for rel in hooked:
            if write_if_changed(os.path.join(ksrc, rel), read(os.path.join(tmp, rel))):
                changed.append(rel)
    for rel in state["hooked"]:
        if rel not in hooked:
            shutil.copyfile(os.path.join(ksrc, ORIG, rel), os.path.join(ksrc, rel))
            changed.append(f"{rel} (restored)")

    write_if_changed(state_path, json.dumps({"files": files, "hooked": hooked}, indent=1).encode())
    print(f"[overlay] {len(files)} new file(s), {len(patches)} patch(es); "
          f"{len(changed)} changed in the kernel tree")
    for c in changed:
        print(f"[overlay]   {c}")


if __name__ == "__main__":
    main()
