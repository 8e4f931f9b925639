"""Import rules, read from the source: a function imports something itself (instead of at the
module's top) only when it is heavy — a large library (torch, transformers, MLflow, ...) or a
project module that imports one when it loads — so that light commands (`plan`, `list`, the
sweep's own process with pool workers) never pay for it. Everything else is imported at the
top, where ruff and mypy see it and an error shows when the module loads, not when a rare
branch runs (a search's failure path once imported a function that no longer existed)."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]
# libraries whose import costs a second or more, or pulls in one that does
HEAVY = {"torch", "torchvision", "transformers", "mlflow", "lmms_eval", "peft", "optuna", "ray",
         "datasets", "polars", "great_tables", "matplotlib", "accelerate", "safetensors",
         "huggingface_hub", "pycocoevalcap", "scipy", "pandas", "evaluate", "filelock",
         "numpy", "sqlalchemy"}


def modules() -> dict[str, Path]:
    out = {}
    for p in (ROOT / "harness").rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


MODULES = modules()


def imported(node: ast.Import | ast.ImportFrom, here: str) -> list[str]:
    """The modules an import statement loads (`from pkg import mod` loads pkg.mod)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = here.split(".") if MODULES[here].name == "__init__.py" else here.split(".")[:-1]
        pkg = pkg[:len(pkg) - node.level + 1]
        base = ".".join(pkg + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
        and node.test.id == "TYPE_CHECKING"


@functools.cache
def scan() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """(module -> what it imports when it loads, [(module, line, what) imported in a
    function])."""
    top: dict[str, set[str]] = {m: set() for m in MODULES}
    local: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, here: str, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for m in imported(child, here):
                    if in_function:
                        local.append((here, child.lineno, m))
                    else:
                        top[here].add(m)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, here, True)
            elif not _type_checking(child):
                visit(child, here, in_function)

    for name, path in MODULES.items():
        visit(ast.parse(path.read_text()), name, False)
    return top, local


@functools.cache
def heavy(module: str) -> bool:
    """Loading `module` loads a heavy library (through the project's own imports, too)."""
    if module.split(".")[0] in HEAVY:
        return True
    if module not in MODULES:
        return False
    top, _ = scan()
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        if m.split(".")[0] in HEAVY:
            return True
        parents = [".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)]
        todo += [x for x in [*top.get(m, ()), *parents] if x in MODULES or
                 x.split(".")[0] in HEAVY]
    return False


def test_functions_import_only_what_is_heavy():
    _, local = scan()
    light = [f"{where}:{line} imports {what}" for where, line, what in local if not heavy(what)]
    assert not light, (f"{len(light)} imports inside functions of light modules (move them to "
                       "the top of the file):\n" + "\n".join(light))


def test_the_rule_sees_heavy_and_light_modules():
    """The classification itself: the model loader's module is light to import (it loads
    transformers inside its functions), the stages module is heavy (torch at its top)."""
    assert heavy("torch") and heavy("harness.sweep.stages")
    assert not heavy("harness.errors") and not heavy("json")
    _, local = scan()
    assert any(what.startswith("transformers") for _, _, what in local)


def test_every_module_imports_first():
    """With imports at the top, a circle between project modules fails when its wrong end is
    loaded first: each module is imported as the first of the project's, in one process
    (the libraries stay loaded; the project's modules are dropped between imports)."""
    import subprocess
    import sys

    code = ("import importlib, sys\n"
            "bad = []\n"
            f"for m in {sorted(MODULES)!r}:\n"
            "    for k in [k for k in sys.modules if k == 'harness' or k.startswith('harness.')]:\n"
            "        del sys.modules[k]\n"
            "    try:\n"
            "        importlib.import_module(m)\n"
            "    except Exception as e:\n"
            "        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(bad))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert not p.stdout.strip(), "modules that fail to import first:\n" + p.stdout


def test_a_report_reads_shipped_metric_definitions_without_lmms_eval():
    """The report and a race read the shapes tasks' metric definitions (aggregations,
    directions) from their own YAML: lmms-eval (seconds to import) stays out of the
    process, and the corpus metrics still find their all-resamples-at-once path."""
    code = ("import sys; from harness.evaluation import intervals as i; "
            "m = i.metrics_of('shapes_caption'); "
            "print(sorted(m), i._fast(m['cider'].aggregation) is not None, "
            "'lmms_eval' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == "['bleu4', 'cider', 'object_match'] True False"
