"""Grid files: expansion, the shipped grids, and malformed files rejected before any work."""

import pytest

from harness.cli import main
from harness.sweep import grid
from harness.sweep.cell import prune_key, recover_key

pytestmark = pytest.mark.unit

BASE = """name: t
base:
  prune: {method: wanda, calibration: {samples: 8, batch_size: 8}}
  eval: {suite: quick, limit: 5}
"""


def write(tmp_path, text: str):
    p = tmp_path / "g.yaml"
    p.write_text(text)
    return p


def test_axes_zip_include_exclude_seeds(tmp_path):
    p = write(tmp_path, BASE + """axes:
  - prune.method: [magnitude, wanda]
  - zip: {prune.pattern: [unstructured, "2:4"], prune.sparsity: [0.6, 0.5]}
include: [{prune: null}]
exclude: [{prune.method: magnitude, prune.pattern: "2:4"}]
seeds: [0, 1]
""")
    _, cells = grid.expand(str(p))
    # without recovery the seed offsets the calibration seed: wanda repeats per seed; magnitude
    # reads no calibration, so its seeds are one cell, labelled without the seed; dense is one
    assert len(cells) == 1 + 2 * 2 + 1
    labels = [c.label for c in cells]
    assert "prune.method=magnitude, prune.pattern=unstructured, prune.sparsity=0.6" in labels
    assert not any("magnitude" in la and "2:4" in la for la in labels)
    assert sum(c.spec.prune is None for c in cells) == 1
    wanda = [c for c in cells if c.spec.prune and c.spec.prune.method == "wanda"]
    assert sorted(c.spec.prune.calibration.seed for c in wanda) == [0, 0, 1, 1]
    assert all(("seed=1" in c.label) == (c.spec.prune.calibration.seed == 1) for c in wanda)


def test_seeds_repeat_recovery_and_share_the_prune_stage(tmp_path):
    p = write(tmp_path, BASE.replace("eval:", "recover: {method: sparselora}\n  eval:") +
              "seeds: [0, 1, 2]\n")
    _, cells = grid.expand(str(p))
    assert len(cells) == 3
    assert len({prune_key(c.spec) for c in cells}) == 1
    assert sorted(c.spec.recover.seed for c in cells) == [0, 1, 2]
    assert len({recover_key(c.spec) for c in cells}) == 3
    assert len({c.hash for c in cells}) == len(cells)


def test_where_filters_cells(tmp_path):
    p = write(tmp_path, BASE + "axes:\n  - prune.method: [magnitude, wanda, random]\n")
    _, cells = grid.expand(str(p), {"prune.method": "wanda"})
    assert [c.spec.prune.method for c in cells] == ["wanda"]


SHIPPED = [("modality_ratio", 17), ("modality_choice", 16), ("methods", 26), ("recovery", 7),
           ("smoke", 4), ("allocation", 19), ("modality_search", 1)]


@pytest.mark.parametrize("name, cells", SHIPPED)
def test_shipped_grids_validate(name, cells):
    _, got = grid.expand(name)
    assert len(got) == cells


def test_every_shipped_grid_is_checked():
    assert sorted(grid.names()) == sorted(n for n, _ in SHIPPED)


def test_recovery_methods_share_their_prune_stage():
    _, cells = grid.expand("recovery")
    pruned = [c for c in cells if c.spec.prune is not None]
    assert len({prune_key(c.spec) for c in pruned}) == 2  # P prune settings, not 3P
    assert len({recover_key(c.spec) for c in pruned if c.spec.recover.method != "none"}) == 4


def test_modality_ratio_splits_sum_to_100_and_120():
    _, cells = grid.expand("modality_ratio")
    totals = sorted({round(c.spec.prune.sparsity["vision"] + c.spec.prune.sparsity["language"],
                           6) for c in cells if c.spec.prune is not None})
    assert totals == [1.0, 1.2]


