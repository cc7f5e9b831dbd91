#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Read blktests' ./check output of the devices blktests.sh ran it on.

Each input is one run, KIND-DRIVER.log (KIND vscsi, aoe or iser; DRIVER rust
or c). A case's line is "GROUP/NNN => DEV (description) [passed|failed|not
run]", the reasons of a case that did not run follow it, indented.

Usage: blktests-report.py OUT_DIR [--results] [--table FILE]
  --results  prints one STATUS:NAME per case of our drivers, for ktap.py
             --result (not run counts as a skip, with its reason)
  --table    writes the case x device table (reStructuredText) to FILE
Exits 1 when a case that passed on a C driver's device did not pass on ours.
"""

import argparse
import glob
import os
import re
import sys

CASE = re.compile(r"^(\w+/\d+)(?: => \S+)?\s+\((.*)\)\s+\[(passed|failed|not run)\]")
# A whole group that does not run on the device ("scsi/*** => DEV [not run]").
GROUP = re.compile(r"^(\w+)/\*\*\*(?: => \S+)?\s+\[not run\]")
KINDS = {"vscsi": ("rvirtio_scsi", "virtio_scsi"), "aoe": ("raoe", "aoe"), "iser": ("risert", "ib_isert")}


def parse(path):
    """{case: (status, description, reason)} of one run; {} when it did not run."""
    cases, last = {}, None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = CASE.match(line)
            if m:
                last = m.group(1)
                cases[last] = [m.group(3), m.group(2), ""]
                continue
            m = GROUP.match(line)
            if m:
                last = m.group(1) + "/***"
                cases[last] = ["not run", "", ""]
                continue
            if last and line.startswith("    ") and cases[last][0] == "not run" and line.strip():
                r = line.strip()
                cases[last][2] = f"{cases[last][2]}; {r}" if cases[last][2] else r
    return {k: tuple(v) for k, v in cases.items()}


def result(cases, case, missing):
    """A case's (status, description, reason), or its group's when the
    whole group did not run, or `missing`."""
    if case in cases:
        return cases[case]
    return cases.get(case.split("/")[0] + "/***", missing)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--results", action="store_true")
    ap.add_argument("--table")
    a = ap.parse_args()

    with open(os.path.join(a.out, "cases")) as f:
        wanted = [l.strip() for l in f if l.strip()]
    excluded = {}
    try:
        with open(os.path.join(a.out, "exclude")) as f:
            for l in f:
                # "CASE reason" or "CASE@KIND-DRV[,KIND-DRV...] reason"
                spec, _, why = l.strip().partition(" ")
                case, _, only = spec.partition("@")
                if case:
                    excluded[case] = (set(only.split(",")) if only else None, why)
    except FileNotFoundError:
        pass
    runs = {}
    for path in sorted(glob.glob(os.path.join(a.out, "*-*.log"))):
        kind, drv = os.path.basename(path)[:-4].split("-", 1)
        if kind in KINDS and drv in ("rust", "c"):
            runs[(kind, drv)] = parse(path)
            for case, (only, why) in excluded.items():
                if only is None or f"{kind}-{drv}" in only:
                    runs[(kind, drv)].setdefault(case, ("not run", "", why))

    bad = []
    for (kind, drv), cases in sorted(runs.items()):
        name = KINDS[kind][0 if drv == "rust" else 1]
        for case in wanted:
            status, _, reason = result(cases, case, ("failed", "", "no result: the run did not reach it"))
            if drv == "rust" and a.results:
                s = {"passed": "ok", "failed": "fail", "not run": "skip"}[status]
                print(f"{s}:blktests/{name}/{case}" + (f" ({reason})" if reason else ""))
            if drv == "c" and status == "passed":
                ours = result(runs.get((kind, "rust"), {}), case, ("failed",))[0]
                if ours != "passed":
                    bad.append(f"{case}: passes on {name}, {ours} on {KINDS[kind][0]}")

    if a.table:
        cols = [(k, d) for k in KINDS for d in ("rust", "c") if (k, d) in runs]
        head = ["Case"] + [KINDS[k][0 if d == "rust" else 1] for k, d in cols]
        rows, reasons = [], {}
        for case in wanted:
            row = [case]
            for col in cols:
                status, _, reason = result(runs[col], case, ("failed", "", "no result"))
                cell = {"passed": "pass", "failed": "FAIL", "not run": "not run"}[status]
                if status == "not run":
                    key = reason or "no reason given"
                    n = reasons.setdefault(key, len(reasons) + 1)
                    cell += f" [{n}]"
                row.append(cell)
            rows.append(row)
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        rule = " ".join("=" * w for w in widths)
        lines = [".. Generated by tools/testing/rstorage/blktests-report.py; do not edit.", "", rule,
                 " ".join(h.ljust(w) for h, w in zip(head, widths)), rule]
        lines += [" ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines += [rule, "", "Why a case did not run:", ""]
        lines += [f"- [{n}] {r}" for r, n in sorted(reasons.items(), key=lambda x: x[1])]
        with open(a.table, "w") as f:
            f.write("\n".join(lines) + "\n")
    for b in bad:
        print(f"# REGRESSION {b}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
