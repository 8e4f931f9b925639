import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from harness.errors import UserError
from harness.models.load import ModelSpec, adapter_for, load, resolve
from harness.testing.tiny import tiny_llava
from harness.zoo.build import save


@pytest.mark.unit
def test_unknown_model_is_a_one_line_user_error():
    with pytest.raises(UserError, match="'acme/no-such-vlm' is not available offline"):
        resolve("acme/no-such-vlm")


@pytest.mark.system
def test_cli_exits_2_without_traceback_for_missing_model():
    r = subprocess.run([sys.executable, "-m", "harness.cli", "inspect", "acme/no-such-vlm"],
                       capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1",
                                                            "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "acme/no-such-vlm" in lines[0]


@pytest.mark.unit
def test_model_spec_refuses_unknown_keys():
    with pytest.raises(Exception, match="dtyp"):
        ModelSpec.model_validate({"name": "shapes-llava", "dtyp": "float16"})


@pytest.mark.unit
def test_local_path_round_trip(tmp_path):
    """A model saved with save_pretrained loads offline by path and generates the same."""
    model, proc = tiny_llava(seed=1)
    save(model, proc, tmp_path / "m")
    adapter = load(ModelSpec(name=str(tmp_path / "m"), device="cpu"))
    assert adapter.family == "llava"
    assert isinstance(adapter.model, LlavaForConditionalGeneration)
    AutoProcessor.from_pretrained(tmp_path / "m", local_files_only=True)
    ref = adapter_for(model, proc)
    import numpy as np

    img = [np.full((32, 32, 3), 90, np.uint8)]
    # the saved model's vlmprune.json carries the shapes prompt format
    assert adapter.prompts.question("x ?") == "<image> question : x ? answer :"
    p = [adapter.prompts.question("what color is the circle ?")]
    assert adapter.generate(img, p, max_new_tokens=3) == ref.generate(img, p, max_new_tokens=3)
    for a, b in zip(adapter.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


LAYOUTS = Path(__file__).resolve().parents[2] / "harness" / "models" / "layouts"


def saved(model_and_processor, folder: Path) -> str:
    model, proc = model_and_processor
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return str(folder)


def config_only(folder: Path, config) -> str:
    """A folder whose config.json is another model_type's; its weights and processor files
    are stand-ins (nothing past config.json may be read)."""
    config.save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "processor_config.json").write_text("{}")
    return str(folder)


def no_loading(monkeypatch) -> None:
    """Reading a processor or weights fails the test: the answer must come from config.json."""
    import transformers as tf

    def refuse(*args, **kwargs):
        raise AssertionError("a processor or the weights were loaded")

    for cls in (tf.AutoProcessor, tf.LlavaForConditionalGeneration,
                tf.AutoModelForImageTextToText):
        monkeypatch.setattr(cls, "from_pretrained", refuse)


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["vipllava", "llava_next", "video_llava", "mistral3",
                                  "aya_vision", "internvl"])
