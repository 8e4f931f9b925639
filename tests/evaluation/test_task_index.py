"""lmms-eval's built-in task index from the user cache (harness/evaluation/task_index.py): the
same index lmms-eval builds, read from the cache once made, made again when a task file
changes."""

from __future__ import annotations

import json
import os

import pytest

from harness.evaluation import task_index
from harness.evaluation.suite import TASKS_DIR


@pytest.mark.integration
def test_the_index_is_lmms_evals_and_is_read_from_the_cache_once_made(tmp_path, monkeypatch):
    from lmms_eval.tasks import TaskManager

    monkeypatch.setenv("VLMPRUNE_CACHE_HOME", str(tmp_path / "cache"))
    ours = task_index.manager(str(TASKS_DIR), True)
    (memo,) = (tmp_path / "cache" / "lmms-eval-tasks").glob("*.json")
    theirs = TaskManager("WARNING", include_path=str(TASKS_DIR), include_defaults=True)
    assert ours.task_index == theirs.task_index
    assert list(ours.task_index) == list(theirs.task_index)  # the same order too
    assert ours.all_tasks == theirs.all_tasks and "nocaps_val" in ours.all_tasks
    assert "shapes_vqa" in ours.all_tasks  # the include path's, indexed afresh
    index = json.loads(memo.read_text())
    index["only_in_the_memo"] = {"type": "task", "yaml_path": "nowhere.yaml"}
    memo.write_text(json.dumps(index))
    assert "only_in_the_memo" in task_index.manager(str(TASKS_DIR), True).all_tasks
    memo.write_text("{")  # damaged: made again
    assert task_index.manager(str(TASKS_DIR), True).task_index == theirs.task_index
    local = task_index.manager(str(TASKS_DIR), False)
    assert local.task_index == TaskManager("WARNING", include_path=str(TASKS_DIR),
                                           include_defaults=False).task_index


@pytest.mark.unit
def test_the_key_changes_with_any_task_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "t.yaml").write_text("task: t\n")
    (tmp_path / "a" / "utils.py").write_text("")
    key = task_index._key(tmp_path)
    assert task_index._key(tmp_path) == key
    (tmp_path / "a" / "utils.py").write_text("x = 1\n")  # not a task file
    assert task_index._key(tmp_path) == key
    (tmp_path / "a" / "t.yaml").write_text("task: t2\n")
    changed = task_index._key(tmp_path)
    assert changed != key
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.yaml").write_text("")  # skipped, as lmms-eval skips it
    assert task_index._key(tmp_path) == changed
    (tmp_path / "b.yaml").write_text("task: b\n")
    added = task_index._key(tmp_path)
    assert added != changed
    os.utime(tmp_path / "b.yaml", ns=(0, 0))  # touched: the same size, another time
    assert task_index._key(tmp_path) != added
