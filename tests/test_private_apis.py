"""The private APIs of other libraries the project relies on, each checked for the
behaviour we use, so that an upgrade that changes one fails here, loudly, not somewhere deep
in a sweep."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.system


def test_mlflow_sqlalchemy_engine_map(tmp_path):
    """tracking._dispose_engine pops the cached engine of a temporary store before the file
    is deleted (MLflow keeps engines by URI in this class-level dict)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient

    from harness.sweep.tracking import _dispose_engine

    uri = f"sqlite:///{tmp_path / 'probe.db'}"
    MlflowClient(uri).search_experiments()
    assert isinstance(SqlAlchemyStore._engine_map, dict)
    assert uri in SqlAlchemyStore._engine_map
    _dispose_engine(uri)
    assert uri not in SqlAlchemyStore._engine_map


def test_peft_register_custom_module_builds_sparse_lora_layers():
    """recovery/sparse_lora.register: PEFT builds our layer for a registered module type."""
    import torch
    from peft import LoraConfig, get_peft_model

    from harness.recovery.sparse_lora import SparseLoraLinear, layers, register

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    config = register(LoraConfig(r=2, target_modules=["0", "2"]))
    peft_model = get_peft_model(model, config)
    found = [m for m in peft_model.modules() if isinstance(m, SparseLoraLinear)]
    assert len(found) == 2 and len(layers(peft_model)) == 2


def test_lmms_eval_task_manager_get_config():
    """evaluation.run.check_offline reads a task's dataset_path through _get_config."""
    from harness.evaluation.suite import task_manager

    tm = task_manager(False)
    config = tm._get_config("shapes_vqa")
    assert isinstance(config, dict) and config.get("dataset_path") == "json"


def test_lmms_eval_datasets_cache_dir(tmp_path, monkeypatch):
    """evaluation.hub_data checks a dataset in the cache folder lmms-eval's loader will pass
    to `load_dataset`, which lmms-eval picks in api.task._resolve_hf_datasets_cache_dir."""
    from lmms_eval.api.task import _resolve_hf_datasets_cache_dir

    from harness.evaluation.hub_data import datasets_cache

    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "lmms"))
    _resolve_hf_datasets_cache_dir.cache_clear()
    assert datasets_cache() == str(tmp_path / "lmms")
    monkeypatch.delenv("LMMS_EVAL_DATASETS_CACHE")
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _resolve_hf_datasets_cache_dir.cache_clear()  # cached once per process by lmms-eval
    assert datasets_cache() == str(tmp_path / "hf" / "datasets")
    monkeypatch.undo()
    _resolve_hf_datasets_cache_dir.cache_clear()


def test_multiprocessing_fork_server_stops_and_restarts():
    """pool._stop_fork_server kills multiprocessing's fork server by its recorded pid and
    reaps it through `_stop`; `ensure_running` then starts a new one for the next pool."""
    import os
    from multiprocessing import forkserver

    from harness.sweep.pool import _stop_fork_server

    server: Any = forkserver._forkserver
    server.set_forkserver_preload([])
    forkserver.ensure_running()
    first = server._forkserver_pid
    assert first is not None and os.path.exists(f"/proc/{first}")
    _stop_fork_server()
    assert server._forkserver_pid is None and not os.path.exists(f"/proc/{first}")  # reaped
    forkserver.ensure_running()
    second = server._forkserver_pid
    assert second not in (None, first)
    _stop_fork_server()
