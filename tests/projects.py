"""Throwaway project folders for whole-pipeline tests: a git repo, customer uploads from the
bundled sample, and a params.yaml for a tiny model whose paths all point inside the folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from metagan.config import PROJECT_ROOT

# Characters of Hebrew and Futurama, alphabets held out from meta-training.
HELD_OUT_CHARS = (140, 120, 125, 145, 130, 135)


def git_init(root: Path) -> None:
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "test"]):
        subprocess.run(cmd, cwd=root, check=True)


def write_uploads(folder: Path, customers: dict[str, int], shots: int = 4, broken: bool = True) -> Path:
    """One folder per customer holding ``shots`` drawings of one sample character (plus a broken one)."""
    sample = np.load(PROJECT_ROOT / "metagan/sample_data/omniglot_sample.npz")["images"]
    for name, char in customers.items():
        (folder / name).mkdir(parents=True)
        for j in range(shots):
            Image.fromarray(sample[char, j].astype(np.uint8) * 255).save(folder / name / f"{j}.png")
    if broken:
        (folder / "broken").mkdir()
        (folder / "broken" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def make_project(root: Path, customers: dict[str, int], dvc_remote: str, **sections: dict) -> Path:
    """A git repo at ``root`` with uploads in ``root/uploads``; ``sections`` update params.yaml."""
    git_init(root)
    write_uploads(root / "uploads", customers)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"].update(source=str(PROJECT_ROOT / params["data"]["sample"]), packed_dir=str(root / "data/tasks"))
    params["model"]["preset"] = "tiny"
    params["meta"].update(max_steps=3, meta_batch=2, minutes=1.0, sample_every=2)
    params["adapt"]["steps"] = 3
    params["paths"] = {"data_root": str(root / "data"), "ingested_customers": str(root / "data/customers"),
                       "meta_checkpoint": str(root / "artifacts/meta/checkpoint.pt"),
                       "customers_dir": str(root / "artifacts/customers"), "generated": str(root / "out")}
    params["storage"]["dvc_remote"] = dvc_remote
    # a tiny model for seconds cannot meet the quality thresholds; the metrics are still computed
    params["gate"].update(min_consistency=0.0, max_copy_rate=1.0, min_diversity=0.0)
    for section, values in sections.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def rgb_image(rng: np.random.Generator, cls: int, size: int = 64) -> np.ndarray:
    """A colour drawing of class ``cls``: a square of the class's colour at the class's place, on
    white, its position and shade varying a little from drawing to drawing."""
    colour = np.array([(cls * 97) % 256, (cls * 57 + 80) % 256, (cls * 31 + 160) % 256])
    img = np.full((size, size, 3), 255, np.uint8)
    x, y = 4 + (cls * 13) % (size - 28) + rng.integers(0, 4), 4 + (cls * 7) % (size - 28) + rng.integers(0, 4)
    img[y : y + 20, x : x + 20] = np.clip(colour + rng.integers(-20, 20, 3), 0, 255)
    return img


def write_rgb_project(root: Path, groups: int = 3, classes: int = 3, per_class: int = 6, size: int = 64) -> Path:
    """A colour task dataset ``root/tasks/<group>/<class>/*.png`` and two customers in
    ``root/uploads`` drawing classes of the last group (held out of meta-training)."""
    rng = np.random.default_rng(0)
    for g in range(groups):
        for c in range(classes):
            folder = root / "tasks" / f"g{g}" / f"c{c}"
            folder.mkdir(parents=True)
            for j in range(per_class):
                Image.fromarray(rgb_image(rng, g * classes + c, size)).save(folder / f"{j}.png")
    for name, cls in (("red", (groups - 1) * classes), ("blue", (groups - 1) * classes + 1)):
        (root / "uploads" / name).mkdir(parents=True)
        for j in range(4):
            Image.fromarray(rgb_image(rng, cls, 2 * size)).save(root / "uploads" / name / f"{j}.png")
    return root
