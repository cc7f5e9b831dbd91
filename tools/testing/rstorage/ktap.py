#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Summarise KTAP documents: count the leaf test cases.

A KTAP result line at indent d is a parent when result lines deeper than d
appeared since the previous result at depth d or shallower; otherwise it is a
leaf. Only leaves are counted, so nested KUnit suites and kselftest programs
count their cases, not themselves. A parent that failed without any failing
leaf beneath it (a program that died half-way) counts as one failure, and so
does a plan ("1..N") whose level did not report exactly N results.

Output of the kernel's kselftest runner (run_kselftest.sh) is read the same
way: there a program's own lines carry one "# " per level instead of an
indent, and "# selftests: DIR: PROGRAM" opens the program's subtest.

Usage: ktap.py [--result STATUS:NAME ...] FILE...
       ktap.py --progress [-]
  --result adds a result computed elsewhere (STATUS is ok, fail or skip).
  --progress reads a run's output as it is produced (standard input) and
  prints one line per case as it completes, with the reason of a failure or
  skip (its directive, or the last diagnostic line before it).
Prints the failed and skipped cases, then "N passed, N failed[, N skipped]";
exits 1 when anything failed or nothing ran.
"""

import argparse
import re
import sys

RESULT = re.compile(r"^(\s*)(ok|not ok)\s+\d+\s*(?:-\s*)?([^#]*?)\s*(?:#\s*(.*))?$")
SUBTEST = re.compile(r"^(\s*)#\s*Subtest:\s*(\S+)")
PLAN = re.compile(r"^(\s*)1\.\.(\d+)\s*$")
SKIP_ALL = re.compile(r"^(\s*)1\.\.0\s*#\s*SKIP\s*(.*)$")
DIAG = re.compile(r"^(\s*)#\s*(.*)$")
# kselftest runner: the header of one program, and what a "# "-prefixed line
# must look like to be KTAP structure rather than a diagnostic.
RUNNER_HEADER = re.compile(r"^# selftests: \S+: (\S+)\s*$")
STRUCTURE = re.compile(r"^\s*(ok |not ok |1\.\.\d|K?TAP version|# Subtest:)")


def program(name):
    """A kselftest program's name without the runner's decoration."""
    m = re.match(r"^selftests: \S+: (\S+?)(?:\.sh)?$", name)
    return m.group(1) if m else name


def unprefix(line):
    """Turns the kselftest runner's "# " nesting into KTAP indentation."""
    m = RUNNER_HEADER.match(line)
    if m:
        return "# Subtest: " + m.group(1).removesuffix(".sh")
    if not line.startswith("# "):
        return line
    rest, depth = line, 0
    while rest.startswith("# "):
        rest, depth = rest[2:], depth + 1
        if STRUCTURE.match(rest) or rest.startswith("#"):
            return " " * (4 * depth) + rest
    # A program's plain output: a diagnostic at its level.
    return " " * (4 * (depth - 1)) + "# " + rest


