import numpy as np
import pytest

from harness.world.scene import CELL, COLORS, GRID, render, sample_scene
from harness.world.splits import caption_sample, vqa_sample
from harness.world.text import (
    QUESTION_TYPES,
    described_objects,
    relation,
    scene_objects,
    vocabulary,
)

pytestmark = pytest.mark.unit


def test_same_seed_same_pixels():
    a = render(vqa_sample("test", 7).scene)
    b = render(vqa_sample("test", 7).scene)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(vqa_sample("test", 8).scene))


def test_splits_differ():
    assert vqa_sample("train", 0) != vqa_sample("test", 0)
    assert caption_sample("train", 3)[1] != caption_sample("validation", 3)[1] or \
        caption_sample("train", 4)[1] != caption_sample("validation", 4)[1]


def test_objects_stay_in_their_cell_and_are_distinct():
    for i in range(200):
        scene = sample_scene(np.random.default_rng(i))
        assert 1 <= len(scene.objects) <= 4
        assert len({o.shape for o in scene.objects}) == len(scene.objects)
        assert len({o.color for o in scene.objects}) == len(scene.objects)
        img = render(scene).astype(int)
        for o in scene.objects:
            cell = img[o.row * CELL:(o.row + 1) * CELL, o.col * CELL:(o.col + 1) * CELL]
            dist = np.abs(cell - np.array(COLORS[o.color])).sum(-1)
            assert (dist < 80).sum() >= 12, "the object's colour is visible in its cell"
        assert all(0 <= o.row < GRID and 0 <= o.col < GRID for o in scene.objects)


def test_question_types_cycle_and_answers_are_single_words():
    vocab = set(vocabulary())
    seen = []
    for i in range(50):
        s = vqa_sample("validation", i)
        seen.append(s.qa.qtype)
        assert len(s.qa.answer.split()) == 1 and s.qa.answer in vocab
        assert set(s.qa.question.split()) <= vocab
    assert seen[:5] == list(QUESTION_TYPES)


def test_spatial_answers_follow_grid():
    for i in range(4, 200, 5):
        s = vqa_sample("train", i)
        words = s.qa.question.split()
        a = next(o for o in s.scene.objects if o.shape == words[4])
        b = next(o for o in s.scene.objects if o.shape == words[-2])
        assert relation(a, b) == s.qa.answer
        if s.qa.answer == "left":
            assert a.col < b.col


def test_caption_describes_every_object():
    for i in range(100):
        scene, text = caption_sample("test", i)
        assert described_objects(text) == scene_objects(scene)
        assert set(text.split()) <= set(vocabulary())
