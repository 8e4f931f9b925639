"""A cell's result, typed: what the eval stage returns, what its cache folder holds, and how
MLflow holds it. The one place that knows the result's layout in both stores.

- The eval stage's folder: `result.json` (metrics, sparsity, the prune and recover stages'
  reports, seconds; indented by one) and `samples.json` (the per-sample predictions).
- MLflow, one child run per cell: the task metrics under their own names (`task/metric`),
  and one metric per part under its prefix: `sparsity/<role>` (achieved), `target/<role>`
  (the prune report's targets), `time/<stage>` (seconds), `block/<role>.<NN>` (achieved
  per block, from the prune report's layers), `lo/<task>/<metric>` and `hi/...` (the
  metric's 95% bootstrap interval over documents); the two reports and the samples (every
  document's own scores: what intervals and paired tests are computed from) as JSON
  artifacts; each task's headline metric as the tag `vlmprune.headline` (comma-separated). A
  result read back from a run (`from_run`) has its metrics, sparsity, seconds and headline;
  the reports and samples stay in the run's artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the MLflow prefix of each part of a result logged beside the task metrics (a task metric
# is `task/metric`, whose task is none of these)
PREFIXES = ("sparsity", "target", "time", "block", "lo", "hi")
ARTIFACTS = {"prune": "sparsity_report.json", "recover": "recovery_report.json",
             "samples": "eval_samples.json"}
RESULT, SAMPLES = "result.json", "samples.json"  # the eval stage's files
HEADLINE_TAG = "vlmprune.headline"


@dataclass
class CellResult:
    """What a cell's evaluation gave: task metrics (`shapes_vqa/exact_match`: value),
    achieved sparsity by role (and `overall`, `nonzero`), the prune and recover stages'
    reports, seconds by stage (prune, recover, evaluate), the per-sample predictions and
    each task's headline metric (`task/metric`, the first its metric list names; empty for
    results stored before it was recorded), and each metric's 95% bootstrap interval over
    the documents (`intervals.py`; empty for results stored before intervals were kept)."""

    metrics: dict[str, float]
    sparsity: dict[str, float]
    prune: dict[str, Any] = field(default_factory=dict)
    recover: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        """The run's tags this result adds: the headline metrics, when recorded."""
        return {HEADLINE_TAG: ",".join(self.headline)} if self.headline else {}

    def to_mlflow(self) -> dict[str, float]:
        """The run's metrics: task metrics, then `sparsity/`, `target/`, `time/`, `block/`."""
        from harness.pruning.report import by_block  # numpy

        values = dict(self.metrics)
        values |= {f"sparsity/{k}": v for k, v in self.sparsity.items()}
        values |= {f"target/{k}": v.get("target", 0.0)
                   for k, v in self.prune.get("roles", {}).items()}
        values |= {f"time/{k}": v for k, v in self.seconds.items()}
        values |= {f"block/{k}": achieved for k, (_, achieved) in by_block(self.prune).items()}
        values |= {f"lo/{k}": lo for k, (lo, _) in self.intervals.items()}
        values |= {f"hi/{k}": hi for k, (_, hi) in self.intervals.items()}
        return {k: float(v) for k, v in values.items()}

    def artifacts(self) -> dict[str, Any]:
        """The run's JSON artifacts: file name -> content."""
        return {ARTIFACTS["prune"]: self.prune, ARTIFACTS["recover"]: self.recover,
                ARTIFACTS["samples"]: self.samples}

    @classmethod
    def from_mlflow(cls, metrics: dict[str, float]) -> CellResult:
        """A result from a run's metrics (`to_mlflow`'s): metrics, sparsity, seconds,
        intervals."""
        parts: dict[str, dict[str, float]] = {p: {} for p in ("", *PREFIXES)}
        for k, v in metrics.items():
            head, rest = split(k)
            parts[head][rest] = v
        both = [k for k in parts["lo"] if k in parts["hi"]]
        return cls(metrics=parts[""], sparsity=parts["sparsity"], seconds=parts["time"],
                   intervals={k: (parts["lo"][k], parts["hi"][k]) for k in both})

    @classmethod
    def from_run(cls, run: Any) -> CellResult:
        """A result from an MLflow run (its metrics, see `from_mlflow`, and its headline)."""
        res = cls.from_mlflow(run.data.metrics)
        res.headline = headlines(run.data.tags)
        return res

    @classmethod
    def read(cls, folder: Path) -> CellResult:
        """The result an eval stage's folder holds (`write`'s files)."""
        stored = json.loads((folder / RESULT).read_text())
        return cls(metrics=stored["metrics"], sparsity=stored["sparsity"],
                   prune=stored["prune"], recover=stored["recover"],
                   seconds=stored["seconds"],
                   samples=json.loads((folder / SAMPLES).read_text()),
                   headline=stored.get("headline", []),
                   intervals={k: (lo, hi) for k, (lo, hi)
                              in stored.get("intervals", {}).items()})

    def write(self, folder: Path) -> None:
        """The eval stage's files: result.json (all but the samples) and samples.json."""
        stored: dict[str, Any] = {"metrics": self.metrics, "sparsity": self.sparsity,
                                  "prune": self.prune, "recover": self.recover,
                                  "seconds": self.seconds}
        if self.headline:
            stored["headline"] = self.headline
        if self.intervals:
            stored["intervals"] = {k: list(v) for k, v in self.intervals.items()}
        (folder / RESULT).write_text(json.dumps(stored, indent=1, default=str))
        (folder / SAMPLES).write_text(json.dumps(self.samples))


def headlines(tags: dict[str, str]) -> list[str]:
    """The headline metrics a run's tags hold (`CellResult.tags`)."""
    return [h for h in tags.get(HEADLINE_TAG, "").split(",") if h]


def split(name: str) -> tuple[str, str]:
    """An MLflow metric's part and key: `sparsity/vision` -> ("sparsity", "vision"); a task
    metric -> ("", its name)."""
    head, sep, rest = name.partition("/")
    return (head, rest) if sep and head in PREFIXES else ("", name)


def columns(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics as a report's columns, in their order: a part's as `<part>.<key>`
    (`sparsity.vision`, `time.evaluate`), task metrics under their own names."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        head, rest = split(k)
        out[f"{head}.{rest}" if head else k] = v
    return out