MALFORMED = [
    ("name: [\n", "invalid YAML"),
    ("- a\n- b\n", "a grid file is a mapping"),
    ("description: no name\n", "field 'name'"),
    ("name: ''\n", "field 'name'"),
    ("name: t\nbase: 3\n", "field 'base'"),
    ("name: t\naxis: []\n", "field 'axis'"),
    ("name: t\naxes: [{prune.method: wanda}]\n", "axes[0].prune.method"),
    ("name: t\naxes: [{prune.method: []}]\n", "axes[0].prune.method"),
    ("name: t\naxes: [{prune.method: [wanda], prune.sparsity: [0.5]}]\n", "axes[0]"),
    ("name: t\naxes: [{zip: {prune.method: [wanda], prune.sparsity: [0.5, 0.6]}}]\n",
     "axes[0].zip"),
    ("name: t\naxes: [{zip: []}]\n", "axes[0]"),
    ("name: t\nseeds: []\n", "field 'seeds'"),
    ("name: t\nseeds: [a]\n", "field 'seeds.0'"),
    ("name: t\naxes: [{prune.method: [wnada]}]\n", "did you mean 'wanda'"),
    ("name: t\naxes: [{prune.sparsity: [1.5]}]\n", "field 'prune.sparsity'"),
    ("name: t\naxes: [{prune.pattern: ['4:2']}]\n", "field 'prune.pattern'"),
    ("name: t\nbase: {prune: {sparsity: {textual: 0.5}}}\n", "unknown role 'textual'"),
    ("name: t\nbase: {prune: {distribution: budget}}\n", "vision_share"),
    ("name: t\nbase: {recover: {roles: {language: {rank: 0}}}}\n",
     "field 'recover.roles.language.rank'"),
    ("name: t\nbase: {recover: {distill: {weight: 2}}}\n", "field 'recover.distill.weight'"),
    ("name: t\nbase: {recover: {method: qlora}}\n", "field 'recover.method'"),
    ("name: t\nbase: {eval: {limit: 0}}\n", "field 'eval.limit'"),
    ("name: t\nbase: {eval: {sweet: shapes}}\n", "field 'eval.sweet'"),
    ("name: t\nbase: {modle: {name: x}}\n", "field 'modle'"),
    ("name: t\nbase: {model: {dtype: float8}}\n", "field 'model.dtype'"),
    ("name: t\nexclude: [{prune.metod: wanda}]\n", "exclude[0].prune.metod"),
    ("name: t\ninclude: [{prune: {method: sparse}}]\n", "field 'prune.method'"),
]


@pytest.mark.parametrize("text, expect", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_grid_is_one_line_exit_2_nothing_written(text, expect, tmp_path, results,
                                                           capsys):
    p = write(tmp_path, text)
    assert main(["sweep", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(p) in err and expect in err, err
    assert not results.exists()


def test_unknown_grid_name_suggests(results, capsys):
    assert main(["sweep", "modality_ration"]) == 2
    assert "did you mean 'modality_ratio'" in capsys.readouterr().err
    assert not results.exists()


def test_a_real_model_with_no_calibration_source_is_refused(tmp_path):
    """The shapes world is the embedded model's default only: a folder model pruned by a
    calibrating method with no source given is refused in one line naming the cell and a
    real dataset; `source: shapes` written out, or a method that reads no data, is not."""
    from harness.errors import UserError
    from harness.testing.tiny import tiny_llava
    from harness.zoo.build import save

    model, processor = tiny_llava()
    save(model, processor, tmp_path / "tiny")
    text = BASE + f"  model: {{name: {tmp_path / 'tiny'}}}\n" + \
        "axes:\n  - prune.method: [wanda, magnitude]\n"
    with pytest.raises(UserError) as e:
        grid.expand(str(write(tmp_path, text)))
    msg = str(e.value)
    assert "\n" not in msg and "g.yaml" in msg and "cell 0 (prune.method=wanda)" in msg
    assert "'prune.calibration.source'" in msg and "hf:lmms-lab/COCO-Caption2017" in msg
    _, cells = grid.expand(str(write(tmp_path, text.replace(
        "calibration: {samples: 8", "calibration: {source: shapes, samples: 8"))))
    assert len(cells) == 2
    _, cells = grid.expand(str(write(tmp_path, text.replace("wanda, magnitude", "magnitude"))))
    assert len(cells) == 1
