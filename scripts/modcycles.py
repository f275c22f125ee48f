#!/usr/bin/env python3
"""Import cycles between the modules of one Rust crate.

Usage: scripts/modcycles.py [--no-tests] SRC_DIR [ROOT_FILE]

Reads the crate from its root file (ROOT_FILE, else lib.rs, else main.rs in SRC_DIR), follows
`mod NAME;` declarations (NAME.rs or NAME/mod.rs, `#[path]` honoured) and inline `mod NAME { }`
blocks, and collects every path that names another module of the crate: `crate::a::b`,
`super::x`, `self::x` and paths through a child module, in `use` items and in expressions.

An edge from a module to one of its ancestors or descendants is structure, not a cycle (a
child uses its parent's items; a parent declares its children). Every other edge, from A to B,
is lifted to the two sibling subtrees it connects: the children of A's and B's lowest common
ancestor that hold A and B. A cycle among those subtrees is printed with the lines that make
each of its edges; the exit code is 1 when there is one, 0 otherwise. `--no-tests` leaves
out what modules named `tests` (and their children) refer to: the cycles of a non-test
build. No dependencies.
"""

import os
import re
import sys
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_code(text):
    """Blanks comments, string and char literals (newlines kept, so line numbers hold)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif re.match(r'(b|c)?r#*"', text[i:i + 40]) and (i == 0 or not text[i - 1].isalnum()):
            m = re.match(r'(b|c)?r(#*)"', text[i:])
            end = '"' + m.group(2)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"' and re.search(r"#\[path\s*=\s*$", text[max(0, i - 40):i]):
            j = text.find('"', i + 1) + 1
            out.append(text[i:j])  # a `#[path]` attribute's file, read below
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), else a lifetime or label: keep it.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append(" " * m.end())
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{self, d}}` -> [["a","b"], ["a","c"], ["a","c","d"]] (`self` ends a path)."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)

    def parse(s, i, prefix):
        paths, seg = [], prefix[:]
        start = i
        while i < len(s):
            if s[i] == "{":
                head = [p for p in s[start:i].split("::") if p]
                inner, i = parse_group(s, i + 1, seg + head)
                paths.extend(inner)
                start = i
                continue
            if s[i] in ",}":
                break
            i += 1
        tail = [p for p in s[start:i].split("::") if p]
        if tail:
            if tail[-1] == "self":
                tail = tail[:-1]
            paths.append(seg + tail)
        return paths, i

    def parse_group(s, i, prefix):
        paths = []
        while i < len(s) and s[i] != "}":
            inner, i = parse(s, i, prefix)
            paths.extend(inner)
            if i < len(s) and s[i] == ",":
                i += 1
        return paths, i + 1

    paths, _ = parse(tree, 0, [])
    return [p for p in paths if p]


class Crate:
    def __init__(self, src, root_file):
        self.src = src
        self.modules = {}  # path tuple -> file it lives in
        self.refs = []  # (from module, path segments, file, line)
        self.load((), root_file, is_root=True)

    def child_file(self, parent_dir, name, attr_path):
        if attr_path:
            return os.path.join(parent_dir, attr_path)
        for cand in (os.path.join(parent_dir, name + ".rs"), os.path.join(parent_dir, name, "mod.rs")):
            if os.path.exists(cand):
                return cand
        return None

    def load(self, module, path, is_root=False):
        with open(path, encoding="utf-8") as f:
            text = strip_code(f.read())
        self.modules[module] = path
        base = os.path.dirname(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        # Children of a non-root `foo.rs` live in `foo/`; of `mod.rs`, lib.rs, main.rs beside it.
        child_dir = base if is_root or stem == "mod" else os.path.join(base, stem)
        self.scan(module, text, path, child_dir)

    def scan(self, module, text, path, child_dir):
        """Records references and loads children; inline `mod x { }` blocks nest."""
        stack = [(module, child_dir, 0)]  # (module, its child dir, brace depth it closes at)
        depth = 0
        pending_path = None
        token = re.compile(
            r"#\[path\s*=\s*\"[^\"]*\"\]"
            r"|\b(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])"
            r"|\buse\s+([^;]+);"
            r"|\b((?:crate|super|self)(?:\s*::\s*" + IDENT + r")+)"
            r"|\b(" + IDENT + r"(?:\s*::\s*" + IDENT + r")+)"
            r"|[{}]"
        )
        for m in token.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            cur, cur_dir, _ = stack[-1]
            s = m.group(0)
            if s.startswith("#[path"):
                pending_path = re.search(r"\"([^\"]*)\"", s).group(1)
            elif m.group(1):
                name, kind = m.group(1), m.group(2)
                child = cur + (name,)
                if kind == ";":
                    f = self.child_file(cur_dir, name, pending_path)
                    if f and os.path.exists(f):
                        self.load(child, f)
                    else:
                        self.modules[child] = path
                else:
                    depth += 1
                    self.modules[child] = path
                    stack.append((child, os.path.join(cur_dir, name), depth))
                pending_path = None
            elif m.group(3):
                for p in expand_use(m.group(3)):
                    self.refs.append((cur, p, path, line))
            elif m.group(4) or m.group(5):
                segs = [x.strip() for x in (m.group(4) or m.group(5)).split("::")]
                self.refs.append((cur, segs, path, line))
            elif s == "{":
                depth += 1
            elif s == "}":
                if len(stack) > 1 and stack[-1][2] == depth:
                    stack.pop()
                depth -= 1

    def resolve(self, module, segs):
        """The crate module a path names (its longest module prefix), or None."""
        segs = [s for s in segs if s]
        if not segs:
            return None
        if segs[0] == "crate":
            base, rest = (), segs[1:]
        elif segs[0] in ("self", "super"):
            base, rest = module, segs
            while rest and rest[0] in ("self", "super"):
                if rest[0] == "super":
                    if not base:
                        return None
                    base = base[:-1]
                rest = rest[1:]
        elif module + (segs[0],) in self.modules:
            base, rest = module, segs
        else:
            return None  # another crate, a type, or an imported name
        target = base
        for s in rest:
            if target + (s,) in self.modules:
                target = target + (s,)
            else:
                break
        return target

    def edges(self, tests=True):
        """Edges between sibling subtrees, each with the references that make it."""
        out = defaultdict(list)
        for module, segs, path, line in self.refs:
            if not tests and "tests" in module:
                continue
            target = self.resolve(module, segs)
            if target is None:
                continue
            k = 0
            while k < min(len(module), len(target)) and module[k] == target[k]:
                k += 1
            if k == len(module) or k == len(target):
                continue  # ancestor or descendant (or itself)
            a, b = module[: k + 1], target[: k + 1]
            where = os.path.relpath(path, self.src)
            out[(a, b)].append(f"{where}:{line} {'::'.join(segs)}")
        return out


def cycles(edges):
    """One cycle per strongly connected component of more than one node (Tarjan)."""
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
        graph.setdefault(b, set())
    index, low, on, stack, comps = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = []
    for comp in comps:
        # A shortest cycle through the component's first node, by breadth-first search.
        start = min(comp)
        prev, queue, seen = {}, [start], {start}
        end = None
        while queue and end is None:
            v = queue.pop(0)
            for w in sorted(graph[v]):
                if w not in comp:
                    continue
                if w == start:
                    end = v
                    break
                if w not in seen:
                    seen.add(w)
                    prev[w] = v
                    queue.append(w)
        path = [end]
        while path[-1] != start:
            path.append(prev[path[-1]])
        path.reverse()
        found.append((path + [start], comp))
    return found


def name(module):
    return "crate::" + "::".join(module) if module else "crate"


def main():
    argv = sys.argv[1:]
    tests = "--no-tests" not in argv
    argv = [a for a in argv if a != "--no-tests"]
    if len(argv) not in (1, 2):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 64
    src = argv[0]
    if len(argv) == 2:
        root = argv[1]
    else:
        root = next(
            (os.path.join(src, f) for f in ("lib.rs", "main.rs") if os.path.exists(os.path.join(src, f))),
            None,
        )
    if root is None or not os.path.exists(root):
        print(f"no lib.rs or main.rs in {src}", file=sys.stderr)
        return 64
    crate = Crate(src, root)
    edges = crate.edges(tests)
    found = cycles(edges)
    for path, comp in found:
        print("cycle: " + " -> ".join(name(m) for m in path))
        for a, b in zip(path, path[1:]):
            refs = edges[(a, b)]
            more = f" (+{len(refs) - 3} more)" if len(refs) > 3 else ""
            print(f"  {name(a)} -> {name(b)}: " + "; ".join(refs[:3]) + more)
        on_path = set(zip(path, path[1:]))
        rest = sorted(e for e in edges if e[0] in comp and e[1] in comp and e not in on_path)
        if rest:
            print("  and in the same tangle:")
        for a, b in rest:
            refs = edges[(a, b)]
            more = f" (+{len(refs) - 3} more)" if len(refs) > 3 else ""
            print(f"  {name(a)} -> {name(b)}: " + "; ".join(refs[:3]) + more)
    scope = "" if tests else ", tests left out"
    print(f"{len(crate.modules)} modules from {os.path.relpath(root)}{scope}: {len(found)} cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