def parse(lines, source):
    """Yields (status, name, reason) for every leaf; status is ok, fail or
    skip; reason is the directive or the last diagnostic before the result."""
    deeper = {}  # indent -> results deeper than it were seen since its last result
    failed_below = {}  # indent -> a failing leaf was seen deeper
    names = {}  # indent -> name of the subtest opened at that indent
    plans = {}  # indent -> [planned, seen, name] of the plan at that indent

    def close_plans(deeper_than):
        for k in sorted(plans):
            if k > deeper_than:
                planned, seen, name = plans.pop(k)
                if planned != seen:
                    yield "fail", f"{name} (plan of {planned} cases, {seen} ran)", ""

    diag = {}  # indent -> last diagnostic line at that indent
    for line in lines:
        line = unprefix(line.rstrip("\n").expandtabs(4))
        m = SUBTEST.match(line)
        if m:
            names[len(m.group(1))] = m.group(2)
            continue
        m = SKIP_ALL.match(line)
        if m:
            # A program that skipped everything: the reason of its own result.
            diag[max(0, len(m.group(1)) - 4)] = m.group(2)
            continue
        m = PLAN.match(line)
        if m:
            d = len(m.group(1))
            yield from close_plans(d - 1)
            path = [names[k] for k in sorted(names) if k <= d]
            plans[d] = [int(m.group(2)), 0, "/".join([source] + [p for p in path if p])]
            continue
        m = RESULT.match(line)
        if not m:
            m = DIAG.match(line)
            if m and m.group(2):
                diag[len(m.group(1))] = m.group(2)
            continue
        d = len(m.group(1))
        reason = diag.pop(d, "")
        yield from close_plans(d)
        if d in plans:
            plans[d][1] += 1
        ok = m.group(2) == "ok"
        directive = (m.group(4) or "").strip()
        skip = directive.upper().startswith("SKIP")
        path = [names[k] for k in sorted(names) if k <= d]
        name = "/".join([source] + [p for p in path if p] + [program(m.group(3))])
        if deeper.get(d):
            if not ok and not failed_below.get(d):
                yield "fail", f"{name} ({directive or 'failed with no failing case'})", reason
        else:
            status = "skip" if skip else ("ok" if ok else "fail")
            if skip and directive[4:].strip():
                reason = directive[4:].strip()
            elif directive and not skip:
                reason = directive
            yield status, name + (f" ({directive})" if directive and not ok else ""), reason
            if status == "fail":
                for k in range(d):
                    failed_below[k] = True
        for k in list(deeper):
            if k > d:
                deeper[k] = False
        for k in list(failed_below):
            if k >= d:
                failed_below[k] = False
        for k in list(names):
            if k > d:
                del names[k]
        for k in range(d):
            deeper[k] = True
        deeper[d] = False
    yield from close_plans(-1)


# The start of a kernel message that the console cut off when a test's line
# came through in the middle of it ("[   4# ok 8 ..."): the test's line is
# what follows.
CUT_TIMESTAMP = re.compile(r"^\[\s*[\d.]*(?=# )")


def progress(source):
    """Prints each case of standard input's run as it completes. The input
    is the VM's console, where kernel messages share the line discipline
    with the tests' output (the counted results come from the TAP file)."""
    lines = (CUT_TIMESTAMP.sub("", line) for line in sys.stdin)
    for status, name, reason in parse(lines, source):
        word = {"ok": "ok", "fail": "not ok", "skip": "ok"}[status]
        note = f" # SKIP {reason}" if status == "skip" else (f" # {reason}" if status == "fail" and reason else "")
        note = note.rstrip()
        print(f"  {word} {name.split('/', 1)[-1]}{note}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--result", action="append", default=[], metavar="STATUS:NAME")
    ap.add_argument("--quiet", action="store_true", help="print only the closing line")
    ap.add_argument("--progress", action="store_true", help="follow a run on standard input")
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    if a.progress:
        progress("run")
        return

    results = []
    for f in a.files:
        try:
            with open(f, errors="replace") as fh:
                results += parse(fh, f.rsplit("/", 1)[-1].removesuffix(".ktap"))
        except FileNotFoundError:
            results.append(("fail", f"{f} (no KTAP output)", ""))
    for r in a.result:
        status, _, name = r.partition(":")
        results.append((status, name, ""))

    n = {"ok": 0, "fail": 0, "skip": 0}
    for status, name, reason in results:
        n[status] += 1
        if not a.quiet and status != "ok":
            why = f" # {reason}" if status == "skip" and reason else ""
            print(f"  {'FAIL' if status == 'fail' else 'SKIP'}  {name}{why}")
    line = f"{n['ok']} passed, {n['fail']} failed"
    if n["skip"]:
        line += f", {n['skip']} skipped"
    print(line)
    sys.exit(1 if n["fail"] or not results else 0)


if __name__ == "__main__":
    main()
