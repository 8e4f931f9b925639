"""The paper suite's five built-in lmms-eval tasks end to end, offline, on stand-in datasets in
a temporary HF_HOME: from hub snapshots (after the remedy the missing-data error names) and
from a datasets cache; answers reach each task's own `process_results` in document order;
caption tasks get the caption prompt; nothing is written outside results/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.evaluation import paper_standins as standins

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(shutil.which("java") is None,
                                 reason="NoCaps and Flickr30k score with pycocoevalcap's "
                                        "Java tokenizer and METEOR; no `java` on this machine")]

TASKS = ["vqav2_val", "ok_vqa_val2014", "gqa", "nocaps_val", "flickr30k_test"]
LIMIT = 3


def vlmprune(home: Path, work: Path, *args: str) -> subprocess.Popen:
    """The CLI started in a fresh working folder with its own HF_HOME, offline, results/
    relative to that folder."""
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VLMPRUNE_RESULTS", "HF_HUB_CACHE",
                                                            "HF_DATASETS_CACHE",
                                                            "LMMS_EVAL_DATASETS_CACHE")}
    env |= {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(p: subprocess.Popen) -> tuple[int, str]:
    _, err = p.communicate(timeout=600)
    return p.returncode, err


def outside_results(work: Path) -> list[str]:
    return sorted(str(p.relative_to(work)) for p in work.rglob("*")
                  if p.is_file() and p.relative_to(work).parts[0] != "results")


def paper(home: Path, work: Path) -> subprocess.Popen:
    return vlmprune(home, work, "eval", "--model", "shapes-llava", "--suite", "paper",
                    "--limit", str(LIMIT), "--out", str(work.parent / f"{work.name}.json"))


def result(p: subprocess.Popen, work: Path) -> dict:
    code, err = finished(p)
    assert code == 0, err[-3000:]
    assert outside_results(work) == []
    return json.loads((work.parent / f"{work.name}.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """With nothing downloaded (the error; run while the stand-ins are built, in an empty
    home of its own); then with what the command it names leaves (a hub snapshot of every
    repo) and, beside it, with a datasets cache of every repo (the two evaluations run at
    once: most of their time is single-threaded Java scoring)."""
    root = tmp_path_factory.mktemp("paper")
    home, cache_home = root / "hf", root / "hf-cache"
    nothing = vlmprune(root / "hf-empty", root / "work-missing", "eval", "--model",
                       "shapes-llava", "--suite", "paper", "--limit", str(LIMIT))
    for repo in standins.REPOS:
        standins.hub_snapshot(home, repo)
        standins.datasets_cache(cache_home, repo, root / "scratch")
    assert not (cache_home / "hub").exists()  # only the datasets cache holds them there
    missing = finished(nothing)
    first, second = paper(home, root / "work"), paper(cache_home, root / "work-cache")
    return {"missing": missing, "snapshot": result(first, root / "work"),
            "cache": result(second, root / "work-cache"), "home": home}


def test_missing_data_is_one_line_naming_a_remedy(runs):
    code, err = runs["missing"]
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "task vqav2_val" in lines[0]
    assert "`hf download lmms-lab-encoder/VQAv2 --repo-type dataset`" in lines[0]
    assert "Loading weights" not in err  # checked before the model loads


@pytest.mark.parametrize("route", ["snapshot", "cache"])
def test_all_five_tasks_run_and_score(route, runs):
    metrics = runs[route]["metrics"]
    for task in TASKS:
        assert len(runs[route]["samples"][task]) == LIMIT
    for task in ("vqav2_val", "ok_vqa_val2014", "gqa"):
        assert 0.0 <= metrics[f"{task}/exact_match"] <= 1.0
    assert metrics["nocaps_val/nocaps_CIDEr"] > 1.0
    assert metrics["flickr30k_test/flickr_CIDEr"] > 1.0
    assert metrics["nocaps_val/nocaps_Bleu_4"] > 0.3


def test_both_routes_give_the_same_answers(runs):
    assert runs["snapshot"]["metrics"] == runs["cache"]["metrics"]
    assert runs["snapshot"]["samples"] == runs["cache"]["samples"]


@pytest.fixture(scope="module")
def dense():
    from harness.models.load import load

    return load("shapes-llava")


def _docs(home: Path, repo: str, config: str, split: str):
    import datasets

    folder = home / "hub" / f"datasets--{repo.replace('/', '--')}" / "snapshots" \
        / standins.commit(repo)
    return datasets.load_dataset(str(folder), config, split=split,
                                 cache_dir=str(home.parent / "check-cache"))


def test_answers_reach_process_results_in_document_order(runs, dense):
    """Each logged answer is the model's own answer to that document (asked alone), and the
    score logged beside it is what the task's `process_results` gives for that pair."""
    from lmms_eval.tasks.vqav2.utils import vqav2_process_results_val

    result, home = runs["snapshot"], runs["home"]
    rows = result["samples"]["vqav2_val"]
    assert [r["doc_id"] for r in rows] == list(range(LIMIT))
    docs = _docs(home, "lmms-lab-encoder/VQAv2", "default", "validation")
    answers = []
    for row in rows:
        doc = docs[row["doc_id"]]
        direct = dense.generate([doc["image"].convert("RGB")],
                                [dense.prompts.question(doc["question"])])[0].strip()
        assert row["prediction"] == direct
        assert row["exact_match"] == vqav2_process_results_val(doc, [direct])["exact_match"]
        answers.append(direct)
    assert len(set(answers)) == LIMIT  # different answers: a shuffle could not pass

    # GQA: each question's image is found by its imageId (the stand-in's images are stored
    # in another order than the questions)
    questions = _docs(home, "lmms-lab-encoder/GQA", "testdev_balanced_instructions", "testdev")
    images = _docs(home, "lmms-lab-encoder/GQA", "testdev_balanced_images", "testdev")
    by_id = {row["id"]: row["image"] for row in images}
    for row in result["samples"]["gqa"]:
        q = questions[row["doc_id"]]
        direct = dense.generate([by_id[q["imageId"]].convert("RGB")],
                                [dense.prompts.question(q["question"])])[0].strip()
        assert row["prediction"] == direct
        assert row["exact_match"] == float(direct == q["answer"])


