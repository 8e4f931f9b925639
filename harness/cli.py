"""`vlmprune`: the command line. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from harness import hub, jsonl, settings, threads
from harness.errors import EXIT_USAGE, UserError, first_line, unknown, validate
from harness.evaluation.run import evaluate
from harness.evaluation.suite import (
    CUSTOM,
    Suite,
    check,
    get_suite,
    members,
    of_tasks,
    suites,
    task_manager,
    user_suites,
)
from harness.fields import name_flag
from harness.models.load import ModelSpec, load
from harness.sweep import executors, server, verify
from harness.sweep.console import console

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped
log = logging.getLogger(__name__)


def _zoo_check(a: argparse.Namespace) -> int:
    from harness.zoo import check

    check.main(a.model, a.out)
    return 0


def _model_spec(a: argparse.Namespace):
    """The model a command names: `--model`/MODEL, with `--family` and `--layout`."""
    data = {"name": a.model, "family": a.family}
    if getattr(a, "offload", None):
        data["offload"] = a.offload
    if getattr(a, "spill_activations", None) is not None:
        data["spill_activations"] = a.spill_activations
    if a.layout is not None:
        if not a.layout.is_file():
            raise UserError(f"--layout {a.layout}: no such file (a YAML layout: module paths "
                            "of vision, bridge, language; see harness/models/layouts/)")
        data["layout"] = str(a.layout)
        if a.family == "auto":
            data["family"] = "generic"
    return validate(ModelSpec, data, "--family/--layout")


def _models(a: argparse.Namespace) -> int:
    adapter = load(_model_spec(a))
    print(f"{a.model}: family {adapter.family}")
    for role in ("vision", "bridge", "language"):
        blocks = adapter.blocks(role)
        print(f"  {role:9s} {len(blocks):3d} blocks  {len(adapter.role_linears(role)):4d} "
              f"Linears  {adapter.parameter_count(role):>12,d} prunable weights")
    for role in ("vision", "bridge", "language"):
        print(f"  {role:9s} {', '.join(adapter.layout.paths(role)) or '-'}")
    print(f"  {'excluded':9s} {', '.join(adapter.layout.exclude) or '-'}")
    return 0


def _prune(a: argparse.Namespace) -> int:
    from harness.pruning import persist, stage
    from harness.pruning.spec import read_file, refuse_shapes_default

    spec = read_file(a.spec)
    refuse_shapes_default(a.model, spec, f"{a.spec}: ")
    cal = spec.calibration
    if cal is not None and hub.is_source(cal.source):  # before the model loads
        hub.located(jsonl.CALIBRATION[0], cal.source, cal.split)
    elif cal is not None and cal.source != "shapes":
        jsonl.rows(cal.source, *jsonl.CALIBRATION)
    model = _model_spec(a)
    if a.out is not None and (a.out.is_file() or (a.out.is_dir() and any(a.out.iterdir())
                                                  and not (a.out / "vlmprune.json").exists())):
        what = "a file" if a.out.is_file() else "a folder that is not a saved pruned model"
        raise UserError(f"--out {a.out}: {what} is there; name a new folder")
    from harness.sweep.checks import needs_shapes

    if needs_shapes(spec):
        # N:M widths, a budget, group lists: checked on the model built on the meta device,
        # before its weights are read (nor is its folder hashed, as a grid's shapes cache does)
        from harness.pruning.spec import targets

        shapes = load(model, weights=False)
        try:
            targets(spec, shapes)
        except UserError as e:
            raise UserError(f"{a.spec}: {e} (model {a.model})") from None
    if model.offload == "disk":  # its blocks are written as they are pruned: beside --out
        work = a.out.with_name(f".{a.out.name}.partial") if a.out else Path(
            tempfile.mkdtemp(prefix="vlmprune-prune-"))
        shutil.rmtree(work, ignore_errors=True)  # a killed run's: started again
    try:
        adapter = load(model, work=work if model.offload == "disk" else None)
        masks, rep = stage.run(adapter, spec)
    except BaseException:
        if model.offload == "disk":
            shutil.rmtree(work, ignore_errors=True)  # nothing half-written stays
        raise
    print(f"{'role':9s} {'sparsity':>9s} {'nonzero':>12s} {'N:M ok':>7s}")
    for role, r in rep["roles"].items():
        print(f"{role:9s} {r['sparsity']:9.4f} {r['nonzero']:12,d} {str(r['nm_valid']):>7s}")
    print(f"{'overall':9s} {rep['overall']['sparsity']:9.4f} {rep['overall']['nonzero']:12,d}")
    if "memory" in rep:
        m, g = rep["memory"], 2**30
        print(f"offload {model.offload}: expected peak {m['expected_peak'] / g:.2f} GiB, "
              f"parameters resident at most {adapter.residency.peak / g:.2f} GiB")
    if a.out and model.offload == "disk":  # saved in the partial folder, then moved whole
        persist.save(adapter, masks, work)
        (work / "sparsity.json").write_text(json.dumps(rep, indent=2))
        if a.out.exists():
            shutil.rmtree(a.out)
        os.replace(work, a.out)
        print(f"saved to {a.out}")
    elif a.out:
        persist.save(adapter, masks, a.out)
        (a.out / "sparsity.json").write_text(json.dumps(rep, indent=2))
        print(f"saved to {a.out}")
    elif model.offload == "disk":
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _eval(a: argparse.Namespace) -> int:
    for flag, value in (("--limit", a.limit), ("--batch-size", a.batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: give 1 or more")
    name, s = _eval_suite(a)
    check(s)  # a misspelt task, or missing data, fails before the model loads
    r = evaluate(load(_model_spec(a)), s, run_hash=f"cli:{a.model}", limit=a.limit,
                 batch_size=a.batch_size)
    for key, value in sorted(r.metrics.items()):
        print(f"{key:40s} {value:8.4f}{'  *' if key in r.headline else ''}")
    print(f"({r.seconds:.1f} s; * each task's headline, the first of its metric list)")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"model": a.model, "suite": name, "tasks": s.tasks,
                                     "headline": r.headline, "metrics": r.metrics,
                                     "samples": r.samples}, indent=1))
    return 0


def _eval_suite(a: argparse.Namespace) -> tuple[str, Suite]:
    """What `eval` scores on: `--tasks`, else `--suite` (shipped, or from `--suites FILE`)."""
    if a.tasks is not None:
        if a.suite is not None:
            raise UserError(f"--suite {a.suite} and --tasks {a.tasks}: give one")
        tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
        if not tasks:
            raise UserError("--tasks: give lmms-eval task names, comma-separated")
        return CUSTOM, of_tasks(tasks)
    user = {}
    if a.suites is not None:
        if not a.suites.is_file():
            raise UserError(f"--suites {a.suites}: no such file")
        user = user_suites(a.suites.name, a.suites)
    name = a.suite or "shapes"
    if name in user:
        return name, user[name]
    if name not in suites():
        raise unknown("evaluation suite", name, [*suites(), *user])
    return name, get_suite(name)


def _tasks(a: argparse.Namespace) -> int:
    """The tasks `eval --tasks` and `eval.tasks` can name: lmms-eval's and the shipped ones."""
    tm = task_manager(True)
    index = tm.task_index
    if a.pattern in index and index[a.pattern].get("type") not in ("task", "python_task"):
        for t in members(a.pattern, tm):
            print(t)
        return 0
    for t, v in sorted(index.items()):
        if (a.pattern or "") in t:
            kind = v.get("type", "task")
            print(t if kind in ("task", "python_task") else f"{t}  ({kind})")
    return 0


