#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turns benchmark runs (JSON lines) into a reStructuredText table and a plot.

Each run: driver, round, workload, targets, iops, bw_kib, irqs_per_io (None
where interrupts do not apply: the IRQ columns and plot are left out),
cpu_us_per_io (the guest's busy CPU time per I/O, all CPUs; absent in runs
recorded before it was measured: the column is then left out),
target_cmds_per_io and target_drops (a target in the guest: the commands it
served per I/O, retransmissions included, and the requests it dropped; the
columns are left out without them), or
"failed": true for a run that failed (counted in the "Failed runs" column as
driver/baseline, and left out of the ratios of its round). For each (workload,
targets), the baseline is the first driver of the file's "driver" values that
is "c" or starts with "c-" and ran that workload (so a workload that only some
drivers run, polled I/O say, has its own C baseline); for every other driver
that ran it the ratio to the baseline of the same round is taken, and the table gives the median and
minimum of those ratios over the rounds, with the baseline's median absolute
value for scale (TCG emulation: absolute numbers mean little).

Usage: report.py RUNS.jsonl TABLE.inc PLOT.png
"""
import collections
import json
import statistics
import sys


def main():
    runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    by = collections.defaultdict(dict)  # (workload, targets) -> {(driver, round): run}
    failed = collections.Counter()  # (workload, targets, driver) -> failed runs
    drivers = []
    for r in runs:
        if r.get("failed"):
            failed[(r["workload"], r["targets"], r["driver"])] += 1
            by.setdefault((r["workload"], r["targets"]), {})
        else:
            by[(r["workload"], r["targets"])][(r["driver"], r["round"])] = r
        if r["driver"] not in drivers:
            drivers.append(r["driver"])
    is_c = lambda d: d == "c" or d.startswith("c-")
    rows = []
    for (wl, nt), m in sorted(by.items()):
        ran = [d for d in drivers
               if any(k[0] == d for k in m) or failed[(wl, nt, d)]]
        base = next((d for d in ran if is_c(d)), None)
        if base is None:
            continue
        others = [d for d in ran if not is_c(d)]
        rounds = sorted({rnd for (_, rnd) in m})
        b_iops = [m[(base, r)]["iops"] for r in rounds if (base, r) in m]
        b_irq = [m[(base, r)]["irqs_per_io"] for r in rounds
                 if (base, r) in m and m[(base, r)]["irqs_per_io"] is not None]
        b_tc = [m[(base, r)]["target_cmds_per_io"] for r in rounds
                if (base, r) in m and m[(base, r)].get("target_cmds_per_io") is not None]
        drops = lambda d: sum(m[(d, r)].get("target_drops", 0) for r in rounds if (d, r) in m)
        for d in others:
            ri, rq, rc = [], [], []
            tc = [m[(d, r)]["target_cmds_per_io"] for r in rounds
                  if (d, r) in m and m[(d, r)].get("target_cmds_per_io") is not None]
            for r in rounds:
                if (base, r) in m and (d, r) in m:
                    ri.append(m[(d, r)]["iops"] / m[(base, r)]["iops"])
                    if m[(base, r)].get("cpu_us_per_io") and m[(d, r)].get("cpu_us_per_io"):
                        rc.append(m[(d, r)]["cpu_us_per_io"] / m[(base, r)]["cpu_us_per_io"])
                    if m[(base, r)]["irqs_per_io"]:
                        rq.append(m[(d, r)]["irqs_per_io"] / m[(base, r)]["irqs_per_io"])
            nf, bf = failed[(wl, nt, d)], failed[(wl, nt, base)]
            if not ri and not nf and not bf:
                continue
            nan = float("nan")
            rows.append({
                "workload": wl, "targets": nt, "driver": d, "base": base, "n": len(ri),
                "failed": f"{nf}/{bf}",
                "base_iops": statistics.median(b_iops) if b_iops else nan,
                "base_irq": statistics.median(b_irq) if b_irq else 0,
                "iops_med": statistics.median(ri) if ri else nan, "iops_min": min(ri) if ri else nan,
                "irq_med": statistics.median(rq) if rq else float("nan"),
                "irq_min": min(rq) if rq else float("nan"),
                "cpu_med": statistics.median(rc) if rc else nan,
                "base_tc": statistics.median(b_tc) if b_tc else nan,
                "tc_med": statistics.median(tc) if tc else nan,
                "drops": f"{drops(d)}/{drops(base)}",
            })
    irq = any(r.get("irqs_per_io") is not None for r in runs)
    cpu = any(r.get("cpu_us_per_io") is not None for r in runs)
    tgt = any(r.get("target_cmds_per_io") is not None for r in runs)
    if not rows:
        sys.exit("report.py: no runs to compare")
    write_table(rows, sys.argv[2], irq, cpu, tgt)
    plot(rows, sys.argv[3], irq)


def write_table(rows, path, irq, cpu, tgt=False):
    head = ["Workload", "Targets", "Driver", "Baseline", "Rounds", "Failed runs",
            "Baseline IOPS (median)", "IOPS ratio median", "IOPS ratio min"]
    if irq:
        head += ["Baseline IRQ/IO", "IRQ/IO ratio median", "IRQ/IO ratio min"]
    if cpu:
        head += ["CPU time/IO ratio median"]
    if tgt:
        head += ["Baseline target cmds/IO", "Target cmds/IO median", "Target drops"]
    num = lambda x, f: "-" if x != x else format(x, f)  # NaN: no sample
    body = [[r["workload"], str(r["targets"]), r["driver"], r["base"], str(r["n"]), r["failed"],
             num(r["base_iops"], ".0f"), num(r["iops_med"], ".3f"), num(r["iops_min"], ".3f")]
            + ([num(r["base_irq"], ".3f"), num(r["irq_med"], ".3f"), num(r["irq_min"], ".3f")] if irq else [])
            + ([num(r["cpu_med"], ".3f")] if cpu else [])
            + ([num(r["base_tc"], ".2f"), num(r["tc_med"], ".2f"), r["drops"]] if tgt else [])
            for r in rows]
    w = [max(len(x) for x in col) for col in zip(head, *body)]
    line = " ".join("=" * n for n in w)
    fmt = lambda cells: " ".join(c.ljust(n) for c, n in zip(cells, w)).rstrip()
    with open(path, "w") as f:
        f.write(".. Generated by tools/testing/rstorage/bench/report.py; do not edit.\n\n")
        f.write("\n".join([line, fmt(head), line] + [fmt(b) for b in body] + [line]) + "\n")
        f.write("\nRounds: the rounds in which both runs succeeded (the ratios' sample). "
                "Failed runs: the driver's / the baseline's runs that failed (a failed run is "
                "no sample; see the raw runs).\n")
        if cpu:
            f.write("\nCPU time/IO: the guest's busy CPU time (all CPUs, /proc/stat) over the "
                    "I/Os the disks completed during the run, as a ratio to the baseline's.\n")
        if tgt:
            f.write("\nTarget cmds/IO: the ATA commands the target served (one per frame, "
                    "retransmissions included) per I/O the disks completed, median over the "
                    "rounds (absolute, not a ratio). Target drops: requests the target dropped "
                    "in all rounds, driver/baseline.\n")


def plot(rows, path, irq):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    drivers = sorted({r["driver"] for r in rows})
    configs = sorted({(r["workload"], r["targets"]) for r in rows})
    fig, axes = plt.subplots(1, 2 if irq else 1, figsize=(11 if irq else 6, 4), squeeze=False)
    axes = axes[0]
    width = 0.8 / max(1, len(drivers))
    panels = [(axes[0], "iops", "IOPS vs C (median, min)")]
    if irq:
        panels.append((axes[1], "irq", "interrupts per I/O vs C (median, min)"))
    for ax, key, title in panels:
        for i, d in enumerate(drivers):
            xs, med, lo = [], [], []
            for j, c in enumerate(configs):
                r = next((r for r in rows if (r["workload"], r["targets"]) == c and r["driver"] == d), None)
                if r:
                    xs.append(j + i * width)
                    med.append(r[f"{key}_med"])
                    lo.append(r[f"{key}_med"] - r[f"{key}_min"])
            ax.bar(xs, med, width, yerr=[lo, [0] * len(lo)], capsize=3, label=d)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([j + width * (len(drivers) - 1) / 2 for j in range(len(configs))])
        ax.set_xticklabels([f"{w}\n{t} target{'s' if t > 1 else ''}" for w, t in configs], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
