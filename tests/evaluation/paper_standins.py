"""Stand-ins for the paper suite's hub datasets, built in a temporary HF_HOME the way a user's
machine holds them: as a hub snapshot (what `hf download REPO --repo-type dataset` leaves) or
as a datasets cache (what an earlier online `load_dataset(REPO)` leaves). Each has the real
repo's config names, split names and columns; the rows are shapes-world scenes, so the
embedded model's answers and captions mean something."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
from PIL import Image

from harness.world.scene import SHAPES, render
from harness.world.splits import caption_sample, vqa_sample

ROWS = 6


def commit(repo: str) -> str:
    """A commit hash per repo, as the hub gives (datasets names its cache of a snapshot
    folder after the folder: one shared hash would make every repo read the first's)."""
    import hashlib

    return hashlib.sha1(repo.encode()).hexdigest()


def _image(scene) -> dict:
    import io

    buf = io.BytesIO()
    Image.fromarray(render(scene)).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def vqav2() -> dict:
    rows = [vqa_sample("test", i) for i in range(ROWS)]
    answers = [[{"answer": s.qa.answer, "answer_confidence": "yes", "answer_id": k + 1}
                for k in range(10)] for s in rows]
    return {"question_type": [s.qa.qtype for s in rows],
            "multiple_choice_answer": [s.qa.answer for s in rows],
            "answers": answers,
            "image_id": [1000 + i for i in range(ROWS)],
            "answer_type": ["other"] * ROWS,
            "question_id": [5000 + i for i in range(ROWS)],
            "question": [s.qa.question for s in rows],
            "image": [_image(s.scene) for s in rows]}


def ok_vqa() -> dict:
    rows = [vqa_sample("test", 100 + i) for i in range(ROWS)]
    return {"question_type": [s.qa.qtype for s in rows],
            "answers": [[s.qa.answer] * 10 for s in rows],
            "image_id": [2000 + i for i in range(ROWS)],
            "answer_type": ["other"] * ROWS,
            "question_id": [6000 + i for i in range(ROWS)],
            "question": [s.qa.question for s in rows],
            "image": [_image(s.scene) for s in rows]}


def gqa_instructions() -> dict:
    rows = [vqa_sample("test", 200 + i) for i in range(ROWS)]
    return {"id": [f"q{i}" for i in range(ROWS)],
            "imageId": [f"n{(i * 7) % ROWS}" for i in range(ROWS)],  # not in image order
            "question": [s.qa.question for s in rows],
            "answer": [s.qa.answer for s in rows],
            "fullAnswer": [f"It is {s.qa.answer}." for s in rows],
            "isBalanced": [True] * ROWS}


def gqa_images() -> dict:
    rows = [vqa_sample("test", 200 + i) for i in range(ROWS)]
    # image n{k} shows the scene of the question that names it
    by_image = {f"n{(i * 7) % ROWS}": rows[i].scene for i in range(ROWS)}
    ids = sorted(by_image)
    return {"id": ids, "image": [_image(by_image[k]) for k in ids]}


def nocaps() -> dict:
    rows = [caption_sample("test", i) for i in range(ROWS)]
    return {"image": [_image(scene) for scene, _ in rows],
            "image_coco_url": [f"https://example.invalid/{i}.jpg" for i in range(ROWS)],
            "image_date_captured": ["2018-11-21 00:00:00"] * ROWS,
            "image_file_name": [f"{i}.jpg" for i in range(ROWS)],
            "image_height": [64] * ROWS, "image_width": [64] * ROWS,
            "image_id": list(range(ROWS)),
            "image_license": [0] * ROWS,
            "image_open_images_id": [f"oi{i}" for i in range(ROWS)],
            "annotations_ids": [[10 * i + k for k in range(2)] for i in range(ROWS)],
            "annotations_captions": [[caption] * 2 for _, caption in rows]}


def flickr30k() -> dict:
    rows = [caption_sample("test", 50 + i) for i in range(ROWS)]
    return {"image": [_image(scene) for scene, _ in rows],
            "caption": [[caption] * 5 for _, caption in rows],
            "sentids": [[str(5 * i + k) for k in range(5)] for i in range(ROWS)],
            "img_id": [str(i) for i in range(ROWS)],
            "filename": [f"{i}.jpg" for i in range(ROWS)]}


def textvqa() -> dict:
    rows = [vqa_sample("test", 300 + i) for i in range(ROWS)]
    return {"image_id": [f"t{i}" for i in range(ROWS)],
            "question_id": [7000 + i for i in range(ROWS)],
            "question": [s.qa.question for s in rows],
            "question_tokens": [s.qa.question.split() for s in rows],
            "image": [_image(s.scene) for s in rows],
            "image_width": [64] * ROWS, "image_height": [64] * ROWS,
            "flickr_original_url": [f"https://example.invalid/{i}.jpg" for i in range(ROWS)],
            "flickr_300k_url": [f"https://example.invalid/300k/{i}.jpg" for i in range(ROWS)],
            "answers": [[s.qa.answer] * 10 for s in rows],
            "image_classes": [["shape"] for _ in rows],
            "set_name": ["val"] * ROWS,
            "ocr_tokens": [[] for _ in rows]}


def pope() -> dict:
    """Yes/no questions about an object's presence, half of them about one that is there."""
    rows = [caption_sample("test", 400 + i)[0] for i in range(ROWS)]
    questions, answers = [], []
    for i, scene in enumerate(rows):
        obj = scene.objects[0]
        there = i % 2 == 0
        shape = obj.shape if there else next(
            s for s in SHAPES if all(o.shape != s for o in scene.objects))
        questions.append(f"Is there a {shape} in the image?")
        answers.append("yes" if there else "no")
    return {"id": [str(i) for i in range(ROWS)],
            "question_id": [str(8000 + i) for i in range(ROWS)],
            "question": questions, "answer": answers,
            "image_source": [f"shapes_{i}" for i in range(ROWS)],
            "image": [_image(scene) for scene in rows],
            "category": ["random"] * ROWS}


# repo -> [(config, split, folder in the repo, columns)]
REPOS = {
    "lmms-lab-encoder/VQAv2": [("default", "validation", "data", vqav2)],
    "lmms-lab-encoder/OK-VQA": [("default", "val2014", "data", ok_vqa)],
    "lmms-lab-encoder/GQA": [
        ("testdev_balanced_instructions", "testdev", "testdev_balanced_instructions",
         gqa_instructions),
        ("testdev_balanced_images", "testdev", "testdev_balanced_images", gqa_images)],
    "lmms-lab-encoder/NoCaps": [("default", "validation", "data", nocaps)],
    "lmms-lab-encoder/flickr30k": [("default", "test", "data", flickr30k)],
}
# beyond the paper suite: tasks a user names in `eval.tasks` or a suite of their own
MORE = {
    "lmms-lab-encoder/textvqa": [("default", "validation", "data", textvqa)],
    "lmms-lab-encoder/POPE": [("default", "test", "data", pope)],
}


def layout(repo: str) -> list:
    """A repo's configs (REPOS, as a test may have extended it, then MORE)."""
    return REPOS[repo] if repo in REPOS else MORE[repo]


def _features(columns: dict) -> datasets.Features:
    feats = datasets.Dataset.from_dict({k: v for k, v in columns.items() if k != "image"}).features
    if "image" in columns:
        feats["image"] = datasets.Image()
    return feats


def repo_folder(repo: str, root: Path, only: set[str] | None = None) -> Path:
    """The repo's files as the hub holds them: README.md with its configs, parquet shards."""
    root.mkdir(parents=True, exist_ok=True)
    card = ["---", "configs:"]
    for config, split, folder, build in layout(repo):
        if only is not None and config not in only:
            continue
        columns = build()
        path = root / folder / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(columns, features=_features(columns)).to_parquet(str(path))
        card += [f"- config_name: {config}", "  data_files:", f"  - split: {split}",
                 f"    path: {folder}/{split}-*"]
    (root / "README.md").write_text("\n".join(card + ["---", f"# {repo} (stand-in)", ""]))
    return root


def hub_snapshot(hf_home: Path, repo: str, only: set[str] | None = None) -> Path:
    """What `hf download REPO --repo-type dataset` leaves under $HF_HOME/hub."""
    base = hf_home / "hub" / f"datasets--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(commit(repo))
    return repo_folder(repo, base / "snapshots" / commit(repo), only)


def datasets_cache(hf_home: Path, repo: str, scratch: Path) -> Path:
    """What an online `load_dataset(REPO, config)` leaves under $HF_HOME/datasets: the same
    parquet builder, prepared from the repo's files, in the folder named after the repo."""
    from datasets.naming import camelcase_to_snakecase

    org, name = repo.split("/")
    src = repo_folder(repo, scratch / name)
    cache = hf_home / "datasets"
    for config, split, _, _ in layout(repo):
        datasets.load_dataset(str(src), config, split=split, cache_dir=str(cache))
    target = cache / f"{org}___{camelcase_to_snakecase(name)}"
    shutil.move(cache / camelcase_to_snakecase(name), target)
    shutil.rmtree(src)
    return target