def _where(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--where {item}: expected key=value, e.g. prune.method=wanda")
        out[key] = value
    return out


def _list(a: argparse.Namespace) -> int:
    from harness.sweep import runner

    return runner.list_grids()


def _plan(a: argparse.Namespace) -> int:
    from harness.sweep import runner

    return runner.plan(a.grid, _where(a.where), a.keep_going)


def _sweep(a: argparse.Namespace) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: the sweep has its bar
    from harness.sweep import runner

    code = runner.sweep(a.grid, _where(a.where), a.dry_run, a.force,
                        executor=a.executor, workers=a.workers, ray_address=a.ray_address,
                        threads=a.threads, keep_going=a.keep_going)
    if not a.dry_run and not a.no_report:
        write_report(a.grid)  # the grid as given: a name, or its file
    return code


def write_report(name: str) -> None:
    """The grid's report at the end of a sweep; a failure to write it is a warning, since
    every result is safe in MLflow and `vlmprune report` can try again. Here, above both the
    sweep and the report, so that neither imports the other's command."""
    from harness.report import build

    try:
        out = build.write(name)
    except UserError as e:
        log.warning("report not written: %s", e)
        return
    except Exception as e:  # noqa: BLE001 - the sweep's results stand without a report
        log.debug("report failed:\n%s", traceback.format_exc())
        log.warning("report not written (%s: %s); retry with `vlmprune report %s`",
                    type(e).__name__, first_line(e), name)
        return
    console.print(f"report: {out}/index.html")


def _server(a: argparse.Namespace) -> int:
    return server.serve(a.host, a.port, auth=a.auth, insecure=a.insecure)


def _report(a: argparse.Namespace) -> int:
    from harness.report import build, compare

    if a.experiment is not None:  # GRID and --compare are checked as they are resolved
        name_flag(a.experiment, "--experiment")
    if a.compare:
        out = compare.write(a.compare[0], a.compare[1], a.out)
    elif a.grid:
        out = build.write(a.grid, a.out, a.experiment)
    else:
        raise UserError("report: name a grid (vlmprune report GRID) or two to compare "
                        "(--compare A B)")
    print(f"report written to {out}/index.html")
    return 0


def _search(a: argparse.Namespace) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: one progress bar
    from harness.search.run import search

    if a.study is not None:  # the default, the grid's name, is checked with the grid
        name_flag(a.study, "--study")
    return search(a.grid, a.trials, a.storage, a.study, executor=a.executor,
                  workers=a.workers, ray_address=a.ray_address)


def _cache_verify(a: argparse.Namespace) -> int:
    return verify.main(a.repair)


COMPUTE = ("sweep", "search", "prune", "eval", "zoo-check")  # commands that run models


def _executor_flags(s: argparse.ArgumentParser, what: str) -> None:
    # names are checked by the sweep or search (executors.Dispatch.check), not by argparse
    # `choices`: one line saying what to use, as for every other flag
    s.add_argument("--executor", default="local", help=executors.help_text(what))
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help=f"{'/'.join(executors.takers('workers'))} workers (default: one per "
                   "GPU, else 2)")
    s.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="a running Ray cluster (default: RAY_ADDRESS, else a local one)")


