"""The package's layers and its import circles, read from the source (the scan of
test_imports.py).

Layers, lowest first; a module imports only from its own layer and those below, in a
function as at the top (a function-local import is the same dependency, paid later):
- base: the top-level helpers (errors, paths, settings, fields, fingerprint, integrity,
  jsonl, yamlfile, threads), the registry (which names the entries of higher layers as
  strings, imported when used), and the tests' fault hook (testing.faults), which a worker
  calls from one line;
- world: the synthetic shapes world, `sources`, which reads its samples (and JSONL files)
  for calibration and recovery, and `hub`, which finds hub datasets on this machine;
- models: adapters and loading, and the embedded model's definition and training (zoo/);
- stages: pruning, evaluation, recovery, and the zoo's check (which prunes and scores);
- sweep: grids, the stage cache, executors, MLflow, and the search built on them;
- report: tables and figures read back from MLflow;
- cli: the commands; the only place that ties a sweep to its report;
- testing: fixtures shipped for tests (tiny models, made-up results): they may use any
  layer, and nothing in the package uses them.
The studies (studies/, outside the package) import harness; harness never imports them.

Circles: none among the imports modules make when they load. Counting function-local
imports too, only the shapes listed in ALLOWED_CIRCLES: a host that imports its plug-ins
lazily, each plug-in importing the host at its top.
"""

from __future__ import annotations

import pytest

from tests.test_imports import MODULES, scan

pytestmark = pytest.mark.unit

BASE = ("harness", "harness.errors", "harness.paths", "harness.fields", "harness.fingerprint",
        "harness.integrity", "harness.jsonl", "harness.yamlfile", "harness.threads",
        "harness.settings", "harness.testing.faults", "harness.registry", "harness.figstyle")
# (layer, the modules and packages in it); a module's layer is its longest match
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", BASE),
    ("world", ("harness.world", "harness.sources", "harness.hub")),
    ("models", ("harness.models", "harness.zoo")),
    ("stages", ("harness.pruning", "harness.evaluation", "harness.recovery",
                "harness.zoo.check")),
    ("sweep", ("harness.sweep", "harness.search")),
    ("report", ("harness.report",)),
    ("cli", ("harness.cli",)),
    ("testing", ("harness.testing",)),
]
# (importer, imported): why it is still there. Each must still occur (the test says when one
# is gone, so the list only shrinks).
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}
# circles through function-local imports that are allowed: every module of the circle
# matches one of the group's names (a module, or a package's prefix)
ALLOWED_CIRCLES: dict[str, tuple[str, ...]] = {}


def _matches(module: str, name: str) -> bool:
    return module == name or (name not in BASE and module.startswith(name + "."))


def layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (match length, layer index)
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            if _matches(module, name) and (best is None or len(name) > best[0]):
                best = (len(name), i)
    return None if best is None else best[1]


def _project(name: str) -> str | None:
    """The project module an import loads (`harness.sweep.grid.Cell` -> harness.sweep.grid)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def graph(local: bool) -> dict[str, set[str]]:
    """module -> the project modules it imports at its top (and in its functions: `local`)."""
    top, in_functions = scan()
    edges = {m: {p for d in deps if (p := _project(d)) and p != m} for m, deps in top.items()}
    if local:
        for m, _, d in in_functions:
            p = _project(d)
            if p and p != m:
                edges[m].add(p)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def report(edges: dict[str, set[str]], component: list[str]) -> str:
    """One circle of the component, and the component's other modules if any."""
    one = path(edges, component)
    rest = sorted(set(component) - set(one.split(" -> ")))
    return one + (f" (with {', '.join(rest)})" if rest else "")


def path(edges: dict[str, set[str]], component: list[str]) -> str:
    """One circle through the component's first module, as `a -> b -> a`."""
    start, members = component[0], set(component)
    came: dict[str, str] = {}
    todo = [start]
    while todo:  # breadth first, inside the component, until an edge leads back to start
        nxt = []
        for v in todo:
            for w in sorted(edges[v] & members):
                if w == start:
                    steps = [v]
                    while steps[-1] != start:
                        steps.append(came[steps[-1]])
                    return " -> ".join([*reversed(steps), start])
                if w not in came:
                    came[w] = v
                    nxt.append(w)
        todo = nxt
    return " -> ".join(component)


def test_no_circles_among_the_imports_made_at_load():
    edges = graph(local=False)
    found = [report(edges, c) for c in circles(edges)]
    assert not found, "import circles among module-top imports:\n" + "\n".join(found)


def test_circles_through_function_imports_only_in_allowed_shapes():
    edges = graph(local=True)
    bad = [report(edges, c) for c in circles(edges)
           if not any(all(any(_matches(m, n) for n in names) for m in c)
                      for names in ALLOWED_CIRCLES.values())]
    assert not bad, "import circles (function-local imports counted):\n" + "\n".join(bad)


def test_the_circle_check_sees_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]
    assert path(edges, ["a", "b", "c"]) == "a -> b -> c -> a"


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer(m) is None)
    assert not missing, f"modules in no layer (add them to LAYERS): {missing}"


def test_layers_import_only_downward():
    top, in_functions = scan()
    found: dict[tuple[str, str], str] = {}
    for m, deps in top.items():
        for d in deps:
            found.setdefault((m, d), "top")
    for m, line, d in in_functions:
        found.setdefault((m, d), f"line {line}")
    bad, seen = [], set()
    for (m, d), where in sorted(found.items()):
        p = _project(d)
        if p is None or p == m:
            continue
        lm, lp = layer(m), layer(p)
        if lm is None or lp is None or lp <= lm:
            continue
        if (m, p) in KNOWN_VIOLATIONS:
            seen.add((m, p))
            continue
        bad.append(f"{m} ({LAYERS[lm][0]}) imports {p} ({LAYERS[lp][0]}) at {where}")
    assert not bad, "imports of a higher layer:\n" + "\n".join(bad)
    gone = sorted(set(KNOWN_VIOLATIONS) - seen)
    assert not gone, f"known violations no longer there (remove them from the list): {gone}"


def test_layers_place_modules_as_documented():
    names = [LAYERS[i][0] if (i := layer(m)) is not None else None
             for m in ("harness", "harness.errors", "harness.sources", "harness.zoo.build",
                       "harness.zoo.check", "harness.sweep.runner", "harness.report.build",
                       "harness.cli")]
    assert names == ["base", "base", "world", "models", "stages", "sweep", "report", "cli"]


def test_testing_fixtures_sit_on_top_and_their_fault_hook_at_the_base():
    names = [LAYERS[i][0] if (i := layer(m)) is not None else None
             for m in ("harness.testing", "harness.testing.tiny", "harness.testing.demo",
                       "harness.testing.faults", "harness.settings")]
    assert names == ["testing", "testing", "testing", "base", "base"]


def test_harness_never_imports_a_study():
    """studies/ (the paper study) import harness, never the other way round: a study is not
    the library."""
    top, in_functions = scan()
    found = [(m, "top", d) for m, deps in top.items() for d in deps]
    found += [(m, f"line {line}", d) for m, line, d in in_functions]
    bad = sorted(f"{m} imports {d} at {where}" for m, where, d in found
                 if d == "studies" or d.startswith("studies."))
    assert not bad, "harness imports a study:\n" + "\n".join(bad)
