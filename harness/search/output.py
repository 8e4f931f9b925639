"""What a search prints and draws: the trials table, the best against the paper's settings
(each difference with its paired 95% interval and Holm-adjusted p), parameter importances,
and figures under reports/<grid>/search/ (PNG and SVG)."""

from __future__ import annotations

import logging
import warnings

from rich.table import Table

from harness import figstyle
from harness.evaluation import intervals, paired
from harness.paths import reports_dir
from harness.search.space import Space
from harness.search.spec import SearchSpec
from harness.sweep import cache
from harness.sweep.console import console
from harness.sweep.result import CellResult

log = logging.getLogger(__name__)


def _sparsities(t) -> dict[str, float]:
    return {k.removeprefix("sparsity."): v for k, v in t.params.items()
            if k.startswith("sparsity.")}


def rows(study, space: Space) -> list[dict]:
    """One dict per trial: number, state, baseline, sparsity by dimension (the derived one
    included), achieved budget, score."""
    from harness.search.study import info

    out = []
    for t in study.get_trials(deepcopy=False):
        x = _sparsities(t)
        i = info(t)
        if space.spec.budget is not None and len(x) == len(space.free):
            total = sum(space.params.values())
            used = sum(x[n] * space.params[n] for n in space.free)
            x[space.names[-1]] = (space.spec.budget * total - used) / space.params[space.names[-1]]
        out.append({"trial": t.number, "state": t.state.name, "x": x,
                    "baseline": i["baseline"], "achieved": i.get("achieved"),
                    "cell": i.get("cell"), "objective": i.get("objective"),
                    # a stopped trial's value is its quick evaluation's, not a result
                    "score": t.values[0] if t.values and t.state.name == "COMPLETE" else None,
                    "note": (i.get("failure") or i.get("raced")
                             or ("infeasible" if i.get("violation") else "")
                             or ("duplicate" if i.get("duplicate") else "")
                             or (f"stopped early (quick {i['pruned_at']:.3f})"
                                 if "pruned_at" in i else ""))})
    return out


def summary(study, s: SearchSpec, space: Space, seconds: float) -> None:
    table = Table(title=f"search {study.study_name}: {s.trials} trials wanted, budget "
                        f"{s.budget if s.budget is not None else 'none'} ({seconds:.0f} s now)")
    for col in ("trial", *space.names, "achieved", "score", "state", "note"):
        table.add_column(col, justify="left" if col in ("state", "note") else "right")
    all_rows = rows(study, space)
    shown = [r for r in all_rows if r["state"] in ("COMPLETE", "FAIL", "RUNNING")
             or r["note"].startswith("stopped")]
    for r in shown:
        table.add_row(str(r["trial"]), *[f"{r['x'].get(n, float('nan')):.3f}"
                                         for n in space.names],
                      "-" if r["achieved"] is None else f"{r['achieved']:.4f}",
                      "-" if r["score"] is None else f"{r['score']:.4f}",
                      r["state"].lower(), r["baseline"] or r["note"])
    console.print(table)
    skipped = len(all_rows) - len(shown)
    if skipped:
        console.print(f"{skipped} trials dropped before any work (infeasible split or a "
                      "repeat of another trial)")
    done = [r for r in all_rows if r["state"] == "COMPLETE"]
    if not done or s.second:
        return
    best = max(done, key=lambda r: r["score"])
    base = {r["baseline"]: r for r in done if r["baseline"]}
    line = ", ".join(f"{n} {v:.3f}" for n, v in best["x"].items())
    console.print(f"[bold]best[/]: trial {best['trial']} ({line}): {best['score']:.4f}")
    names = sorted(base)
    tests = _paired(best, [base[n] for n in names])
    for name, test in zip(names, tests, strict=True):
        r = base[name]
        console.print(f"  {name:13s} {r['score']:.4f}  ({best['score'] - r['score']:+.4f} "
                      f"for the best{test})")
    _importances(study, console)


def _paired(best: dict, others: list[dict]) -> list[str]:
    """For each of `others`, the best trial's difference from it with its 95% interval and
    Holm-adjusted p (paired on the documents both answered: evaluation/paired.py), read
    from the trials' eval stages; "" where a stage is gone or holds no per-document
    scores."""
    metric = intervals.metric_of(best["objective"] or "")
    found: dict[int, paired.Difference] = {}
    mine = _rows(best, metric)
    for i, r in enumerate(others):
        theirs = _rows(r, metric)
        if metric is not None and mine is not None and theirs is not None:
            d = paired.compare([theirs], [mine], metric)
            if d is not None:
                found[i] = d
    adjusted = dict(zip(found, paired.holm([d.p for d in found.values()]), strict=True))
    return [f": [{found[i].lo:+.4f}, {found[i].hi:+.4f}], p {adjusted[i]:.3g} "
            f"({found[i].test}, Holm)" if i in found else "" for i in range(len(others))]


def _rows(trial: dict, metric: intervals.Metric | None) -> list[dict] | None:
    """A trial's documents of the metric's task, from its eval stage."""
    if metric is None or not trial.get("cell") or not trial.get("objective"):
        return None
    root = cache.open("eval", trial["cell"])
    if root is None:
        return None
    try:
        samples = CellResult.read(root).samples
    except Exception:  # noqa: BLE001 - an unreadable stage: the summary goes without
        return None
    return samples.get(trial["objective"].partition("/")[0])


def _importances(study, console) -> None:
    import optuna

    if len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) < 3:
        return
    try:
        imp = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as e:  # a single parameter, or constant values
        log.debug("no importances: %s", e)
        return
    if len(imp) > 1:
        console.print("parameter importances (fANOVA): " +
                      ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))


def figures(study, s: SearchSpec, grid_name: str) -> None:
    """Optimization history, slice (and contour with two or more free dimensions), Pareto
    front when there are two objectives; PNG and SVG under reports/<grid>/search/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as om

    figstyle.apply()  # the reports' look, and SVGs that rerun to the same bytes
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return
    out = reports_dir() / grid_name / "search"
    out.mkdir(parents=True, exist_ok=True)
    free = sorted({k for t in complete for k in t.params if k.startswith("sparsity.")})
    plots = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib plots are "experimental"
        if s.second:
            plots["pareto_front"] = lambda: om.plot_pareto_front(
                study, target_names=["score", s.second])
        else:
            plots["history"] = lambda: om.plot_optimization_history(study)
            plots["slice"] = lambda: om.plot_slice(study, params=free)
            if len(free) >= 2:
                plots["contour"] = lambda: om.plot_contour(study, params=free[:2])
        for name, draw in plots.items():
            try:
                ax = draw()
            except (ValueError, RuntimeError) as e:
                log.debug("no %s figure: %s", name, e)
                continue
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            for ext in ("png", "svg"):
                fig.savefig(out / f"{name}.{ext}", dpi=130,  # no date: reruns diff clean
                            metadata={"Date": None} if ext == "svg" else None)
            plt.close(fig)
