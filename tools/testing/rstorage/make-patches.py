#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Write the project as a git format-patch series on pristine Linux 7.3.

Usage: make-patches.py PROJECT_DIR KERNEL_SRC WORK_DIR OUT_DIR

The series is ``tools/testing/rstorage/patches/series`` (see ``series.py``),
the same description that ``overlay.py`` applies to the kernel the tests
build. Each patch is committed on a pristine tree, in order, with its message,
its changes to existing files and the project files it adds, and signed off;
``git format-patch`` then writes the series and a cover letter
(``patches/cover-letter``) into OUT_DIR.

The pristine tree is the Debian source package's tarball when ``make source``
fetched it (``build/apt/deb``); for a KERNEL_SRC given with KDIR=, it is that
tree with the overlay taken back out (its added files removed, its hooked files
restored from ``.rstorage-orig/``). It is committed once into WORK_DIR (a git
repository, tag ``v7.3``) and reused.

The author and sign-off are ``RSTORAGE_AUTHOR`` ("Name <email>") if set, else
git's configured identity (``user.name``, ``user.email``), else the project's
list.

With ``--verify``, the series is then applied with ``git am`` to a new
worktree of the pristine tree, which must succeed and give the same tree.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the project
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import series  # noqa: E402

DEFAULT_AUTHOR = ("rstorage developers", "rstorage-devel@lists.example.org")
BASE_TAG = "v7.3"


def say(msg):
    print(f"[patches] {msg}", flush=True)


def run(*cmd, cwd=None, env=None, capture=False):
    r = subprocess.run(cmd, cwd=cwd, env=env, text=True,
                       stdout=subprocess.PIPE if capture else None)
    if r.returncode != 0:
        sys.exit(f"make-patches: {' '.join(cmd)} failed ({r.returncode})")
    return r.stdout if capture else None


def author():
    env = os.environ.get("RSTORAGE_AUTHOR", "")
    if "<" in env and env.endswith(">"):
        n, e = env[:-1].split("<", 1)
        return n.strip(), e.strip()

    def cfg(key):
        r = subprocess.run(["git", "config", "--global", key], capture_output=True, text=True)
        return r.stdout.strip()
    name, email = cfg("user.name"), cfg("user.email")
    if name and email:
        return name, email
    return DEFAULT_AUTHOR


def pristine_tree(ksrc, dest):
    """Fill ``dest`` with pristine Linux 7.3; return a description of it."""
    debs = sorted(glob.glob(os.path.join(os.path.dirname(ksrc), "apt", "deb", "linux-source-7.3_*.deb")))
    if debs:
        deb = debs[-1]
        say(f"unpacking the pristine source from {os.path.basename(deb)}")
        with tempfile.TemporaryDirectory(dir=os.path.dirname(dest)) as tmp:
            run("dpkg-deb", "-x", deb, tmp)
            tarball = glob.glob(os.path.join(tmp, "usr/src/linux-source-7.3*.tar.xz"))[0]
            os.makedirs(dest)
            run("tar", "-xJf", tarball, "-C", dest, "--strip-components=1")
        return os.path.basename(deb)[:-len(".deb")]
    # A tree given with KDIR=: take the overlay back out.
    state_path = os.path.join(ksrc, ".rstorage-overlay.json")
    if not os.path.exists(state_path):
        sys.exit(f"make-patches: {ksrc} has no overlay state; run make source (or a build) first")
    with open(state_path) as f:
        state = json.load(f)
    say(f"copying {ksrc} without the overlay")
    skip = set(state["files"])
    os.makedirs(dest)
    run("rsync", "-a", "--exclude=/.rstorage-*", "--exclude=/.git", "--exclude=*.o", f"{ksrc}/", f"{dest}/")
    for rel in skip:
        try:
            os.unlink(os.path.join(dest, rel))
        except FileNotFoundError:
            pass
    for rel in state["hooked"]:
        shutil.copyfile(os.path.join(ksrc, ".rstorage-orig", rel), os.path.join(dest, rel))
    return f"{os.path.basename(ksrc)} without the overlay"


