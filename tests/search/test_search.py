"""Optuna searches of per-role sparsity: trials are cells (stage cache, MLflow), the budget
holds, baselines come first, malformed sections are one line, kills and a second process
neither lose nor repeat a trial."""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness.cli import main
from harness.search.study import alive, info
from harness.sweep.tracking import TAG_KIND, tracking_uri
from tests.sweep.runs import kill_once_working

TINY = {
    "name": "tiny_search",
    "description": "a 4-trial search for tests",
    "base": {"model": {"name": "shapes-llava"},
             "prune": {"method": "wanda", "calibration": {"samples": 16, "batch_size": 16}},
             "recover": {"method": "none"}, "eval": {"suite": "quick", "limit": 20}},
    "search": {"budget": 0.5, "trials": 4, "pruner": "none",
               "roles": {"vision": {"low": 0.0, "high": 0.95},
                         "language": {"low": 0.0, "high": 0.95}}},
}


def write(tmp_path, data: dict, name: str = "tiny_search.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))  # role order: the last is derived
    return p


def load_study(results, name: str = "tiny_search"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{results / 'optuna.db'}")


@pytest.mark.integration
def test_search_runs_trials_as_cells_under_the_budget(tmp_path, results, capsys):
    grid = write(tmp_path, TINY)
    assert main(["search", str(grid)]) == 0
    # the best against each baseline, paired on the documents both answered
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("equal "))
    assert "for the best: [" in line and "(mcnemar, Holm)" in line
    study = load_study(results)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 4
    assert not study.get_trials(states=(TrialState.RUNNING,))
    baselines = [t.user_attrs.get("vlmprune.baseline") for t in study.trials[:2]]
    assert baselines == ["equal", "language_only"]  # vision-only needs 110%: infeasible
    for t in done:
        assert abs(info(t)["achieved"] - 0.5) <= 0.005
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name("tiny_search-search")
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'cell'")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.metrics["shapes_vqa/exact_match"] for r in runs} == {t.values[0]
                                                                     for t in done}
    figs = tmp_path / "reports" / "tiny_search" / "search"
    assert (figs / "history.png").is_file() and (figs / "slice.svg").is_file()
    # the trials' report: a table of the trials, and the search's figures on the page
    assert main(["report", "tiny_search", "--experiment", "tiny_search-search"]) == 0
    page = (tmp_path / "reports" / "tiny_search" / "index.html").read_text()
    assert 'id="fig-search-history"' in page and 'id="fig-search-slice"' in page
    # a second run has nothing left to do, and says so by exit 0 without new trials
    assert main(["search", str(grid)]) == 0
    assert len(load_study(results).trials) == len(study.trials)


