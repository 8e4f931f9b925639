"""Any transformers VLM, configured by module-path prefixes in a YAML file.

```yaml
# layouts/my_vlm.yaml
vision: [model.vision_tower.vision_model.encoder.layers]
bridge: [model.multi_modal_projector]
language: [model.language_model.layers]
exclude: [lm_head]
carry: {}            # e.g. T5: {language_model.encoder.block: [[1, 2]]}
prompts: {vqa: "USER: <image>\\n{question} ASSISTANT:", caption: "USER: <image>\\nDescribe."}
```
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from harness.errors import UserError, first_line, validate
from harness.models.layout import Layout, Prompts


class PromptsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vqa: str = "{question}"
    caption: str = "a photo of"
    instructions: bool = True  # follows the instructions built-in tasks add to a question


class LayoutSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vision: list[str] = Field(min_length=1)
    bridge: list[str] = Field(default_factory=list)
    language: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=lambda: ["lm_head"])
    # per segment path: [[output index, input position or keyword], ...] handed block to block
    carry: dict[str, list[tuple[int, int | str]]] = Field(default_factory=dict)
    prompts: PromptsSpec = Field(default_factory=PromptsSpec)

    def layout(self) -> Layout:
        carry = tuple((path, tuple(pairs)) for path, pairs in self.carry.items())
        return Layout(tuple(self.vision), tuple(self.bridge), tuple(self.language),
                      tuple(self.exclude), carry)


def dump_layout(layout: Layout, prompts: Prompts) -> str:
    """A layout file's text for a layout in memory (a saved pruned model carries its own)."""
    data = {"vision": list(layout.vision), "bridge": list(layout.bridge),
            "language": list(layout.language), "exclude": list(layout.exclude),
            "carry": {path: [list(p) for p in pairs] for path, pairs in layout.carry},
            "prompts": {"vqa": prompts.vqa, "caption": prompts.caption,
                        "instructions": prompts.instructions}}
    return yaml.safe_dump(data, sort_keys=False)


def load_layout(path: str | Path) -> tuple[Layout, Prompts]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: layout file not found") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({first_line(e)})") from None
    spec = validate(LayoutSpec, data, path)
    return spec.layout(), Prompts(spec.prompts.vqa, spec.prompts.caption,
                                  spec.prompts.instructions)

