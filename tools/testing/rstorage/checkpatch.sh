#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The patch series, as make check tests it: make-patches.py writes it on a
# pristine tree and applies it there with git am; then the kernel's
# checkpatch.pl --strict must report no error, warning or check on any patch.
# checkpatch must also report a patch with a planted problem, or a checkpatch
# that looks at nothing would pass.
#
# Prints KTAP-free result lines "ok:<name>" / "fail:<name>" on stdout for
# check.sh; details go to RESULTS_DIR/checkpatch.log.
#
# Usage: checkpatch.sh PROJECT_DIR KERNEL_SRC BUILD_DIR RESULTS_DIR
set -uo pipefail

project=$1 ksrc=$2 build=$3 results=$4
log=$results/checkpatch.log
out=$build/patches
: >"$log"

if python3 "$project/tools/testing/rstorage/make-patches.py" --verify \
	"$project" "$ksrc" "$build/patches-git" "$out" >>"$log" 2>&1; then
	echo "ok:patches/make patches writes the series and git am applies it to pristine 7.3"
else
	tail -n 20 "$log" >&2
	echo "fail:patches/make patches writes the series and git am applies it to pristine 7.3"
	exit 0
fi

# checkpatch runs from the pristine tree (its spelling list and SPDX check).
cp="$build/patches-git/scripts/checkpatch.pl"
bad=0 n=0
for p in "$out"/0*.patch; do
	case $(basename "$p") in 0000-*) continue ;; esac
	n=$((n + 1))
	if ! r=$(cd "$build/patches-git" && perl "$cp" --strict --terse --show-types "$p" 2>&1) ||
		grep -qE ': (ERROR|WARNING|CHECK):|Traceback|No module' <<<"$r"; then
		echo "$r" >>"$log"
		grep -E ': (ERROR|WARNING|CHECK):|Traceback|No module' <<<"$r" | head -n 5 >&2
		bad=$((bad + 1))
	fi
done
if [ "$n" -gt 0 ] && [ "$bad" = 0 ]; then
	echo "ok:patches/checkpatch.pl --strict: no error, warning or check in $n patches"
else
	echo "fail:patches/checkpatch.pl --strict: $bad of $n patches have findings (see $log)"
fi

# A planted problem: a line of 120 columns added to the first patch that adds a
# Rust file.
plant=$results/checkpatch-plant.patch
victim=$(grep -l '^+// SPDX-License-Identifier' "$out"/0*.patch | head -n 1)
python3 - "$victim" "$plant" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().split("\n")
for i, l in enumerate(lines):
    if l.startswith("+// SPDX-License-Identifier"):
        lines.insert(i + 1, "+// " + "0" * 117)
        j = i
        while not lines[j].startswith("@@"):
            j -= 1
        m = re.match(r"@@ -0,0 \+1,(\d+) @@(.*)", lines[j])
        lines[j] = f"@@ -0,0 +1,{int(m.group(1)) + 1} @@{m.group(2)}"
        break
open(sys.argv[2], "w").write("\n".join(lines))
PY
# (The report is read whole: with pipefail, grep -q leaving a pipe early would
# fail the pipeline.)
r=$(cd "$build/patches-git" && perl "$cp" --strict --terse "$plant" 2>&1)
if grep -q 'WARNING: line length of 120 exceeds 100 columns' <<<"$r"; then
	echo "ok:harness/checkpatch.pl reports a planted 120-column line"
else
	echo "fail:harness/checkpatch.pl reports a planted 120-column line"
fi
