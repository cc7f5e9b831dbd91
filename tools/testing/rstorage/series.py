# SPDX-License-Identifier: GPL-2.0
"""The patch series: the one description of what the project adds to Linux.

``tools/testing/rstorage/patches/series`` lists the series in order, one patch
per line::

    0014-rust-net-add-NetDevice-and-SkBuff.patch rust/kernel/net/netdevice.rs rust/helpers/net/

The first word names a file of that directory: the patch's commit message
(subject line, blank line, body), a line ``---``, then its changes to files
that the kernel already has, as a unified diff (possibly empty). The other
words are the project's own files that the patch adds to the kernel tree, each
at the same path; a path ending in ``/`` stands for every file under it.

Two programs read it:

* ``overlay.py`` copies every added file into a kernel tree and applies every
  diff, in series order: the kernel that ``make run`` and ``make check`` build
  is the whole series applied;
* ``make-patches.py`` commits the patches one by one on a pristine tree and
  writes them with ``git format-patch`` (``make patches``).

Every file of the project's kernel-tree directories must be added by exactly
one patch (``check_coverage``), so that neither program can miss one.
"""

import os

# Project directories whose files are new files of the kernel tree.
NEW_FILE_DIRS = ("rust", "drivers", "samples", "tools/testing/selftests/drivers/rstorage")
# Files of those directories that belong to the out-of-tree build only.
OUT_OF_TREE_ONLY = ("drivers/Kbuild", "samples/rust/Kbuild")
PATCH_DIR = "tools/testing/rstorage/patches"


class Patch:
    """One line of the series file."""

    def __init__(self, path, adds):
        self.path = path
        self.name = os.path.basename(path)
        self.adds = adds
        with open(path, encoding="utf-8") as f:
            text = f.read()
        head, sep, diff = text.partition("\n---\n")
        if not sep:
            raise SystemExit(f"series: {self.name} has no '---' line after its message")
        self.message = head.strip() + "\n"
        self.subject = self.message.splitlines()[0]
        self.diff = diff if diff.strip() else ""


def project_files(project):
    """Every project file that the series must add, sorted."""
    files = []
    for top in NEW_FILE_DIRS:
        for root, _, names in os.walk(os.path.join(project, top)):
            for n in names:
                rel = os.path.relpath(os.path.join(root, n), project)
                if rel not in OUT_OF_TREE_ONLY and "__pycache__" not in rel:
                    files.append(rel)
    return sorted(files)


def read(project):
    """The series of ``project``, in order."""
    patch_dir = os.path.join(project, PATCH_DIR)
    patches = []
    with open(os.path.join(patch_dir, "series"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if line:
                patches.append(Patch(os.path.join(patch_dir, line[0]), line[1:]))
    return patches


def files_added(project, patch, all_files):
    """The project files that ``patch`` adds, sorted."""
    out = []
    for a in patch.adds:
        if a.endswith("/"):
            got = [f for f in all_files if f.startswith(a)]
        else:
            got = [a] if a in all_files else []
        if not got:
            raise SystemExit(f"series: {patch.name} adds {a}, which the project does not have")
        out.extend(got)
    return sorted(out)


def check_coverage(project, patches):
    """Map each patch name to its added files; every project file exactly once."""
    all_files = project_files(project)
    owner = {}
    added = {}
    for p in patches:
        added[p.name] = files_added(project, p, all_files)
        for f in added[p.name]:
            if f in owner:
                raise SystemExit(f"series: {f} is added by both {owner[f]} and {p.name}")
            owner[f] = p.name
    missing = [f for f in all_files if f not in owner]
    if missing:
        raise SystemExit("series: no patch adds " + ", ".join(missing) +
                         f" (list it in {PATCH_DIR}/series)")
    return added
