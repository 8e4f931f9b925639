"""The registry (harness/registry.py): every built-in entry resolves, names are checked with a
suggestion, entry points from other packages are loaded and checked, and an entry's options
are validated under its name (tests/test_plugins.py installs a real plugin package)."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
from pydantic import BaseModel, ConfigDict, Field

from harness import registry
from harness.errors import UserError
from harness.pruning.spec import load
from harness.recovery.spec import load as load_recovery
from harness.registry import Entry

pytestmark = pytest.mark.unit


def test_every_builtin_entry_resolves():
    for e in registry.BUILTIN:
        if e.target is not None:
            assert callable(e.load()), e
        model = e.options_model()
        assert model is None or issubclass(model, BaseModel), e
    assert registry.names("executors") == ["local", "pool", "ray"]
    assert registry.names("recovery") == ["none", "lora", "sparselora", "lora-remask"]
    assert registry.names("allocations") == ["owl", "ecoflap"]


@pytest.mark.parametrize("kind, name, words", [
    ("methods", "wnada", "unknown pruning method 'wnada'; did you mean 'wanda'?"),
    ("allocations", "olw", "unknown allocation 'olw'; did you mean 'owl'?"),
    ("recovery", "sparselroa", "unknown recovery method 'sparselroa'; did you mean "
                               "'sparselora'?"),
    ("figures", "method", "did you mean 'methods'?"),
])
def test_an_unknown_name_suggests_the_closest(kind, name, words):
    with pytest.raises(UserError, match=words.replace("?", r"\?")):
        registry.get(kind, name)


def test_an_entry_refuses_settings_of_another_kind():
    with pytest.raises(ValueError, match="for pruning methods"):
        Entry("figures", "x", "m:f", needs="norms")
    with pytest.raises(ValueError, match="needs 'grads'"):
        Entry("methods", "x", "m:f", needs="grads")


def test_a_prune_spec_dumps_the_fields_stored_keys_hold():
    """Stage keys hash the dump: the built-ins' option blocks stay in it (None unless
    chosen), and nothing else is added."""
    assert list(load({}).model_dump()) == [
        "method", "pattern", "sparsity", "distribution", "vision_share", "scope",
        "propagation", "calibration", "dsnot", "owl", "ecoflap", "seed"]
    spec = load({"method": "dsnot", "dsnot": {"cycles": 3}, "distribution": "owl",
                 "sparsity": 0.5})
    assert spec.model_dump()["dsnot"] == {"init": "wanda", "cycles": 3}
    assert spec.model_dump()["owl"] == {"threshold_m": 5.0, "lam": 0.08, "across": "role"}
    assert spec.model_dump()["ecoflap"] is None


class DemoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(1, ge=1)


def demo(weight, stats, target, seed=0, k=1):  # pragma: no cover - never run here
    raise AssertionError


DEMO = Entry("methods", "demo", demo, "a test method", options=DemoOptions)
DEMO_RECOVERY = Entry("recovery", "demo_lora", "harness.recovery.lora:inject",
                      options=DemoOptions)


def broken():
    raise ImportError("no module named 'thing'")


@pytest.fixture
def entry_points(monkeypatch):
    """Installs fake entry points: {group: [(name, "module:attr")]}."""
    def install(groups: dict[str, list[tuple[str, str]]]):
        eps = {g: [EntryPoint(n, v, g) for n, v in items] for g, items in groups.items()}
        monkeypatch.setattr(registry, "entry_points", lambda group: eps.get(group, []))
        registry.plugins.cache_clear()

    yield install
    registry.plugins.cache_clear()


def test_plugins_add_entries_with_their_options(entry_points):
    entry_points({"vlmprune.methods": [("demo", "tests.test_registry:DEMO")],
                  "vlmprune.recovery": [("demo_lora", "tests.test_registry:DEMO_RECOVERY")]})
    assert registry.names("methods")[-1] == "demo"
    spec = load({"method": "demo", "demo": {"k": 3}})
    assert spec.options("demo") == DemoOptions(k=3)
    assert spec.model_dump()["demo"] == {"k": 3}
    assert load({"method": "demo"}).model_dump()["demo"] == {"k": 1}  # chosen: the defaults
    assert "demo" not in load({"method": "wanda", "demo": {"k": 3}}).model_dump()
    with pytest.raises(UserError, match=r"^spec.yaml: field 'demo.k': Input should be greater"):
        load({"method": "demo", "demo": {"k": 0}}, "spec.yaml")
    with pytest.raises(UserError, match="field 'dmeo': unknown key"):
        load({"method": "demo", "dmeo": {"k": 2}}, "spec.yaml")
    rec = load_recovery({"method": "demo_lora", "demo_lora": {"k": 2}})
    assert rec.options("demo_lora") == DemoOptions(k=2)
    assert "demo_lora" not in load_recovery({"method": "none", "demo_lora": {}}).model_dump()


@pytest.mark.parametrize("value, words", [
    ("tests.test_registry:broken", "plugin demo = tests.test_registry:broken (entry point "
                                   "group vlmprune.methods, ?): ImportError: no module"),
    ("tests.test_registry:DEMO_RECOVERY", "expected an Entry of kind 'methods' named 'demo'"),
])
def test_a_broken_plugin_is_one_line_naming_it(entry_points, value, words):
    entry_points({"vlmprune.methods": [("demo", value)]})
    with pytest.raises(UserError) as e:
        registry.names("methods")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_plugin_cannot_replace_a_builtin(entry_points):
    entry_points({"vlmprune.figures": [("methods", "tests.test_registry:FIGURE")]})
    with pytest.raises(UserError, match="figure 'methods' is registered twice"):
        registry.get("figures", "nope")


FIGURE = Entry("figures", "methods", "harness.report.figures:methods", "a copy")