def test_a_family_that_is_not_the_folders_model_type_is_refused(kind, tmp_path, monkeypatch,
                                                                capsys):
    """`--family llava` on a folder of another model_type loaded the LLaVA class anyway (its
    missing and unexpected weights only a transformers warning): vipllava's pruned and
    evaluated model silently lacked its projector LayerNorm."""
    import transformers as tf

    from harness.cli import main
    from harness.testing.tiny import tiny_vipllava

    if kind == "vipllava":
        folder = saved(tiny_vipllava(), tmp_path / kind)
    else:
        configs = {"llava_next": tf.LlavaNextConfig, "video_llava": tf.VideoLlavaConfig,
                   "mistral3": tf.Mistral3Config, "aya_vision": tf.AyaVisionConfig,
                   "internvl": tf.InternVLConfig}
        folder = config_only(tmp_path / kind, configs[kind]())
    no_loading(monkeypatch)
    capsys.readouterr()  # what saving printed
    assert main(["inspect", folder, "--family", "llava"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"model_type '{kind}'" in err and "--family" in err, err
    assert "'llava'" in err and folder in err
    with pytest.raises(UserError, match=f"model_type '{kind}'"):
        load(ModelSpec(name=folder, adapter="llava"), weights=False)


@pytest.mark.unit
def test_missing_or_unexpected_weights_are_an_error(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m"
    model, proc = tiny_llava()
    save(model, proc, folder)
    weights = load_file(folder / "model.safetensors")
    load(ModelSpec(name=str(folder), device="cpu"))  # whole: it loads
    gone = "multi_modal_projector.linear_1.bias"  # the file's names: transformers 4's
    del weights[gone]
    weights["multi_modal_projector.projector_layernorm.weight"] = torch.ones(32)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError) as e:
        load(ModelSpec(name=str(folder), device="cpu"))
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg and gone in msg, msg
    assert "projector_layernorm.weight" in msg and "missing" in msg and "unexpected" in msg


@pytest.mark.unit
def test_a_model_without_a_layout_loads_with_the_roles_found_in_it(tmp_path, monkeypatch,
                                                                   capsys):
    """No Python family, no shipped layout, no layout file: the roles come from the model's
    config and module tree (models/auto.py), the same as the hand-written layout's, and the
    prompts from its processor (here: its image token); a saved prune reloads by path."""
    from harness.cli import main
    from harness.models import locate
    from harness.models.generic import load_layout
    from harness.testing.tiny_more import tiny_qwen2_vl

    folder = saved(tiny_qwen2_vl(), tmp_path / "qwen")
    capsys.readouterr()  # what saving printed
    (tmp_path / "none").mkdir()
    monkeypatch.setattr(locate, "LAYOUTS", tmp_path / "none")  # as if none were shipped
    adapter = load(ModelSpec(name=folder))
    written, _ = load_layout(LAYOUTS / "qwen2_vl.yaml")
    assert (adapter.layout.vision, adapter.layout.bridge, adapter.layout.language) == \
        (written.vision, written.bridge, written.language)
    assert adapter.family == "generic" and "<|image_pad|>" in adapter.prompts.vqa
    assert adapter.prompts.question("what?").endswith("what?")
    assert main(["inspect", folder]) == 0
    out = capsys.readouterr().out
    assert "model.visual.blocks" in out and "model.visual.merger" in out, out
    # the stage keys read the code that found the roles, as they read a layout file
    assert "roles" in locate.model_content(ModelSpec(name=folder))
    assert "roles" not in locate.model_content(ModelSpec(name="shapes-llava"))


@pytest.mark.unit
def test_a_shipped_layout_is_found_by_model_type(tmp_path, capsys):
    """A model type without a Python family loads with `layouts/<model_type>.yaml`: a new
    family is that one file, nothing to name on the command line or in a grid."""
    from harness.cli import main
    from harness.models.locate import model_content
    from harness.testing.tiny_more import tiny_qwen2_vl

    folder = saved(tiny_qwen2_vl(), tmp_path / "qwen")
    capsys.readouterr()
    assert main(["inspect", folder]) == 0
    out = capsys.readouterr().out
    assert "vision" in out and "language" in out, out
    given = ModelSpec(name=folder, layout=str(LAYOUTS / "qwen2_vl.yaml"))
    found = load(ModelSpec(name=folder))
    assert found.layout == load(given).layout and found.family == "generic"
    # the stage key reads the file as if it were named: editing it recomputes the stages
    assert "layout" in model_content(given) and model_content(ModelSpec(name=folder)) == \
        model_content(given)


@pytest.mark.unit
def test_a_layout_of_another_architecture_names_the_file_and_the_path(tmp_path, capsys):
    from harness.cli import main

    folder = tmp_path / "llava"
    model, proc = tiny_llava()
    save(model, proc, folder)
    layout = str(LAYOUTS / "qwen2_vl.yaml")
    capsys.readouterr()  # what saving printed
    with pytest.raises(UserError) as e:
        adapter_for(model, proc, "generic", layout)
    msg = str(e.value)
    assert msg.startswith(layout) and "field 'vision'" in msg and "model.visual" in msg, msg
    assert "vision_tower" in msg and "\n" not in msg  # what the model holds there
    assert main(["inspect", str(folder), "--layout", layout]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "qwen2_vl.yaml" in err and "Traceback" not in err, err