BAD = [
    ({"search": [1, 2]}, "search"),
    ({"search": {"budget": 1.5}}, "budget"),
    ({"search": {"budget": 0}}, "budget"),
    ({"search": {"budget": 0.5, "roles": {"visoin": {}, "language": {}}}}, "visoin"),
    ({"search": {"budget": 0.5, "roles": {"vision": {"low": 0.6, "high": 0.3},
                                          "language": {}}}}, "roles.vision"),
    ({"search": {"budget": 0.5, "roles": {"vision": {}, "language": {"groups": 0}}}},
     "roles.language.groups"),
    ({"search": {"budget": 0.5, "roles": {"vision": {}, "language": {"groups": 9}}}},
     "search.roles.language.groups"),
    ({"search": {"budget": 0.5, "roles": {"vision": {"high": 0.3},
                                          "language": {"high": 0.3}}}}, "search.budget"),
    ({"search": {"budget": 0.5, "sampler": "annealing"}}, "sampler"),
    ({"search": {"budget": 0.5, "trails": 5}}, "trails"),
    ({"search": {"roles": {"vision": {}, "language": {}}}}, "second objective"),
    ({"search": {"budget": 0.5, "choices": {"prune.method": []}}}, "choices"),
    ({"search": {"budget": 0.5, "sampler": "grid"}}, "step"),
    ({"search": {"budget": 0.5, "roles": {"vision": {"log": True}, "language": {}}}},
     "log scale needs low > 0"),
    ({"base": {"prune": {"pattern": "2:4"}}, "search": {"budget": 0.5}}, "base.prune.pattern"),
    ({"search": {"budget": 0.5, "choices": {"prune.methd": ["wanda"]}}}, "prune.methd"),
    ({"search": {"budget": 0.5, "choices": {"prune.method": ["wanda", "wnada"]}}},
     "search.choices.prune.method"),
    ({"search": {"budget": 0.5, "choices": {"prune.pattern": ["3:2"]}}}, "'3:2'"),
    ({"search": {"budget": 0.5, "choices": {"prune.pattern": ["unstructured", "2:4"]}}},
     "search.choices.prune.pattern"),
    ({"search": {"budget": 0.5, "choices": {"prune": [None]}}}, "search.choices.prune"),
    ({"search": {"budget": 0.5, "objective": "shapes_vqa/acc"}}, "search.objective"),
    ({"base": {"prune": {"method": "wanda"}, "eval": {"suite": "quick"}},
      "search": {"budget": 0.5, "objective": "shapes_caption/cider"}}, "shapes_vqa/"),
    ({"search": {"budget": 0.5, "roles": {"vision": {}, "language": {"groups": 60}}}},
     "60 groups"),
    ({"base": {"prune": {"distribution": "owl"}}, "search": {"budget": 0.5}}, "search.roles"),
    ({"base": {"prune": {"method": "wanda"}, "eval": {"suite": "shapez"}},
      "search": {"budget": 0.5}}, "eval.suite"),
    ({"base": {"prune": {"method": "wanda"}, "model": {"name": "no-such-model"}},
      "search": {"budget": 0.5}}, "model.name"),
]


