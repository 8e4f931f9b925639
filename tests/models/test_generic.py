import numpy as np
import pytest
from torch import nn

from harness.errors import UserError
from harness.models.load import adapter_for
from harness.testing.tiny import tiny_llava

pytestmark = pytest.mark.unit

LAYOUT = """
vision: [model.vision_tower.encoder.layers]
bridge: [model.multi_modal_projector.linear_1, model.multi_modal_projector.linear_2]
language: [model.language_model.layers]
exclude: [lm_head]
prompts: {vqa: "<image> {question}", caption: "<image> caption :"}
"""


def test_generic_adapter_from_yaml(tmp_path):
    (tmp_path / "layout.yaml").write_text(LAYOUT)
    model, proc = tiny_llava()
    a = adapter_for(model, proc, "generic", str(tmp_path / "layout.yaml"))
    assert a.family == "generic"
    assert len(a.blocks("bridge")) == 2 and all(isinstance(b.module, nn.Linear)
                                                for b in a.blocks("bridge"))
    assert len(a.role_linears("language")) == 7 * 2
    assert a.prompts.question("hi ?") == "<image> hi ?"
    out = a.generate([np.zeros((32, 32, 3), np.uint8)], [a.prompts.question("what ?")],
                     max_new_tokens=2)
    assert len(out) == 1


@pytest.mark.parametrize("text, field", [
    ("vision: []\nlanguage: [a]\n", "vision"),
    ("vision: [a]\nlanguage: [b]\nbrige: [c]\n", "brige"),
    ("vision: [a]\n", "language"),
    ("vision: [a]\nlanguage: [b]\nprompts: {vqa: 3}\n", "prompts.vqa"),
])
def test_bad_layout_names_file_and_field(tmp_path, text, field):
    (tmp_path / "bad.yaml").write_text(text)
    model, proc = tiny_llava()
    with pytest.raises(UserError) as e:
        adapter_for(model, proc, "generic", str(tmp_path / "bad.yaml"))
    msg = str(e.value)
    assert "bad.yaml" in msg and f"'{field}'" in msg and "\n" not in msg


def test_generic_without_layout_finds_the_roles_itself():
    """family: generic with no layout file reads the roles from the model (models/auto.py):
    for a LLaVA, the LLaVA family's own."""
    model, proc = tiny_llava()
    found, written = adapter_for(model, proc, "generic"), adapter_for(model, proc, "llava")
    assert found.layout == written.layout and found.family == "generic"
    assert "<image>" in found.prompts.vqa  # the processor's image token
