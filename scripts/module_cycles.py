#!/usr/bin/env python3
"""Import cycles between the top-level modules of each crate.

A module `a` depends on `b` when code (not comments or tests) of `a` names `crate::b`.
Prints every cycle; exits 1 when there is one. Run from the workspace root.
"""
import os
import re
import sys


def top_module(crate_src, path):
    rel = os.path.relpath(path, crate_src)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def graph(crate_src):
    edges = {}
    for root, _, files in os.walk(crate_src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            me = top_module(crate_src, path)
            if me in ("lib", "main"):
                continue
            text = open(path, encoding="utf-8").read()
            # Test modules may use anything; comments (doc links) are not imports.
            text = text.split("#[cfg(test)]")[0]
            text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
            names = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
            for block in re.findall(r"use crate::\{([^}]*)\}", text):
                names.update(re.findall(r"(?:^|[\s,])([a-z_][a-z0-9_]*)(?=::|\s*[,}]|$)", block))
            edges.setdefault(me, set()).update(n for n in names if n != me)
    modules = set(edges)
    return {m: {d for d in deps if d in modules} for m, deps in edges.items()}


def cycles(g):
    found, stack, on_stack, seen = [], [], set(), set()

    def visit(m):
        seen.add(m)
        stack.append(m)
        on_stack.add(m)
        for d in sorted(g.get(m, ())):
            if d in on_stack:
                found.append(stack[stack.index(d):] + [d])
            elif d not in seen:
                visit(d)
        stack.pop()
        on_stack.discard(m)

    for m in sorted(g):
        if m not in seen:
            visit(m)
    return found


def main():
    bad = False
    for crate in sorted(os.listdir("crates")):
        src = os.path.join("crates", crate, "src")
        if not os.path.isdir(src):
            continue
        for c in cycles(graph(src)):
            bad = True
            print(f"{crate}: " + " -> ".join(c))
    if not bad:
        print("no import cycles between top-level modules")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
