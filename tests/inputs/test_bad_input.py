"""Bad input found before any work: exit 2, one stderr line naming the file and the field (or
the flag), no traceback, nothing written, quickly. Each case was let through or crashed
before (issue 17). Most cases call `main()` in this process (its CPU time bounded); the
canaries, one or more of each kind, run the CLI as its own process, where its peak memory and
CPU time from start-up to refusal are measured too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
BASE = "name: bad\nbase: {prune: {method: wanda, sparsity: 0.5}}\n"

GRIDS = {
    "duplicate_top": ("name: bad\nbase: {}\nbase: {prune: null}\n", "key 'base' given twice"),
    "duplicate_nested": ("name: bad\nbase:\n  prune:\n    method: wanda\n    sparsity: 0.5\n"
                         "  prune:\n    method: magnitude\n", "key 'prune' given twice"),
    "duplicate_in_flow": ("name: bad\nbase: {prune: {method: wanda, method: magnitude}}\n",
                          "key 'method' given twice"),
    "huge_product": (BASE + "axes:\n"
                     f"  - prune.calibration.samples: {list(range(1, 101))}\n"
                     f"  - prune.calibration.seed: {list(range(100))}\n"
                     f"seeds: {list(range(1000))}\n", "10,000,000 cells"),
    "alias_bomb": ("name: bad\nbase: {}\nx0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)) +
        "include: [{prune: {method: wanda}, extra: *a8}]\n", "expands to more than"),
    "negative_seed": (BASE + "seeds: [-1]\n", "field 'seeds.0'"),
    "boolean_seed": (BASE + "seeds: [true]\n", "field 'seeds.0'"),
    "huge_seed": (BASE + "seeds: [99999999999]\n", "field 'seeds.0'"),
    "late_exclude_key": (BASE + "axes: [{prune.sparsity: [0.5, 0.6]}]\n"
                         "exclude: [{prune.method: wanda}, {prune.bogus: 1}]\n",
                         "exclude[1].prune.bogus"),
    "unquoted_nm": (BASE + "axes: [{prune.pattern: [unstructured, 2:4]}]\n",
                    'quote it: "2:4"'),
}


class Ran(subprocess.CompletedProcess):
    peak_mb: float | None = None  # measured for a process of its own only
    cpu_s: float = 0.0  # user + system CPU time: unlike wall time, another user's load
    # on this shared machine does not move it


# A small launcher between pytest and the command: a child's peak RSS counts the pages it
# shares with its parent at fork, and pytest's own can exceed a gigabyte by now.
LAUNCHER = ("import os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[2:])\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "open(sys.argv[1], 'w').write(f'{usage.ru_maxrss} "
            "{usage.ru_utime + usage.ru_stime}')\n"
            "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run(*args: str, cwd: Path, env: dict | None = None) -> Ran:
    """`vlmprune ARGS` in its own process in `cwd`, with its peak memory (its own, from
    wait4)."""
    e = {**os.environ, **(env or {})}
    with tempfile.TemporaryDirectory() as tmp:
        peak = Path(tmp) / "peak"
        p = subprocess.run([sys.executable, "-c", LAUNCHER, str(peak), sys.executable, "-m",
                            "harness.cli", *args], cwd=cwd, env=e, capture_output=True,
                           text=True, timeout=600)
        ran = Ran(p.args, p.returncode, p.stdout, p.stderr)
        rss, cpu = peak.read_text().split()
        ran.peak_mb, ran.cpu_s = int(rss) / 1024, float(cpu)  # KiB on Linux
    return ran


def refused(p: Ran, words: str, max_mb: int = 1024, max_cpu: float = 20) -> None:
    """Exit 2, one stderr line with `words`, no traceback, within `max_cpu` seconds of CPU
    time (generous: it tells a check from a model load, and no other user's load moves it)
    and `max_mb` of memory."""
    assert p.returncode == 2, p.stderr[-2000:]
    assert words in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.cpu_s < max_cpu, f"{p.cpu_s:.1f} s of CPU"
    assert p.peak_mb is None or p.peak_mb < max_mb, f"{p.peak_mb:.0f} MB"


def in_process(args: tuple[str, ...], capsys) -> Ran:
    """`main(ARGS)` here, with the CPU time it took (this process's: every thread)."""
    capsys.readouterr()
    start = time.process_time()
    try:
        code = main(list(args))
    except SystemExit as e:  # a flag error: argparse exits
        code = e.code if isinstance(e.code, int) else 1
    cpu = time.process_time() - start
    out, err = capsys.readouterr()
    ran = Ran(list(args), code, out, err)
    ran.cpu_s = cpu
    return ran


def tiered(cases, canaries: set[str]) -> list:
    """The cases as parameters: the canaries `system` (a process of their own), the rest
    `unit` (in this process)."""
    return [pytest.param(c, id=c, marks=pytest.mark.system if c in canaries else
                         pytest.mark.unit) for c in sorted(cases)]


@pytest.fixture
def vlmprune(request, capsys, monkeypatch):
    """`vlmprune(*args, cwd=, env=)`: the CLI in its own process for a `system` test, through
    `main()` in this one (in `cwd`, with `env` set) for the others."""
    own_process = request.node.get_closest_marker("system") is not None

    def call(*args: str, cwd: Path, env: dict | None = None) -> Ran:
        if own_process:
            return run(*args, cwd=cwd, env=env)
        with monkeypatch.context() as m:
            m.chdir(cwd)
            for k, v in (env or {}).items():
                m.setenv(k, v)
            return in_process(args, capsys)
    return call


@pytest.fixture
def scratch(tmp_path):
    """A folder to run in, with its own (absent) results and reports folders (as `env`)."""
    env = {"VLMPRUNE_RESULTS": str(tmp_path / "results"),
           "VLMPRUNE_REPORTS": str(tmp_path / "reports")}
    return tmp_path, env


def nothing_written(tmp_path: Path, *keep: str) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


@pytest.mark.parametrize("case", tiered(GRIDS, {"huge_product", "alias_bomb"}))
def test_bad_grid(case, scratch, vlmprune):
    tmp_path, env = scratch
    text, words = GRIDS[case]
    (tmp_path / "bad.yaml").write_text(text)
    p = vlmprune("plan", "bad.yaml", cwd=tmp_path, env=env)
    refused(p, words)
    assert "bad.yaml" in p.stderr
    nothing_written(tmp_path, "bad.yaml")


@pytest.mark.unit
def test_binary_grid(scratch, vlmprune):
    tmp_path, env = scratch
    (tmp_path / "bad.yaml").write_bytes(bytes(range(256)) * 4)
    p = vlmprune("sweep", "bad.yaml", cwd=tmp_path, env=env)
    refused(p, "not a text grid file")
    nothing_written(tmp_path, "bad.yaml")


@pytest.mark.unit
def test_cell_limit_can_be_raised(scratch, vlmprune):
    tmp_path, env = scratch
    (tmp_path / "big.yaml").write_text(BASE + "axes: [{prune.calibration.seed: [0, 1, 2]}]\n"
                                       "seeds: [0, 1, 2, 3]\n")
    p = vlmprune("plan", "big.yaml", "--max-cells", "5", cwd=tmp_path, env=env)
    refused(p, "12 cells (axes 3, plus 0 included, × 4 seeds)")
    assert "--max-cells" in p.stderr
    assert vlmprune("plan", "big.yaml", "--max-cells", "12", cwd=tmp_path,
                    env=env).returncode == 0


SPECS = {
    "a_list": ("- method: wanda\n", "a list, not a mapping"),
    "a_scalar": ("wanda\n", "a str, not a mapping"),
    "empty": ("", "empty; a prune spec is a mapping"),
    "prune_null": ("prune: null\n", "field 'prune': null"),
    "extra_key": ("prune: {method: wanda}\nrecover: {method: lora}\n",
                  "field 'recover': unknown key beside 'prune:'"),
    "duplicate": ("method: wanda\nmethod: magnitude\n", "key 'method' given twice"),
    "unquoted_nm": ("pattern: 2:4\n", 'quote it: "2:4"'),
}


@pytest.mark.parametrize("case", tiered(SPECS, {"duplicate"}))
def test_bad_prune_spec(case, scratch, vlmprune):
    tmp_path, env = scratch
    text, words = SPECS[case]
    (tmp_path / "spec.yaml").write_text(text)
    p = vlmprune("prune", "spec.yaml", cwd=tmp_path, env=env)
    refused(p, words)
    assert "spec.yaml" in p.stderr
    nothing_written(tmp_path, "spec.yaml")


@pytest.mark.unit
def test_bad_calibration_line_is_one_line(scratch, vlmprune):
    tmp_path, env = scratch
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "cal.jsonl").write_text('{"image": "a.png", "text": "hi"}\n{"image": oops}\n')
    (tmp_path / "spec.yaml").write_text("method: wanda\ncalibration: {source: cal.jsonl}\n")
    p = vlmprune("prune", "spec.yaml", cwd=tmp_path, env=env)
    refused(p, "prune.calibration.source: cal.jsonl: line 2 is not JSON")
    (tmp_path / "cal.jsonl").write_text('{"image": "b.png", "text": "hi"}\n')
    p = vlmprune("prune", "spec.yaml", cwd=tmp_path, env=env)
    refused(p, "line 1: image 'b.png' not found")


@pytest.mark.unit
def test_prune_out_on_an_existing_file_fails_first(scratch, vlmprune):
    tmp_path, env = scratch
    (tmp_path / "spec.yaml").write_text("method: magnitude\n")
    (tmp_path / "taken").write_text("precious")
    p = vlmprune("prune", "spec.yaml", "--out", "taken", cwd=tmp_path, env=env)
    refused(p, "--out taken: a file is there")
    assert (tmp_path / "taken").read_text() == "precious"


@pytest.mark.parametrize("flags, words", [
    pytest.param(["--limit", "0"], "--limit 0: give 1 or more", marks=pytest.mark.system),
    pytest.param(["--limit", "-3"], "--limit -3: give 1 or more", marks=pytest.mark.unit),
    pytest.param(["--batch-size", "0"], "--batch-size 0", marks=pytest.mark.unit),
    pytest.param(["--limit", "x"], "invalid int value", marks=pytest.mark.unit)])
def test_bad_eval_flags(flags, words, scratch, vlmprune):
    tmp_path, env = scratch
    p = vlmprune("eval", *flags, cwd=tmp_path, env=env)
    refused(p, words)
    nothing_written(tmp_path)  # the test split is not materialized first


@pytest.mark.unit
def test_list_works_from_any_folder_and_reads_extra_folders(tmp_path, vlmprune):
    extra = tmp_path / "mine"
    extra.mkdir()
    (extra / "my_grid.yaml").write_text("name: my_grid\ndescription: a grid of mine\n"
                                        "base: {prune: null}\n")
    p = vlmprune("list", cwd=tmp_path, env={"VLMPRUNE_EXPERIMENTS": str(extra)})
    assert p.returncode == 0, p.stderr
    assert "modality_ratio" in p.stdout and "my_grid" in p.stdout
    p = vlmprune("plan", "modality_choice", cwd=tmp_path,
            env={"VLMPRUNE_RESULTS": str(tmp_path / "results")})
    assert p.returncode == 0 and "modality_choice" in p.stdout


LATE = {  # found only when the cell ran, after other cells' pruning
    "unknown_suite": ("eval: {suite: shapez}",
                      "field 'eval.suite': unknown evaluation suite 'shapez'"),
    "nm_width": ("prune: {pattern: \"3:7\"}", "M=7 does not divide the input width"),
    "budget": ("prune: {distribution: budget, sparsity: 0.9, vision_share: 0.95}",
               "field 'prune': budget 0.90 with vision_share 0.95"),
    "seed_range": ("prune: {method: random, seed: -5}", "field 'prune.seed'"),
    "missing_model": ("model: {name: no-such-model}", "field 'model.name': 'no-such-model'"),
}


@pytest.fixture(scope="module")
def shapes_seen():
    """The embedded model's shapes seen once, as on any machine after its first check of a
    model (the first builds the model on the meta device, importing transformers: ~9 s on
    2 cores, once per model and machine; harness/models/shapes.py)."""
    from harness.models.load import ModelSpec
    from harness.models.shapes import shapes_of

    shapes_of(ModelSpec())


@pytest.mark.parametrize("case", tiered(LATE, {"nm_width"}))
@pytest.mark.parametrize("command", [["plan"], ["sweep", "--dry-run"]])
def test_late_failures_are_found_before_work(case, command, scratch, shapes_seen, vlmprune):
    tmp_path, env = scratch
    override, words = LATE[case]
    (tmp_path / "late.yaml").write_text(
        "name: late\nbase: {prune: {method: wanda, sparsity: 0.5}, eval: {suite: quick}}\n"
        f"include: [{{prune: null}}, {{{override}}}]\n")
    p = vlmprune(command[0], "late.yaml", *command[1:], cwd=tmp_path, env=env)
    refused(p, words)
    assert "late.yaml: cell " in p.stderr
    nothing_written(tmp_path, "late.yaml")


SHAPES = ROOT / "harness" / "zoo" / "shapes-llava"


def model_folder(tmp_path: Path, case: str) -> str:
    """A model folder broken in one way (or a name), as a user might hand one over."""
    folder = tmp_path / "model"
    if case == "empty_name":
        return ""
    folder.mkdir()
    if case == "empty_folder":
        return str(folder)
    if case == "bad_config":
        (folder / "config.json").write_text('{"model_type": "llava",')
        return str(folder)
    if case == "unknown_type":
        (folder / "config.json").write_text('{"model_type": "no-such-architecture"}')
        return str(folder)
    if case == "text_only":  # a text-only model folder: its config and its weights
        import torch
        from safetensors.torch import save_file

        (folder / "config.json").write_text(
            '{"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, '
            '"num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 64}')
        save_file({"lm_head.weight": torch.zeros(64, 16)}, str(folder / "model.safetensors"))
        return str(folder)
    for f in SHAPES.iterdir():  # the embedded model, less one part
        if case == "no_weights" and f.suffix == ".safetensors":
            continue
        if case == "no_processor" and ("token" in f.name or "processor" in f.name
                                       or "vocab" in f.name or "chat" in f.name):
            continue
        shutil.copy(f, folder / f.name)
    return str(folder)


MODELS = {"empty_name": "model name is empty", "empty_folder": "no config.json",
          "bad_config": "config.json: not valid JSON",
          "unknown_type": "a model_type transformers",
          "no_weights": "no weights (*.safetensors or *.bin)", "no_processor": "processor",
          "text_only": "not a vision-language model"}


@pytest.mark.parametrize("case", tiered(MODELS, {"no_processor"}))
def test_bad_model_is_one_line(case, scratch, vlmprune):
    tmp_path, env = scratch
    name = model_folder(tmp_path, case)
    p = vlmprune("inspect", name, cwd=tmp_path, env=env)
    refused(p, MODELS[case])
    nothing_written(tmp_path, *(["model"] if name else []))


@pytest.mark.system  # its own process: HF_HOME is read when huggingface_hub is imported
def test_paper_suite_without_its_data_is_refused_before_work(scratch, tmp_path_factory):
    """The built-in tasks' datasets are looked for where lmms-eval's loader will read them
    (hub snapshot or datasets cache) when the grid is checked, not when a cell evaluates."""
    tmp_path, env = scratch
    env |= {"HF_HOME": str(tmp_path_factory.mktemp("empty-hf-home"))}
    (tmp_path / "late.yaml").write_text(
        "name: late\nbase: {prune: {method: wanda, sparsity: 0.5}, eval: {suite: paper}}\n")
    p = run("plan", "late.yaml", cwd=tmp_path, env=env)
    # lmms-eval's task index: importing it (transformers, evaluate: ~7 s, ~1 GB) and indexing
    # its few hundred built-in tasks (~4 s) come first; the 20 s of CPU / 1 GB of the other
    # checks are for the project's own code
    refused(p, "field 'eval.suite': task vqav2_val: its dataset lmms-lab-encoder/VQAv2 is not "
               "on this machine", max_mb=2048, max_cpu=60)
    assert "`hf download lmms-lab-encoder/VQAv2 --repo-type dataset`" in p.stderr
    nothing_written(tmp_path, "late.yaml")


WHERE_GRID = (BASE + "axes: [{prune.method: [wanda, magnitude]}, {prune.sparsity: [0.5, 0.6]}]\n"
              "include: [{prune: null}]\n")


@pytest.mark.unit
@pytest.mark.parametrize("command", ["plan", "sweep"])
@pytest.mark.parametrize("where, words", [
    (["prune.method=wnada"], "--where prune.method=wnada: no cell of "),
    (["prune.method=wnada"], "(prune.method takes: magnitude, wanda; did you mean 'wanda'?)"),
    (["prune.method=magnitude", "prune.sparsity=0.7"], "(prune.sparsity takes: 0.5, 0.6)"),
    (["prune.method=magnitude", "prune.calibration.samples=128"],
     "no cell of"),
])
def test_where_that_selects_no_cell_is_refused(where, words, command, tmp_path, results,
                                               capsys):
    """A --where that matches no cell ran nothing and exited 0 without a hint."""
    (tmp_path / "g.yaml").write_text(WHERE_GRID)
    flags = [x for w in where for x in ("--where", w)]
    assert main([command, str(tmp_path / "g.yaml"), *flags]) == 2
    err = capsys.readouterr().err
    assert words in err and "g.yaml" in err and err.count("\n") == 1, err
    assert not results.exists()


@pytest.mark.unit
@pytest.mark.parametrize("command", [["plan", "smoke"], ["list"], ["sweep", "smoke"]])
@pytest.mark.parametrize("value", ["-2", "0"])
def test_threads_below_one_are_refused(command, value, results, capsys):
    assert main(["--threads", value, *command]) == 2
    err = capsys.readouterr().err
    assert f"--threads {value}: give 1 or more" in err and err.count("\n") == 1, err
    assert not results.exists()