def _model_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--family", default="auto",
                   help="model family (model.family in a grid): auto (from config.json), llava, "
                   "blip2, instructblip, generic (with --layout)")
    s.add_argument("--layout", type=Path, default=None, metavar="FILE",
                   help="a YAML layout naming the model's vision, bridge and language modules "
                   "(any VLM; see harness/models/layouts/)")


class _Parser(argparse.ArgumentParser):
    """Flag errors in one line (argparse prints the whole usage first), exit 2."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} -h)\n")
        sys.exit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vlmprune", description="Prune vision-language models, "
                                "recover them, evaluate them, and compare.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="library progress bars and INFO lines on the terminal too")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads (default: VLMPRUNE_THREADS, else this process's cores; "
                   "see harness/threads.py)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="run a grid: prune, recover, evaluate every cell")
    s.add_argument("grid", help="a name in experiments/ or a path to a grid YAML")
    s.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="only cells whose dotted field equals VALUE (repeatable)")
    s.add_argument("--dry-run", action="store_true", help="show the plan, run nothing")
    s.add_argument("--force", action="store_true",
                   help="recompute every stage and log new runs, even for finished cells")
    _executor_flags(s, "cells")
    s.add_argument("--keep-going", action="store_true",
                   help="run the cells that can run when some name a model that is not here "
                   "(those are recorded as FAILED); without it the sweep refuses to start")
    s.add_argument("--no-report", action="store_true",
                   help="do not write reports/GRID at the end")
    s.add_argument("--max-cells", type=int, default=None, metavar="N",
                   help="refuse grids of more cells than this (default 10,000; or "
                   "VLMPRUNE_MAX_CELLS)")
    s.set_defaults(func=_sweep)

    s = sub.add_parser("plan", help="a grid's cells, their shared stages and what is done")
    s.add_argument("grid")
    s.add_argument("--where", action="append", metavar="KEY=VALUE")
    s.add_argument("--keep-going", action="store_true",
                   help="plan cells whose model is not here (a sweep records them as FAILED)")
    s.add_argument("--max-cells", type=int, default=None, metavar="N",
                   help="refuse grids of more cells than this (default 10,000; or "
                   "VLMPRUNE_MAX_CELLS)")
    s.set_defaults(func=_plan)

    s = sub.add_parser("search", help="Optuna search of per-role sparsity under a budget "
                       "(a grid's search: section)")
    s.add_argument("grid", help="a grid with a search: section")
    s.add_argument("--trials", type=int, default=None, help="COMPLETE trials to reach "
                   "(default: search.trials)")
    s.add_argument("--storage", default=None,
                   help="Optuna storage URL (default sqlite:///results/optuna.db)")
    s.add_argument("--study", default=None, help="study name (default: the grid's name)")
    _executor_flags(s, "trials")
    s.set_defaults(func=_search)

    s = sub.add_parser("server", help="an MLflow tracking server over results/mlflow.db, for "
                       "sweeps on other machines (MLFLOW_TRACKING_URI=http://HOST:PORT)")
    s.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1, this machine only; "
                   "0.0.0.0 for a cluster, with --auth)")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--auth", action="store_true",
                   help="a user and password on every request (MLflow's basic-auth app, "
                   "users in results/basic_auth.db); the first start creates the admin user "
                   "from MLFLOW_AUTH_ADMIN_USERNAME (default admin) and "
                   "MLFLOW_AUTH_ADMIN_PASSWORD; clients set MLFLOW_TRACKING_USERNAME and "
                   "MLFLOW_TRACKING_PASSWORD")
    s.add_argument("--insecure", action="store_true",
                   help="allow a --host other machines reach without --auth: anyone who "
                   "reaches the port can then delete runs, log metrics and upload files")
    s.set_defaults(func=_server)
    s = sub.add_parser("report", help="HTML/LaTeX tables and figures of a grid, from MLflow")
    s.add_argument("grid", nargs="?", help="the grid (its MLflow experiment)")
    s.add_argument("--out", type=Path, default=None, help="folder (default reports/GRID)")
    s.add_argument("--experiment", default=None,
                   help="MLflow experiment to read (default: the grid's name)")
    s.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="two grids or experiments side by side, with the difference")
    s.set_defaults(func=_report)

    s = sub.add_parser("cache", help="the stage cache under results/cache")
    cache_sub = s.add_subparsers(dest="cache_command", required=True)
    v = cache_sub.add_parser("verify", help="check every cached stage against its manifest: "
                             "good, damaged, orphaned")
    v.add_argument("--repair", action="store_true",
                   help="set damaged and orphaned stages aside (renamed, not deleted)")
    v.set_defaults(func=_cache_verify)

    s = sub.add_parser("list", help="the grids in experiments/ with their cell counts")
    s.set_defaults(func=_list)

    s = sub.add_parser("zoo-check", help="accuracy and pruning sensitivity of an embedded model")
    s.add_argument("--model", default="shapes-llava")
    s.add_argument("--out", type=Path, default=Path("results/zoo_check.json"))
    s.set_defaults(func=_zoo_check)

    s = sub.add_parser("prune", help="prune a model with a spec file and save it")
    s.add_argument("spec", type=Path, help="YAML: a prune mapping (or a file with prune:)")
    s.add_argument("--model", default="shapes-llava")
    s.add_argument("--out", type=Path, default=None)
    s.add_argument("--offload", choices=("none", "cpu", "disk"), default="none",
                   help="none: the whole model in memory; disk: one block at a time, read from "
                   "the model's safetensors files and written to --out as it is pruned; cpu: "
                   "the model in CPU memory, one block at a time on the GPU (model.offload)")
    s.add_argument("--spill-activations", type=float, default=None, metavar="GIB",
                   help="offloaded: calibration inputs between blocks held in memory up to "
                   "GIB, the rest written beside the blocks (model.spill_activations)")
    _model_flags(s)
    s.set_defaults(func=_prune)

    s = sub.add_parser("eval", help="score a model (embedded, a path, a saved pruned model) "
                       "on an lmms-eval suite")
    s.add_argument("--model", default="shapes-llava")
    s.add_argument("--suite", default=None,
                   help="shapes (the default), quick or paper (suites.yaml), or one of --suites")
    s.add_argument("--suites", type=Path, default=None,
                   help="a YAML file of your own suites (as a grid's `suites:`)")
    s.add_argument("--tasks", default=None,
                   help="lmms-eval tasks, comma-separated, instead of a suite (e.g. "
                   "textvqa_val,pope; `vlmprune tasks` lists them)")
    s.add_argument("--limit", type=int, default=None, help="documents per task")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--out", type=Path, default=None, help="JSON with metrics and samples")
    _model_flags(s)
    s.set_defaults(func=_eval)

    s = sub.add_parser("tasks", help="the evaluation tasks lmms-eval knows (a group's: its tasks)")
    s.add_argument("pattern", nargs="?", default="", help="a part of the name, or a group")
    s.set_defaults(func=_tasks)

    s = sub.add_parser("inspect", help="show a model's roles, blocks and prunable weights")
    s.add_argument("model", nargs="?", default="shapes-llava")
    _model_flags(s)
    s.set_defaults(func=_models)
    return p


def main(argv: list[str] | None = None) -> int:
    # No hub at run time. huggingface_hub and datasets read these once, when imported, so
    # they are set here, before any command imports them (evaluate() sets them too, for
    # library callers, but by then they may already have been read).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    threads.configure()  # before torch is imported: idle threads sleep, never spin
    # Ctrl-C (SIGINT) stops any command, also one started with SIGINT ignored, as a script's
    # background job is (`vlmprune sweep ... &`): Python then installs no KeyboardInterrupt
    # handler, and such a sweep ran on to exit 0. `setsid vlmprune ...` detaches one instead.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # this command's settings, for its duration only: a flag never reaches the next command
    with settings.using(settings.Settings.from_env(max_cells=getattr(a, "max_cells", None))):
        return _run(a)


def _run(a: argparse.Namespace) -> int:
    try:
        if a.threads is not None and a.threads < 1:  # every command: bad input is refused
            raise UserError(f"--threads {a.threads}: give 1 or more")
        if a.command in COMPUTE and getattr(a, "executor", "local") == "local":
            threads.apply(a.threads)
        elif a.command in COMPUTE:  # its workers compute: this process never imports torch
            threads.count(a.threads)
        return a.func(a)
    except UserError as e:
        print(f"vlmprune: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # the sweep or search marked its run KILLED on the way out
        again = (": what finished is kept; run the same command again to resume"
                 if a.command in ("sweep", "search") else "")
        print(f"vlmprune: interrupted{again}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
