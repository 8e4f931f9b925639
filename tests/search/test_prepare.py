"""A search's section is checked as a grid is, before any model loads (`study.prepare`):
groups against the model's blocks from its shapes, the study's name, and a valid section
passes with the counts the model has."""

from __future__ import annotations

import pytest
import yaml

from harness.errors import UserError
from harness.models import load as load_module
from harness.models.load import ModelSpec
from harness.models.shapes import shapes_of
from harness.search import study as st

pytestmark = pytest.mark.unit

BASE = {"prune": {"method": "wanda"}, "eval": {"suite": "quick"}}


def write(tmp_path, search: dict) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "base": BASE, "search": search},
                                sort_keys=False))
    return str(p)


@pytest.fixture
def no_model_load(monkeypatch):
    """The model's shapes seen once (as after any first check of it); loading it fails."""
    shapes_of(ModelSpec())

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(load_module, "load", refuse)


def test_groups_beyond_the_blocks_are_refused_from_the_shapes(tmp_path, results,
                                                              no_model_load):
    grid = write(tmp_path, {"budget": 0.5, "roles": {"vision": {},
                                                     "language": {"groups": 60}}})
    with pytest.raises(UserError) as e:
        g, s, base = st.prepare(grid)
        st.space_for(s, base, tmp_path / "s.yaml")
    msg = str(e.value)
    assert "search.roles.language.groups" in msg and "60 groups for 6 language" in msg
    assert "\n" not in msg and not results.exists()


def test_a_valid_section_counts_the_weights_of_each_group(tmp_path, results):
    from harness.models.load import load
    from harness.pruning.spec import group_params

    grid = write(tmp_path, {"budget": 0.5, "objective": "shapes_vqa/exact_match",
                            "choices": {"prune.method": ["wanda", "sparsegpt"]},
                            "roles": {"vision": {}, "language": {"groups": 3}}})
    g, s, base = st.prepare(grid)
    counts = st._count_weights(s, base, tmp_path / "s.yaml")
    meta = load("shapes-llava", weights=False)
    assert counts == {"vision": meta.parameter_count("vision"),
                      **{f"language.{i}": n
                         for i, n in enumerate(group_params(meta, "language", 3))}}
    assert not results.exists()


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_study_name_is_refused(tmp_path, name):
    grid = write(tmp_path, {"budget": 0.5})
    with pytest.raises(UserError) as e:
        st.prepare(grid, study=name)
    assert f"--study {name!r}" in str(e.value) and "'s'" in str(e.value)
    assert st.study_name(None, st.grid.read(grid)) == "s"
    assert st.study_name("mine", st.grid.read(grid)) == "mine"
