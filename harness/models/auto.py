"""Roles read from a model itself, for a VLM with no layout written for it.

A transformers VLM names its parts in its config: `vision_config` (the vision tower),
`text_config` (the language model) and, for some, a Q-Former, resampler or projector config.
Each sub-config's module is the submodule built from it (its `config` is that object); its
blocks are the outermost `ModuleList`s of transformer layers under it, preferring those whose
length is one of the sub-config's layer counts. Every Linear left over between the towers (a
projector, a patch merger, DeepStack mergers) is the bridge; the output head and the towers of
other modalities (audio) are excluded by name, and so are the language model's own Linears
outside its blocks (OPT's project_in/out). `partition` then checks that the roles and the
exclusions cover every Linear of the model exactly once, as every load does.

Works on the meta device: nothing here reads a weight.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from harness.errors import UserError
from harness.models.layout import ROLES, Layout, under

if TYPE_CHECKING:  # torch loads with the first model, not with a grid file
    from torch import nn

# sub-config attribute -> role; names not listed are matched by the words they hold
_VISION = ("vision", "visual", "image")
_LANGUAGE = ("text", "language", "llm", "decoder")
_BRIDGE = ("qformer", "projector", "perceiver", "resampler", "connector", "abstractor",
           "adapter")
_OTHER_MODALITY = ("video", "audio", "speech")
# Linears left between the towers that are not the bridge: a patch embedding (a Linear where
# most ViTs have a Conv) and image-generation heads (Janus) never carry an image to the
# language model
_NOT_BRIDGE = ("embed", "generation")
# fields holding a tower's layer count
_COUNTS = re.compile(r"^(num_(hidden_|global_|encoder_|decoder_)?layers|n_layers|depth|"
                     r"(encoder|decoder|vision|text)_layers|num_blocks)$")
# models that prune nothing here, with the reason given
_NO_VISION_BLOCKS = {
    "chameleon": "it turns images into tokens with a VQ-VAE: no vision transformer blocks",
    "emu3": "it turns images into tokens with a VQ-VAE: no vision transformer blocks",
    "fuyu": "its image patches go straight into the language model: no vision tower",
}


def detect(model: nn.Module) -> Layout:
    """The layout of a VLM with no layout file, from its config and module tree; one line
    naming what is missing when its roles cannot be found."""
    from torch import nn

    cfg = model.config
    kind = getattr(cfg, "model_type", type(model).__name__)
    if kind in _NO_VISION_BLOCKS:
        raise UserError(f"model_type '{kind}' has no vision blocks to prune: "
                        f"{_NO_VISION_BLOCKS[kind]}")
    subs = dict(_sub_configs(cfg))
    if not any(role == "vision" for role, _ in subs.values()):
        raise UserError(f"model_type '{kind}' has no vision config (sub-configs: "
                        f"{', '.join(subs) or 'none'}): not an image-text model vlmprune can "
                        "split into vision, bridge and language")
    roots, unused = _roots(model, subs)
    blocks: dict[str, list[str]] = {r: [] for r in ROLES}
    other: list[str] = []
    for name, (role, sub) in subs.items():
        root = roots.get(name)
        if root is None:
            if role in ("vision", "language"):
                raise UserError(f"model_type '{kind}': no module built from its {name} "
                                "(give a layout file: --layout FILE)")
            continue
        if role == "other":  # audio towers and the like: not a role, left as they are
            other.append(root)
            continue
        inside = [r for n, r in roots.items() if n != name and r != root and under(r, root)]
        found = _block_lists(model, root, _counts(sub), inside)
        if not found and role != "bridge":
            raise UserError(f"model_type '{kind}': no transformer blocks found under {root} "
                            f"(its {name}); give a layout file: --layout FILE")
        blocks[role] += found
    if not blocks["language"] and not any(role == "language" for role, _ in subs.values()):
        # the model's own config is its language model's (GIT, IDEFICS): its blocks are the
        # layer lists outside every tower the sub-configs built
        blocks["language"] = _block_lists(model, "", _counts(cfg), list(roots.values()))
    if not blocks["language"]:
        raise UserError(f"model_type '{kind}' has no text config: not an image-text model "
                        "vlmprune can split into vision, bridge and language")
    exclude = _heads(model) + other + unused
    # Linears of the language model outside its blocks (OPT's project_in/out) belong to
    # neither tower's blocks nor to the bridge: left as they are
    lm_roots = [roots[n] for n, (role, _) in subs.items() if role == "language" and n in roots]
    exclude += [p for p, m in model.named_modules() if isinstance(m, nn.Linear)
                and any(under(p, r) for r in lm_roots)
                and not any(under(p, b) for b in blocks["language"] + exclude)]
    taken = [p for r in ROLES for p in blocks[r]] + exclude
    exclude += [p for p in _between(model, taken)
                if any(w in part for part in p.lower().split(".") for w in _NOT_BRIDGE)]
    taken = [p for r in ROLES for p in blocks[r]] + exclude
    blocks["bridge"] += _between(model, taken)
    return Layout(vision=tuple(blocks["vision"]), bridge=tuple(_ordered(model,
                                                                        blocks["bridge"])),
                  language=tuple(blocks["language"]), exclude=tuple(exclude))


def refuse_early(where: str, config) -> None:
    """Models known to have no vision blocks, refused from their config before they build."""
    kind = getattr(config, "model_type", "")
    if kind in _NO_VISION_BLOCKS:
        raise UserError(f"{where}: model_type '{kind}' has no vision blocks to prune: "
                        f"{_NO_VISION_BLOCKS[kind]}")


def partition(model: nn.Module, layout: Layout, source: str) -> None:
    """Every Linear is in exactly one role or excluded; otherwise one line with the count and
    a few of the Linears left out (or taken twice)."""
    from torch import nn

    owner: dict[str, list[str]] = {}
    roles = {r: layout.paths(r) for r in ROLES}
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        owner[path] = [r for r, prefixes in roles.items() if any(under(path, p)
                                                                    for p in prefixes)]
    left = [p for p, rs in owner.items() if not rs and
            not any(under(p, e) for e in layout.exclude)]
    twice = [p for p, rs in owner.items() if len(rs) > 1]
    if left:
        raise UserError(f"{source}: {len(left)} Linear(s) of this "
                        f"{model.config.model_type} model are in no role and not excluded "
                        f"({_few(left)}); add them to a role or to `exclude:`")
    if twice:
        raise UserError(f"{source}: {len(twice)} Linear(s) are in two roles ({_few(twice)})")


def _few(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _sub_configs(cfg) -> Iterator[tuple[str, tuple[str, object]]]:
    """(attribute, (role, config)) for each sub-config the model's config holds."""
    for name in sorted(getattr(cfg, "sub_configs", {}) or {}):
        sub = getattr(cfg, name, None)
        if sub is None or not hasattr(sub, "to_dict"):
            continue
        yield name, (_role(name, sub), sub)