def test_caption_tasks_get_the_caption_prompt(runs, dense):
    """NoCaps sends "Provide a one-sentence caption..."; asked as a question the embedded
    model answers a word or two; with its caption prompt it captions."""
    from lmms_eval.tasks.nocaps.utils import nocaps_doc_to_text

    result, home = runs["snapshot"], runs["home"]
    docs = _docs(home, "lmms-lab-encoder/NoCaps", "default", "validation")
    instruction = nocaps_doc_to_text(docs[0], {"prompt": "Provide a one-sentence caption "
                                                         "for the provided image."})
    words = []
    for row in result["samples"]["nocaps_val"]:
        image: Image.Image = docs[row["doc_id"]]["image"].convert("RGB")
        caption = dense.generate([image], [dense.prompts.caption], max_new_tokens=64)[0].strip()
        as_question = dense.generate([image], [dense.prompt_for(instruction)])[0].strip()
        assert row["prediction"] == caption
        assert len(as_question.split()) <= 2 < len(caption.split())
        words.append(len(caption.split()))
    assert sum(words) / len(words) >= 4


def test_a_partial_snapshot_names_what_it_lacks(hf_home):
    """GQA needs its questions and its images; a snapshot with the questions only is refused
    in one line naming the images config."""
    from harness.errors import UserError
    from harness.evaluation.suite import check_offline, task_manager

    standins.hub_snapshot(hf_home, "lmms-lab-encoder/GQA", only={"testdev_balanced_instructions"})
    with pytest.raises(UserError) as e:
        check_offline(["gqa"], task_manager(True))
    msg = str(e.value)
    assert "task gqa" in msg and "testdev_balanced_images" in msg and "\n" not in msg


def test_each_task_is_found_where_it_lies(hf_home, tmp_path):
    """A snapshot is handed over as its folder, a datasets cache as the hub id; both are named
    by what a stored result depends on (the snapshot's commit, the cache's folder)."""
    from harness.evaluation.hub_data import task_sources
    from harness.evaluation.suite import task_manager

    tm = task_manager(True)
    standins.hub_snapshot(hf_home, "lmms-lab-encoder/VQAv2")
    standins.datasets_cache(hf_home, "lmms-lab-encoder/OK-VQA", tmp_path / "scratch")
    (snap,) = task_sources("vqav2_val", tm._get_config("vqav2_val"))
    assert snap.kind == "snapshot" and snap.path.endswith(standins.commit(snap.repo))
    (cached,) = task_sources("ok_vqa_val2014", tm._get_config("ok_vqa_val2014"))
    assert cached.kind == "datasets cache" and cached.path == "lmms-lab-encoder/OK-VQA"
    assert cached.identity.startswith(str(hf_home / "datasets" / "lmms-lab-encoder___ok-vqa"))