@pytest.mark.integration
@pytest.mark.parametrize("change, field", BAD, ids=[b[1] for b in BAD])
def test_malformed_search_section_is_one_line_and_writes_nothing(tmp_path, results, capsys,
                                                                 change, field):
    data = {"name": "bad", "base": {"prune": {"method": "wanda"}}} | change
    grid = write(tmp_path, data, "bad.yaml")
    assert main(["search", str(grid)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml" in err and field in err, err
    assert not results.exists()


@pytest.mark.integration
def test_trials_flag_is_checked(tmp_path, results, capsys):
    assert main(["search", str(write(tmp_path, TINY)), "--trials", "0"]) == 2
    assert "--trials 0" in capsys.readouterr().err and not results.exists()


def search_process(grid, results, trials: int):
    env = {**os.environ, "VLMPRUNE_RESULTS": str(results), "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "search", str(grid),
                             "--trials", str(trials)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def running_trial(proc, results) -> None:
    """Once `proc`'s search runs a trial of its own."""
    running_workers(proc, results, own=True)


@pytest.mark.system
def test_kill_minus_9_then_resume_completes_exactly_the_trials(tmp_path, results):
    grid = write(tmp_path, TINY)
    proc = search_process(grid, results, 4)
    kill_once_working(proc, results, within=6)
    assert main(["search", str(grid), "--trials", "4"]) == 0
    study = load_study(results)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 4
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4  # none repeated
    assert len([t for t in done if t.user_attrs.get("vlmprune.baseline") == "equal"]) == 1


@pytest.mark.system
def test_two_processes_share_one_study_without_repeating_a_trial(tmp_path, results):
    """Another process's search and this one's, on one study at once: the other is seen
    running a trial before this one starts (the two then overlap)."""
    grid = write(tmp_path, TINY)
    other = search_process(grid, results, 5)
    running_trial(other, results)
    assert main(["search", str(grid), "--trials", "5"]) == 0
    _, err = other.communicate(timeout=600)
    assert other.returncode == 0, err[-2000:]
    study = load_study(results)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) >= 5
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)
    pids = {info(t)["pid"] for t in done}
    assert pids == {other.pid, os.getpid()}  # both processes ran trials
    for name in ("equal", "language_only"):
        assert len([t for t in done if t.user_attrs.get("vlmprune.baseline") == name]) == 1


@pytest.mark.integration
def test_groups_and_a_second_objective_give_a_pareto_front(tmp_path, results):
    """Per-block-group language sparsity, no budget, score vs vision sparsity (NSGA-II)."""
    data = copy.deepcopy(TINY)
    data["search"] = {"trials": 3, "second": "vision_sparsity", "baselines": False,
                      "roles": {"vision": {"low": 0.1, "high": 0.6},
                                "language": {"low": 0.1, "high": 0.6, "groups": 2}}}
    grid = write(tmp_path, data)
    assert main(["search", str(grid)]) == 0
    study = load_study(results)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 3 and all(len(t.values) == 2 for t in done)
    assert {"sparsity.vision", "sparsity.language.0", "sparsity.language.1"} == set(
        done[0].params)
    for t in done:  # the second objective is the vision sparsity the cell achieved
        assert t.values[1] == pytest.approx(t.params["sparsity.vision"], abs=0.01)
    assert (tmp_path / "reports" / "tiny_search" / "search" / "pareto_front.svg").is_file()


@pytest.mark.integration
def test_grid_sampler_replays_a_grid(tmp_path, results):
    data = copy.deepcopy(TINY)
    data["search"] |= {"sampler": "grid", "trials": 2, "baselines": False,
                       "roles": {"vision": {"low": 0.4, "high": 0.6, "step": 0.1},
                                 "language": {"low": 0.0, "high": 0.95, "step": 0.05}}}
    assert main(["search", str(write(tmp_path, data))]) == 0
    done = load_study(results).get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2
    assert {round(t.params["sparsity.vision"], 3) for t in done} <= {0.4, 0.5, 0.6}


# --- trials on workers (--executor pool) -------------------------------------------------

def check_parallel_study(results, trials: int) -> list:
    study = load_study(results)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == trials
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len({tuple(sorted(t.params.items())) for t in done}) == trials  # none repeated
    for name in ("equal", "language_only"):  # each baseline once, whoever ran it
        assert len([t for t in done if t.user_attrs.get("vlmprune.baseline") == name]) == 1
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name("tiny_search-search")
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'cell'")
    assert sorted(r.data.tags["vlmprune.trial"] for r in runs
                  if r.info.status == "FINISHED") == sorted(str(t.number) for t in done)
    return done


@pytest.mark.system
def test_search_trials_run_on_a_pool_of_workers(tmp_path, results, capsys):
    grid = write(tmp_path, TINY)
    assert main(["search", str(grid), "--executor", "pool", "--workers", "2"]) == 0
    done = check_parallel_study(results, 4)
    assert len({info(t)["pid"] for t in done}) == 2  # both workers ran trials
    assert os.getpid() not in {info(t)["pid"] for t in done}  # none ran here
    out = capsys.readouterr().out
    assert "running 2 trial loops" in out and "search tiny_search: 4 trials wanted" in out
    assert (tmp_path / "reports" / "tiny_search" / "search" / "history.png").is_file()


def pool_search(grid, results, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "VLMPRUNE_RESULTS": str(results), "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "search", str(grid),
                             "--executor", "pool", "--workers", "2", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def running_workers(proc, results, own: bool = False) -> list[int]:
    """The pids of the workers running trials of `proc`'s search, once there are some (with
    `own`, of `proc` itself)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if not (results / "optuna.db").exists():
            continue
        try:
            running = load_study(results).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # noqa: BLE001 - the study is being created
            continue
        pids = [info(t)["pid"] for t in running if info(t)["pid"] is not None
                and (info(t)["pid"] == proc.pid) == own]
        if pids:
            return pids
    if proc.poll() is not None:
        pytest.fail(f"the search ended ({proc.returncode}) before a worker was seen running a "
                    f"trial: {proc.stderr.read()[-2000:]}")
    pytest.fail("no worker was seen running a trial")


@pytest.mark.system
def test_search_worker_killed_mid_trial_is_started_again(tmp_path, results):
    """SIGKILL a worker while it runs a trial: that trial is FAIL, the worker starts again,
    the study still reaches its trials, none repeated."""
    grid = write(tmp_path, TINY)
    proc = pool_search(grid, results)
    victim = running_workers(proc, results)[0]
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert "search worker" in err and "died (worker process killed by SIGKILL)" in err
    study = load_study(results)
    killed = [t for t in study.trials if info(t)["pid"] == victim
              and t.state == TrialState.FAIL]
    assert len(killed) == 1  # the trial it was running, marked failed, not left RUNNING
    check_parallel_study(results, 4)


@pytest.mark.system
def test_killed_search_takes_its_workers_with_it(tmp_path, results):
    """SIGKILL the search itself mid-trial: its workers die with it (none goes on running
    trials for nobody), and the next search marks their trials FAIL and finishes."""
    grid = write(tmp_path, TINY)
    proc = pool_search(grid, results, "--trials", "60")
    workers = running_workers(proc, results)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 300  # generous: the kernel reaps them, a busy machine late
    while time.monotonic() < deadline and any(alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(alive(p) for p in workers), "a worker outlived its search"
    complete = len(load_study(results).get_trials(states=(TrialState.COMPLETE,)))
    time.sleep(3)
    assert len(load_study(results).get_trials(states=(TrialState.COMPLETE,))) == complete
    assert main(["search", str(grid), "--trials", str(complete + 1)]) == 0
    study = load_study(results)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert {info(t)["pid"] for t in study.get_trials(states=(TrialState.FAIL,))} >= set(workers)


@pytest.mark.system
def test_dead_trials_are_those_of_gone_processes_or_ownerless_under_the_lock(tmp_path):
    """fail_dead_trials: a RUNNING trial whose owner process is gone (a zombie counts as
    gone) is FAIL; one with no owner only when the caller holds the lock under which every
    search asks and records the owner (a process killed in between left it)."""
    from harness.search.study import OWNER, fail_dead_trials, owner

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.05)  # exited, not reaped: a zombie
    assert alive(os.getpid()) and not alive(child.pid)
    mine, gone, ownerless = study.ask(), study.ask(), study.ask()
    mine.set_user_attr(OWNER, owner())
    gone.set_user_attr(OWNER, [owner()[0], child.pid])
    assert fail_dead_trials(study) == 1  # the zombie's
    assert fail_dead_trials(study, locked=True) == 1  # the ownerless one
    states = {t.number: t.state for t in study.trials}
    assert states == {mine.number: TrialState.RUNNING, gone.number: TrialState.FAIL,
                      ownerless.number: TrialState.FAIL}
    child.wait()


@pytest.mark.integration
def test_a_race_stops_a_trial_far_behind_the_best(tmp_path, results, capsys):
    """`pruner: race`: a split that collapses (nearly all of the language model pruned)
    stops after the first slice, paired with the best trial on the same questions."""
    data = copy.deepcopy(TINY)
    data["base"]["eval"]["limit"] = 40
    data["search"] |= {"pruner": "race", "race": {"start": 10}, "trials": 4,
                       "roles": {"vision": {"low": 0.0, "high": 0.3},
                                 "language": {"low": 0.0, "high": 0.95}}}
    assert main(["search", str(write(tmp_path, data))]) == 0
    study = load_study(results)
    raced = [t for t in study.trials if info(t).get("raced")]
    assert raced and all(t.state == TrialState.PRUNED for t in raced)
    assert all(re.fullmatch(r"stopped at (10|20|40) documents, behind trial \d+ by -0\.\d+ "
                            r"\[-\d\.\d+, -0\.\d+\]", info(t)["raced"]) for t in raced)
    assert all(t.params["sparsity.vision"] < 0.3 for t in raced)  # language pruned > 75%
    assert not any(info(t)["baseline"] for t in raced)  # the paper's settings run whole
    assert info(raced[0])["raced"] in capsys.readouterr().out  # in the trials table
