#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Summarise KTAP documents: count the leaf test cases.

A KTAP result line at indent d is a parent when result lines deeper than d
appeared since the previous result at depth d or shallower; otherwise it is a
leaf. Only leaves are counted, so nested KUnit suites and kselftest programs
count their cases, not themselves. A parent that failed without any failing
leaf beneath it (a program that died half-way) counts as one failure, and so
does a plan ("1..N") whose level did not report exactly N results.

Usage: ktap.py [--result STATUS:NAME ...] FILE...
  --result adds a result computed elsewhere (STATUS is ok, fail or skip).
Prints the failed and skipped cases, then "N passed, N failed[, N skipped]";
exits 1 when anything failed or nothing ran.
"""

import argparse
import re
import sys

RESULT = re.compile(r"^(\s*)(ok|not ok)\s+\d+\s*(?:-\s*)?([^#]*?)\s*(?:#\s*(.*))?$")
SUBTEST = re.compile(r"^(\s*)#\s*Subtest:\s*(\S+)")
PLAN = re.compile(r"^(\s*)1\.\.(\d+)\s*$")


def parse(lines, source):
    """Yields (status, name) for every leaf; status is ok, fail or skip."""
    deeper = {}  # indent -> results deeper than it were seen since its last result
    failed_below = {}  # indent -> a failing leaf was seen deeper
    names = {}  # indent -> name of the subtest opened at that indent
    plans = {}  # indent -> [planned, seen, name] of the plan at that indent

    def close_plans(deeper_than):
        for k in sorted(plans):
            if k > deeper_than:
                planned, seen, name = plans.pop(k)
                if planned != seen:
                    yield "fail", f"{name} (plan of {planned} cases, {seen} ran)"

    for line in lines:
        line = line.rstrip("\n").expandtabs(4)
        m = SUBTEST.match(line)
        if m:
            names[len(m.group(1))] = m.group(2)
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
            continue
        d = len(m.group(1))
        yield from close_plans(d)
        if d in plans:
            plans[d][1] += 1
        ok = m.group(2) == "ok"
        directive = (m.group(4) or "").strip()
        skip = directive.upper().startswith("SKIP")
        path = [names[k] for k in sorted(names) if k <= d]
        name = "/".join([source] + [p for p in path if p] + [m.group(3)])
        if deeper.get(d):
            if not ok and not failed_below.get(d):
                yield "fail", f"{name} ({directive or 'failed with no failing case'})"
        else:
            status = "skip" if skip else ("ok" if ok else "fail")
            yield status, name + (f" ({directive})" if directive and not ok else "")
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--result", action="append", default=[], metavar="STATUS:NAME")
    ap.add_argument("--quiet", action="store_true", help="print only the closing line")
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()

    results = []
    for f in a.files:
        try:
            with open(f, errors="replace") as fh:
                results += parse(fh, f.rsplit("/", 1)[-1].removesuffix(".ktap"))
        except FileNotFoundError:
            results.append(("fail", f"{f} (no KTAP output)"))
    for r in a.result:
        status, _, name = r.partition(":")
        results.append((status, name))

    n = {"ok": 0, "fail": 0, "skip": 0}
    for status, name in results:
        n[status] += 1
        if not a.quiet and status != "ok":
            print(f"  {'FAIL' if status == 'fail' else 'SKIP'}  {name}")
    line = f"{n['ok']} passed, {n['fail']} failed"
    if n["skip"]:
        line += f", {n['skip']} skipped"
    print(line)
    sys.exit(1 if n["fail"] or not results else 0)


if __name__ == "__main__":
    main()