def git_env(name, email):
    env = dict(os.environ)
    env.update(GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email,
               GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email,
               GIT_AUTHOR_DATE="2026-12-01T00:00:00Z", GIT_COMMITTER_DATE="2026-12-01T00:00:00Z")
    return env


def base_repo(ksrc, work):
    """The pristine tree as a git repository at WORK_DIR, tag v7.3."""
    if os.path.isdir(os.path.join(work, ".git")):
        r = subprocess.run(["git", "-C", work, "rev-parse", "-q", "--verify", f"refs/tags/{BASE_TAG}"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return
    shutil.rmtree(work, ignore_errors=True)
    what = pristine_tree(ksrc, work)
    say("committing the pristine tree (once)")
    env = git_env("Linux 7.3", "pristine@localhost")
    run("git", "init", "-q", cwd=work)
    run("git", "config", "core.autocrlf", "false", cwd=work)
    run("git", "add", "-A", "-f", ".", cwd=work)
    run("git", "commit", "-q", "-m", f"Linux 7.3 ({what})", cwd=work, env=env)
    run("git", "tag", BASE_TAG, cwd=work)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    verify = "--verify" in sys.argv
    if len(args) != 4:
        sys.exit("usage: make-patches.py [--verify] PROJECT_DIR KERNEL_SRC WORK_DIR OUT_DIR")
    project, ksrc, work, out = (os.path.abspath(a) for a in args)
    patches = series.read(project)
    added = series.check_coverage(project, patches)
    base_repo(ksrc, work)

    name, email = author()
    env = git_env(name, email)
    run("git", "checkout", "-q", "-f", "-B", "rstorage", BASE_TAG, cwd=work)
    run("git", "clean", "-q", "-fdx", cwd=work)
    for p in patches:
        if p.diff:
            with tempfile.NamedTemporaryFile("w", suffix=".diff") as d:
                d.write(p.diff)
                d.flush()
                run("git", "apply", "--index", "--whitespace=error-all", d.name, cwd=work)
        for rel in added[p.name]:
            dst = os.path.join(work, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(project, rel), dst)
            run("git", "add", "-f", rel, cwd=work)
        with tempfile.NamedTemporaryFile("w", suffix=".msg") as m:
            m.write(p.message)
            m.flush()
            run("git", "commit", "-q", "-s", "--allow-empty", "-F", m.name, cwd=work, env=env)

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    run("git", "format-patch", "-q", "--cover-letter", f"--base={BASE_TAG}", "-o", out,
        f"{BASE_TAG}..rstorage", cwd=work, env=env)
    cover = sorted(glob.glob(os.path.join(out, "0000-*.patch")))[0]
    with open(os.path.join(project, series.PATCH_DIR, "cover-letter"), encoding="utf-8") as f:
        subject, _, blurb = f.read().partition("\n\n")
    with open(cover, encoding="utf-8") as f:
        text = f.read()
    text = text.replace("*** SUBJECT HERE ***", subject.strip()).replace(
        "*** BLURB HERE ***", blurb.strip())
    with open(cover, "w", encoding="utf-8") as f:
        f.write(text)
    say(f"{len(patches)} patches and a cover letter in {out} (signed off by {name} <{email}>)")

    if verify:
        wt = os.path.join(os.path.dirname(work), "patches-am")
        run("git", "worktree", "prune", cwd=work)
        shutil.rmtree(wt, ignore_errors=True)
        run("git", "worktree", "add", "-q", "--detach", wt, BASE_TAG, cwd=work)
        mails = sorted(glob.glob(os.path.join(out, "0*.patch")))[1:]
        run("git", "am", "-q", "--whitespace=error-all", *mails, cwd=wt, env=env)
        diff = run("git", "diff", "--stat", "HEAD", "rstorage", cwd=wt, capture=True)
        run("git", "worktree", "remove", "--force", wt, cwd=work)
        if diff.strip():
            sys.exit(f"make-patches: git am gave another tree:\n{diff}")
        say(f"git am of the series on {BASE_TAG}: applies, same tree")


if __name__ == "__main__":
    main()