def _role(name: str, sub: object = None) -> str:
    n = name.lower()
    if n == "encoder" and hasattr(sub, "image_size") and hasattr(sub, "patch_size"):
        return "vision"  # an image encoder feeding a text decoder (VisionEncoderDecoder)
    if any(w in n for w in _BRIDGE):
        return "bridge"
    if any(w in n for w in _VISION):
        return "vision"
    if any(w in n for w in _LANGUAGE):
        return "language"
    return "other"


def _counts(sub) -> set[int]:
    return {v for k, v in sub.to_dict().items()
            if _COUNTS.match(k) and isinstance(v, int) and v > 0}


def _roots(model: nn.Module, subs: dict[str, tuple[str, object]]
           ) -> tuple[dict[str, str], list[str]]:
    """The module built from each sub-config: the shortest path whose `config` is it (a
    tower built as a PreTrainedModel keeps its config object; of two built from one config,
    Video-LLaVA's image and video towers, the one not named for video); else the shortest
    path named like its role. Also the towers not chosen (the video tower), left as they
    are."""
    found: dict[str, list[str]] = {}
    ids = {id(sub): name for name, (_, sub) in subs.items()}
    for path, mod in model.named_modules():
        name = ids.get(id(getattr(mod, "config", None)))
        if name is not None and path and not any(under(path, p) for p in found.get(name, ())):
            found.setdefault(name, []).append(path)
    for name, (role, _) in subs.items():  # towers that keep no config: found by their name
        if name in found:
            continue
        words = {"vision": _VISION, "language": ("language_model", "text_model"),
                 "bridge": _BRIDGE}.get(role, ())
        named = [p for p, _ in model.named_modules()
                 if p and any(w in p.rsplit(".", 1)[-1].lower() for w in words)]
        if named:
            found[name] = named
    out, unused = {}, []
    for name, paths in found.items():
        still = [p for p in paths if not any(w in p.rsplit(".", 1)[-1].lower()
                                             for w in _OTHER_MODALITY)] or paths
        out[name] = min(still, key=lambda p: (p.count("."), p))
        if subs[name][0] != "bridge":
            unused += [p for p in paths if p != out[name] and not under(p, out[name])
                       and not under(out[name], p)]
    return out, unused


