#!/usr/bin/env python3
"""Dependency cycles between wisp-host's top-level modules (host/src).

A module depends on another when its code (comments and test modules
aside) names it: `crate::other::...`, `use crate::{other::...}`, or the
`Host` type (module `host`). Prints each cycle and exits 1 if there is one;
with -v also prints every module's dependencies and the files causing them.

    python3 scripts/module-cycles.py [-v]
"""
import collections
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "host", "src")


def modules():
    found = set()
    for entry in os.listdir(ROOT):
        if entry.endswith(".rs") and entry != "lib.rs":
            found.add(entry[:-3])
        elif os.path.isdir(os.path.join(ROOT, entry)):
            found.add(entry)
    return found


def files_of(module):
    single = os.path.join(ROOT, module + ".rs")
    if os.path.exists(single):
        return [single]
    return [
        os.path.join(d, f)
        for d, _, fs in os.walk(os.path.join(ROOT, module))
        for f in fs
        if f.endswith(".rs") and f != "tests.rs"
    ]


def code_of(path):
    text = open(path).read()
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut >= 0:
        text = text[:cut]
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))


def edges(mods):
    out = collections.defaultdict(lambda: collections.defaultdict(set))
    for m in mods:
        for path in files_of(m):
            code = code_of(path)
            rel = os.path.relpath(path, ROOT)
            named = set(re.findall(r"\bcrate::(\w+)", code))
            for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
                named.update(re.findall(r"(\w+)", group))
            if re.search(r"\bcrate::Host\b|use crate::\{[^}]*\bHost\b", code):
                named.add("host")
            for target in named & mods - {m}:
                out[m][target].add(rel)
    return out


def cycles(mods, graph):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return found


def main():
    mods = modules()
    graph = edges(mods)
    if "-v" in sys.argv:
        for m in sorted(mods):
            deps = {t: sorted(fs)[:3] for t, fs in sorted(graph[m].items())}
            print(f"{m} -> {deps}")
    found = cycles(mods, graph)
    for c in found:
        print("cycle:", " ".join(c))
    if not found:
        print("no cycle between host/src's top-level modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
