import subprocess
import sys

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from harness.errors import UserError
from harness.models.load import ModelSpec, adapter_for, load, resolve
from harness.models.tiny import tiny_llava
from harness.zoo.build import save


def test_unknown_model_is_a_one_line_user_error():
    with pytest.raises(UserError, match="'acme/no-such-vlm' is not available offline"):
        resolve("acme/no-such-vlm")


def test_cli_exits_2_without_traceback_for_missing_model():
    r = subprocess.run([sys.executable, "-m", "harness.cli", "inspect", "acme/no-such-vlm"],
                       capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1",
                                                            "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "acme/no-such-vlm" in lines[0]


def test_model_spec_refuses_unknown_keys():
    with pytest.raises(Exception, match="dtyp"):
        ModelSpec.model_validate({"name": "shapes-llava", "dtyp": "float16"})


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
