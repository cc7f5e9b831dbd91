#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Fails when Rust code under the given directories uses `unsafe`.

All `unsafe` lives in the kernel crate's abstractions (rust/kernel/) and the
C helpers; drivers and samples are safe Rust. This finds the keyword in code,
not in comments, string literals or character literals, so a comment that
speaks of unsafe code is not a finding. Each finding is printed as
FILE:LINE: TEXT.

Usage: no_unsafe.py DIR...           exit 0 if none, 1 if any
       no_unsafe.py --self-test      prove that the scanner finds what it must
"""

import os
import re
import sys

WORD = re.compile(r"\bunsafe\b")


def code_only(src):
    """Returns `src` with comments and string/char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(src)
    depth = 0  # nesting of block comments
    while i < n:
        c = src[i]
        nxt = src[i + 1] if i + 1 < n else ""
        if depth:
            if c == "/" and nxt == "*":
                depth, i = depth + 1, i + 2
            elif c == "*" and nxt == "/":
                depth, i = depth - 1, i + 2
            else:
                out.append("\n" if c == "\n" else " ")
                i += 1
            continue
        if c == "/" and nxt == "/":
            while i < n and src[i] != "\n":
                i += 1
            continue
        if c == "/" and nxt == "*":
            depth, i = 1, i + 2
            continue
        m = re.match(r'(?:b|c)?r(#*)"', src[i:]) if c in "bcr" else None
        if m and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", src[i:j + 1]))
            i = j + 1
            continue
        if c == "'":
            # A character literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            m = re.match(r"'(?:\\[^']*|[^'\\\n])'", src[i:])
            if m:
                out.append(" " * m.end())
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def findings(path):
    with open(path, encoding="utf-8") as f:
        src = f.read()
    code = code_only(src).split("\n")
    lines = src.split("\n")
    return [(path, k + 1, lines[k].strip()) for k, l in enumerate(code) if WORD.search(l)]


def scan(dirs):
    found = []
    for d in dirs:
        for root, _, files in os.walk(d):
            for name in sorted(files):
                if name.endswith(".rs"):
                    found += findings(os.path.join(root, name))
    return found


def self_test():
    """The scanner finds unsafe code and only that."""
    must = [
        "fn f() { unsafe { g() } }",
        "unsafe impl Send for T {}",
        "pub unsafe fn f() {}",
        "let s = \"a\"; unsafe { g() }",
        "/* a */ unsafe fn f() {}",
        "fn f<'a>(x: &'a u8) { unsafe { g(x) } }",
    ]
    must_not = [
        "// unsafe { g() }",
        "/// # Safety: unsafe",
        "/* unsafe /* nested */ unsafe */",
        'let s = "unsafe";',
        'let s = r#"unsafe "quoted""#;',
        "let c = '\"'; let s = \"unsafe\";",
        "fn unsafe_name() {}",
    ]
    bad = [s for s in must if not WORD.search(code_only(s))]
    bad += [s for s in must_not if WORD.search(code_only(s))]
    for s in bad:
        print(f"self-test: wrong verdict on: {s}")
    return 1 if bad else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    found = scan(sys.argv[1:])
    for path, line, text in found:
        print(f"{path}:{line}: {text}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
