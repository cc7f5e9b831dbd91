#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Check that the KUnit cases of kernel::completion_batch can fail.

The helper and its KUnit suite are compiled for the host (shim.rs stands in
for the two kernel-crate modules it uses) and run as ordinary Rust tests:
first unchanged, where every case must pass, then once per mutation below, a
deliberate bug of the kind the named case exists to catch, where that case
must fail. Prints one KTAP line per check; exits non-zero if any check fails.

Usage: mutants.py PROJECT_DIR [RUSTC]
"""

import os
import subprocess
import sys
import tempfile

# (case that must fail, what the bug is, text replaced, replacement)
MUTANTS = [
    ("budget_is_respected", "a pass may take one more than its budget",
     "let want = s.chunk(run.left);\n            let n = s.take(want);\n            run.took(n);\n            if n == want {",
     "let want = s.chunk(run.left);\n            let n = s.take(want + 1);\n            run.took(n.min(want));\n            if n >= want {"),
    ("one_lock_hold_per_pass", "completions handled locked are still taken 32 per lock hold",
     "            None => left,\n",
     "            None => left.min(COLLECT),\n"),
    ("reschedule_exactly_when_completions_remain", "a spent budget never asks whether more is queued",
     "                if s.q.pending() {\n                    t.budget_exhausted += 1;\n                    return Step::Done(Pass::Reschedule);",
     "                if true {\n                    t.budget_exhausted += 1;\n                    return Step::Done(Pass::Reschedule);"),
    ("race_before_rearm_is_caught", "no look after a re-arm that could not tell",
     "            if armed == Armed::Quiet {\n                return Step::Done(Pass::Armed);\n            }\n            if run.left == 0 {",
     "            if armed != Armed::MaybeMissed {\n                return Step::Done(Pass::Armed);\n            }\n            if run.left == 0 {"),
    ("post_arm_poll_only_where_it_can_find_something", "a look after every re-arm, even a quiet one",
     "            if armed == Armed::Quiet {\n                return Step::Done(Pass::Armed);\n            }\n            if run.left == 0 {",
     "            if false {\n                return Step::Done(Pass::Armed);\n            }\n            if run.left == 0 {"),
    ("missed_but_not_yet_visible_reschedules", "a reported miss with nothing visible ends the pass armed",
     "                    Armed::MaybeMissed => Pass::Reschedule,",
     "                    Armed::MaybeMissed => Pass::Armed,"),
    ("budget_zero_is_one", "budget 0 is kept as 0",
     "            budget: config.budget.max(1),",
     "            budget: config.budget,"),
    ("concurrent_run_is_deferred_not_lost", "no hand-over to a deferred run",
     "            Pass::Armed if rerun => Pass::Reschedule,",
     "            Pass::Armed if rerun && false => Pass::Reschedule,"),
    ("poll_is_deferred_while_a_pass_runs", "a busy-polling pass does not check for a running pass",
     "        if !self.enter() {\n            return Pass::Deferred;\n        }\n        let mut t = Tally::default();\n        let pass = self.pass(source, &mut t, Some(now.as_nanos()));",
     "        self.enter();\n        let mut t = Tally::default();\n        let pass = self.pass(source, &mut t, Some(now.as_nanos()));"),
    ("hand_over_keeps_a_joined_source_polling", "the hand-over forgets a source that joined the polling set",
     "            Pass::Armed if rerun && old & POLLING != 0 => Pass::Polling,\n",
     ""),
    ("idle_source_leaves_and_rejoins_polling", "no final poll after leaving the polling set",
     "        t.post_arm_polls += 1;\n        let caught = s.take(s.chunk(run.left));",
     "        t.post_arm_polls += 1;\n        let caught = 0;"),
]


def build_and_run(tmp, source, rustc):
    with open(os.path.join(tmp, "completion_batch.rs"), "w") as f:
        f.write(source)
    binary = os.path.join(tmp, "tests")
    r = subprocess.run([rustc, "--edition", "2021", "--test", "-O", "--cap-lints", "allow",
                        "-o", binary, os.path.join(tmp, "shim.rs")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr
    r = subprocess.run([binary, "--test-threads=1"], capture_output=True, text=True, timeout=300)
    failed = set()
    for line in r.stdout.splitlines():
        # "test completion_batch::tests::NAME ... FAILED"
        if line.startswith("test ") and line.endswith("FAILED"):
            failed.add(line.split()[1].rsplit("::", 1)[-1])
    return failed, r.stdout


def main():
    project = sys.argv[1]
    rustc = sys.argv[2] if len(sys.argv) > 2 else "rustc"
    here = os.path.join(project, "tools/testing/rstorage/batch-host")
    with open(os.path.join(project, "rust/kernel/completion_batch.rs")) as f:
        pristine = f.read()
    marker = "#[macros::kunit_tests(rust_completion_batch)]"
    if marker not in pristine:
        print("not ok 1 completion_batch host build: KUnit marker not found")
        return 1
    pristine = pristine.replace(marker, "#[cfg(test)]")
    print("KTAP version 1")
    print(f"1..{len(MUTANTS) + 1}")
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(here, "shim.rs")) as f, open(os.path.join(tmp, "shim.rs"), "w") as g:
            g.write(f.read())
        failed, out = build_and_run(tmp, pristine, rustc)
        if failed is None or failed or "test result: ok" not in out:
            bad += 1
            print("# " + "\n# ".join(out.splitlines()[-20:]))
            print("not ok 1 completion_batch KUnit cases pass on the host")
        else:
            print("ok 1 completion_batch KUnit cases pass on the host")
        for i, (case, what, old, new) in enumerate(MUTANTS, 2):
            name = f"mutant '{what}' is caught by {case}"
            if pristine.count(old) != 1:
                bad += 1
                print(f"not ok {i} {name} (mutation site not found once)")
                continue
            failed, out = build_and_run(tmp, pristine.replace(old, new), rustc)
            if failed is None:
                bad += 1
                print(f"not ok {i} {name} (does not compile)")
                print("# " + "\n# ".join(out.splitlines()[:10]))
            elif case in failed:
                others = sorted(failed - {case})
                print(f"ok {i} {name}" + (f" # also failed: {', '.join(others)}" if others else ""))
            else:
                bad += 1
                print(f"not ok {i} {name} (failed: {', '.join(sorted(failed)) or 'none'})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