def _block_lists(model: nn.Module, root: str, counts: set[int], inside: list[str]
                 ) -> list[str]:
    """Outermost ModuleLists under `root` (not under another tower's root in it) whose
    members are transformer layers holding Linears: those of a layer count first, else
    those whose members are named like layers (`...Layer`, `...Block`)."""
    from torch import nn

    lists = []
    for path, mod in model.get_submodule(root).named_modules(prefix=root):
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if any(under(path, r) for r in inside):
            continue
        if not any(isinstance(m, nn.Linear) for m in mod.modules()):
            continue
        lists.append((path, mod))
    outer = [(p, m) for p, m in lists if not any(under(p, q) and p != q for q, _ in lists)]
    # a list of stages (Florence-2's DaViT: lists of blocks between downsamplings): each
    # stage is a segment of its own
    outer = [pair for p, m in outer for pair in (
        [(f"{p}.{i}", stage) for i, stage in enumerate(m)]
        if all(isinstance(stage, nn.ModuleList) for stage in m) else [(p, m)])]
    counted = [p for p, m in outer if len(m) in counts and _layers(m)]
    return counted or [p for p, m in outer if _layers(m)]


def _layers(mod: nn.ModuleList) -> bool:
    names = {type(m).__name__ for m in mod}
    return len(names) <= 2 and all(re.search(r"(Layer|Block)$", n) for n in names)


def _heads(model: nn.Module) -> list[str]:
    """The output head(s): `lm_head` and whatever `get_output_embeddings` returns."""
    from torch import nn

    out = []
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for path, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and (mod is head or path.rsplit(".", 1)[-1] == "lm_head"):
            out.append(path)
    return out


def _between(model: nn.Module, taken: list[str]) -> list[str]:
    """The bridge: each Linear outside `taken`, as the largest module around it that holds
    no Linear of `taken` (a ModuleList's members one by one: DeepStack's mergers each read
    another vision layer, they are not a chain)."""
    from torch import nn

    def clean(path: str) -> bool:  # holds nothing taken (it is under nothing taken)
        return not any(under(t, path) for t in taken)

    out: list[str] = []
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or any(under(path, t) for t in taken + out):
            continue
        top = path
        parts = path.split(".")
        for i in range(len(parts) - 1, 0, -1):
            up = ".".join(parts[:i])
            if not clean(up):
                break
            top = up
        if isinstance(model.get_submodule(top), nn.ModuleList):
            out += [f"{top}.{i}" for i in range(len(model.get_submodule(top)))]
        else:
            out.append(top)
    return out


def _ordered(model: nn.Module, paths: list[str]) -> list[str]:
    order = {p: i for i, (p, _) in enumerate(model.named_modules())}
    return sorted(dict.fromkeys(paths), key=lambda p: order.get(p, len(order)))
