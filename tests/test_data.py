"""Behaviour of the data layer: image decoding, readers, shards, splits and episode sampling."""

from __future__ import annotations

import io
import itertools
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metagan.data import (
    ClassImages,
    EpisodeSampler,
    ImageError,
    ShardError,
    download_omniglot,
    load_image,
    load_packed,
    pack_shards,
    read_folder_tree,
    read_omniglot_npz,
    read_omniglot_zip,
    read_source,
    split_by_fraction,
    split_classes,
    to_tensor,
    to_uint8,
    write_omniglot_subset,
)
from metagan.errors import BadInput

REAL_NPZ = Path(__file__).resolve().parents[1] / "../shared/data/omniglot/images_background.npz"
SAMPLE_NPZ = Path(__file__).resolve().parents[1] / "metagan/sample_data/omniglot_sample.npz"
SIZE = 8


def synthetic_classes(n_groups=4, per_group=3, n_images=6, seed=0) -> list[ClassImages]:
    """Classes of random 12x10 grayscale images; group g has classes g/c0.. with n_images each."""
    rng = np.random.default_rng(seed)
    return [
        ClassImages(
            f"g{g}/c{c}", f"g{g}", [rng.integers(0, 256, (12, 10), dtype=np.uint8) for _ in range(n_images)]
        )
        for g in range(n_groups)
        for c in range(per_group)
    ]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "tasks"
    classes = synthetic_classes()
    classes.append(ClassImages("small/c0", "small", classes[0].images[:2]))  # too few for 3+2
    pack_shards(classes, out, size=SIZE, channels=1, images_per_shard=16, source="synthetic")
    return out


@pytest.fixture(scope="module")
def ds(packed):
    return load_packed(packed)


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Episodes and splits


def test_task_data_with_classes_too_small_for_an_episode_is_bad_input_naming_the_settings(ds):
    """A probe's task data of 8 drawings a class ended `metagan meta-train` in a bug's traceback,
    exit 70: it is the data's fault (exit 3), said with the settings that decide the size."""
    from metagan.errors import BadInput, kind_of

    most = max(len(ds.indices_of(c)) for c in range(ds.num_classes))
    with pytest.raises(BadInput, match=r"meta.shots \+ meta.queries = \d+ images .*lower meta.shots") as info:
        EpisodeSampler(ds, np.arange(ds.num_classes), shots=most, queries=1, seed=0)
    assert kind_of(info.value).exit_code == 3


def test_episode_shapes_and_range(ds):
    sampler = EpisodeSampler(ds, np.arange(ds.num_classes), shots=3, queries=2, seed=0)
    x, classes = sampler.sample_with_classes(4)
    assert x.shape == (4, 5, 1, SIZE, SIZE) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert len(set(classes.tolist())) == 4  # one distinct class per task
    # Every image of a task belongs to its class, and none repeats within the task.
    for task, c in zip(x, classes):
        own = to_tensor(ds.images[ds.indices_of(int(c))])
        matches = [int((own == img).flatten(1).all(1).nonzero()[0]) for img in task]
        assert len(set(matches)) == 5


def test_rotated_classes_are_tasks_of_their_own(ds):
    """With rotations=4 every task is one class turned by a whole number of quarter turns."""
    ids = np.arange(ds.num_classes)
    plain = EpisodeSampler(ds, ids, shots=3, queries=2, seed=0)
    sampler = EpisodeSampler(ds, ids, shots=3, queries=2, seed=0, rotations=4)
    assert sampler.num_classes == 4 * plain.num_classes
    x, classes = sampler.sample_with_classes(sampler.num_classes)
    turned = set()
    for task, c in zip(x, classes):
        own = to_tensor(ds.images[ds.indices_of(int(c))])
        for k in range(4):  # the same turn for all images of the task
            candidates = torch.rot90(own, k, dims=(2, 3))
            if all((candidates == img).flatten(1).all(1).any() for img in task):
                turned.add(k)
                break
        else:
            raise AssertionError(f"task of class {c} is not one rotation of it")
    assert turned == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="rotations"):
        EpisodeSampler(ds, ids, shots=3, queries=2, rotations=3)


def test_small_classes_excluded_and_errors(ds):
    small = ds.class_names.index("small/c0")
    sampler = EpisodeSampler(ds, np.arange(ds.num_classes), shots=3, queries=2)
    assert small not in sampler.class_ids and sampler.num_classes == ds.num_classes - 1
    with pytest.raises(ValueError, match="at least meta.shots \\+ meta.queries = 5"):
        EpisodeSampler(ds, [small], shots=3, queries=2)
    with pytest.raises(ValueError, match="n_tasks"):
        sampler.sample(sampler.num_classes + 1)


def test_same_seed_same_episodes(ds):
    ids = np.arange(ds.num_classes)
    a = EpisodeSampler(ds, ids, shots=2, queries=1, seed=7)
    b = EpisodeSampler(ds, ids, shots=2, queries=1, seed=7)
    c = EpisodeSampler(ds, ids, shots=2, queries=1, seed=8)
    first = [a.sample(3) for _ in range(3)]
    assert all(torch.equal(x, b.sample(3)) for x in first)
    assert not all(torch.equal(x, c.sample(3)) for x in first)


def test_split_by_group_keeps_val_unseen(ds):
    train, val = split_classes(ds, ["g1", "g3"])
    train_groups = {ds.class_groups[i] for i in train}
    val_groups = {ds.class_groups[i] for i in val}
    assert val_groups == {"g1", "g3"} and not train_groups & val_groups
    assert len(train) + len(val) == ds.num_classes
    sampler = EpisodeSampler(ds, train, shots=2, seed=1)
    seen = set()
    for _ in range(20):
        seen |= set(sampler.sample_with_classes(3)[1].tolist())
    assert seen and not seen & set(val.tolist())
    with pytest.raises(BadInput, match="'nope'.*set data.val_groups"):  # the settings', exit 3, not a bug's 70
        split_classes(ds, ["nope"])


def test_split_by_fraction_picks_whole_groups(ds):
    train, val = split_by_fraction(ds, 0.3, seed=3)
    assert not {ds.class_groups[i] for i in train} & {ds.class_groups[i] for i in val}
    assert len(val) and len(train)
    assert np.array_equal(val, split_by_fraction(ds, 0.3, seed=3)[1])


# ----------------------------------------------------------------------------------------------
# Shards


def test_pack_load_round_trip(packed, ds):
    manifest = json.loads((packed / "manifest.json").read_text())
    assert manifest["format"] == "metagan-shards/1"
    assert manifest["preprocessing"]["size"] == SIZE and manifest["total_images"] == 12 * 6 + 2
    assert len(manifest["shards"]) == 5 and all(len(s["sha256"]) == 64 for s in manifest["shards"])
    assert ds.images.shape == (74, SIZE, SIZE, 1) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.groups() == ["g0", "g1", "g2", "g3", "small"]
    # The pixels are exactly what preprocessing one class on its own gives.
    cls = synthetic_classes()[4]
    assert np.array_equal(ds.images[ds.indices_of(ds.class_names.index(cls.name))], cls.load(SIZE, 1))


def test_pack_is_deterministic_and_replaces_old_pack(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    pack_shards(synthetic_classes(), a, SIZE, 3, images_per_shard=10)
    pack_shards(synthetic_classes(), b, SIZE, 3, images_per_shard=10)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    # Re-packing over an old pack replaces it whole: no stale shards survive.
    pack_shards(synthetic_classes(n_groups=1), a, SIZE, 3, images_per_shard=100)
    assert sorted(p.name for p in a.iterdir()) == ["manifest.json", "shard-00000.npz"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(BadInput, match="refusing to replace"):  # the settings' mistake (exit 3), not a bug (70)
        pack_shards(synthetic_classes(), other, SIZE, 1)


def test_a_source_the_packer_cannot_use_is_bad_input(tmp_path):
    """Two classes of one name, or no image in any class: the source's fault, exit 3 (a plain
    ValueError was exit 70, "a bug")."""
    twice = synthetic_classes(n_groups=1, per_group=1) * 2
    with pytest.raises(BadInput, match="duplicate class name 'g0/c0'"):
        pack_shards(twice, tmp_path / "a", SIZE, 1)
    with pytest.raises(BadInput, match="no images to pack"):
        pack_shards(synthetic_classes(n_images=0), tmp_path / "b", SIZE, 1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="exists and is not a folder"):
        pack_shards(synthetic_classes(), tmp_path / "file", SIZE, 1)


def test_corrupted_shard_names_the_shard(tmp_path):
    out = tmp_path / "p"
    pack_shards(synthetic_classes(), out, SIZE, 1, images_per_shard=40)
    shard = out / "shard-00001.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="shard-00001.npz: checksum mismatch"):
        load_packed(out)
    shard.unlink()
    with pytest.raises(ShardError, match="shard-00001.npz: shard listed in manifest.json is missing"):
        load_packed(out)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_packed(tmp_path)


def folder_source(root: Path, n_classes: int = 6, per_class: int = 4) -> Path:
    """A task source as a folder tree (<root>/<group>/<class>/<images>) of small random images."""
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        folder = root / f"g{c % 2}" / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_a_damaged_pack_is_packed_again_from_its_source_with_a_warning(tmp_path, caplog):
    """Guarantee: preparing the tasks (what `metagan ingest`, `adapt` and `meta-train` run) over a
    pack whose shard is truncated, corrupt or missing, or whose manifest is truncated or not one,
    packs it again from the source with a warning naming the damage, and gets the same bytes as
    the first pack (the same DVC version). Before, each stopped with an unexpected ShardError or
    JSONDecodeError (exit 70) that said to re-run the pack step: the step that was running."""
    from metagan.config import Params
    from metagan.task_data import prepare_task_dataset

    source = folder_source(tmp_path / "source")
    out = tmp_path / "tasks"
    params = Params().with_overrides(data={"packed_dir": str(out), "image_size": 32, "images_per_shard": 10})
    first = prepare_task_dataset(params, source=source)
    packed = {f.name: f.read_bytes() for f in out.iterdir()}
    assert sorted(packed) == ["manifest.json", "shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]

    damages = {
        "truncated shard": lambda: (out / "shard-00001.npz").write_bytes(packed["shard-00001.npz"][:1000]),
        "corrupt shard": lambda: (out / "shard-00001.npz").write_bytes(packed["shard-00001.npz"][:-1] + b"x"),
        "missing shard": lambda: (out / "shard-00002.npz").unlink(),
        "truncated manifest": lambda: (out / "manifest.json").write_bytes(packed["manifest.json"][:200]),
        "not a manifest": lambda: (out / "manifest.json").write_text("[]"),
        "deleted manifest, shards left": lambda: (out / "manifest.json").unlink(),  # was exit 70, "refusing to replace"
    }
    for damage, make in damages.items():
        make()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="metagan.task_data"):
            again = prepare_task_dataset(params, source=source)
        assert f"the packed tasks in {out} are damaged" in caplog.text and "packing them again" in caplog.text, damage
        assert {f.name: f.read_bytes() for f in out.iterdir()} == packed, damage
        assert np.array_equal(again.images, first.images) and again.class_names == first.class_names
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="metagan.task_data"):
        prepare_task_dataset(params, source=source)
    assert "packing" not in caplog.text  # a whole pack of the same source is reused


def test_a_damaged_pack_with_no_source_to_pack_from_is_damaged_state_with_advice_that_works(tmp_path):
    """Guarantee: where a pack is read without its source (the DVC meta-training stage, the other
    ranks of a distributed job), a damaged one is damaged state, exit 5, one line naming the file
    and saying how to pack it again (`metagan ingest`) or restore it (`dvc checkout`), never "re-run
    the pack step"."""
    from metagan.data.shards import packed_version
    from metagan.errors import kind_of

    out = tmp_path / "tasks"
    pack_shards(synthetic_classes(), out, SIZE, 1, images_per_shard=40)
    (out / "shard-00001.npz").write_bytes(b"truncated")
    with pytest.raises(ShardError) as caught:
        load_packed(out)
    (out / "manifest.json").write_text('{"format": "metagan-shards/1", "classes"')
    with pytest.raises(ShardError) as unreadable:
        packed_version(out)
    (out / "manifest.json").unlink()  # the shards remain: a pack that lost its manifest, not no pack
    with pytest.raises(ShardError) as lost:
        load_packed(out)
    assert "manifest.json is missing" in str(lost.value) and "shard(s) remain" in str(lost.value)
    for error, file in ((caught.value, "shard-00001.npz"), (unreadable.value, "manifest.json"),
                        (lost.value, "manifest.json")):
        assert kind_of(error).exit_code == 5
        assert str(out / file) in str(error) and "`metagan ingest` packs the tasks again" in str(error)
        assert "`dvc checkout data.dvc`" in str(error) and "re-run the pack step" not in str(error)


def test_the_sample_in_place_of_an_absent_source_is_said_when_meta_training_not_by_each_packing(tmp_path, caplog,
                                                                                               monkeypatch):
    """Guarantee: the shipped default data.source names a checkout's sibling folder
    (`../shared/data/...`), which an installed metagan has not; every ingestion packs the tasks
    and warned that it was absent (probe of 2026-12-06), though most train nothing. Packing falls
    back to the bundled sample quietly, and meta-training (metagan.lifecycle.meta_model) says what
    it is about to train on, once, with the fix; a source that was there, the sample asked for and
    an explicit `--source` say nothing."""
    from metagan.config import Params
    from metagan.task_data import prepare_task_dataset, sample_in_place_of_source

    monkeypatch.setenv("METAGAN_PROJECT", str(tmp_path))  # a project with no ../shared beside it
    params = Params().with_overrides(data={"packed_dir": str(tmp_path / "tasks"), "image_size": 32})
    with caplog.at_level(logging.WARNING):
        tasks = prepare_task_dataset(params)
    assert not caplog.records
    said = sample_in_place_of_source(params, tasks)
    default = tmp_path.parent / "shared/data/omniglot/images_background.npz"  # ../shared/..., from the project
    assert said and said.startswith(f"meta-training on the bundled sample ({tasks.num_classes} characters of 6 "
                                    f"alphabets) because data.source {default} is absent")
    assert "set data.source in params.yaml" in said and "--source PATH" in said
    asked_for = params.with_overrides(data={"source": params.data.sample})
    assert sample_in_place_of_source(asked_for, prepare_task_dataset(asked_for)) is None
    explicit = prepare_task_dataset(params, source=folder_source(tmp_path / "source"))
    assert sample_in_place_of_source(params, explicit) is None
    # nothing trained on the sample, nothing said: the shipped model used as it is (`meta.minutes: 0`,
    # which still warned, an operator probe), or a learner with nothing to meta-train
    from metagan.config import SHIPPED_META_MODEL

    as_is = params.with_overrides(meta={"minutes": 0.0, "init_checkpoint": str(SHIPPED_META_MODEL)})
    assert sample_in_place_of_source(as_is, tasks) is None
    assert sample_in_place_of_source(params.with_overrides(meta={"method": "classic"}), tasks) is None
    assert sample_in_place_of_source(params.with_overrides(meta={"minutes": 0.5, "init_checkpoint":
                                                                  str(SHIPPED_META_MODEL)}), tasks) == said


# ----------------------------------------------------------------------------------------------
# Readers


def test_zip_reader_reads_official_layout(tmp_path):
    black = png_bytes(Image.new("L", (20, 10), 0))
    path = tmp_path / "images_background.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name in ["Alpha/character01/a.png", "Alpha/character01/b.png",
                     "Alpha/character02/a.png", "Beta/character01/a.png"]:
            zf.writestr(f"images_background/{name}", black)
        zf.writestr("__MACOSX/images_background/Alpha/character01/._a.png", b"junk")
        zf.writestr("images_background/Alpha/character01/.DS_Store", b"junk")
        zf.writestr("README.txt", b"not an image")
    classes = list(read_source(path))
    assert [(c.name, c.group, len(c.images)) for c in classes] == [
        ("Alpha/character01", "Alpha", 2), ("Alpha/character02", "Alpha", 1), ("Beta/character01", "Beta", 1)]
    img = classes[0].load(10, 1)
    assert img.shape == (2, 10, 10, 1)
    assert img[0, :2].min() >= 245 and img[0, 4:6].max() < 10  # white padding above, black strokes


def test_folder_tree_reader(tmp_path, caplog):
    root = tmp_path / "flat"
    for cls, n in [("cat", 2), ("dog", 1)]:
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (6, 6), "red").save(root / cls / f"{i}.png")
    (root / "cat" / ".DS_Store").write_bytes(b"junk")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.png").write_bytes(b"junk")
    assert [(c.name, c.group, len(c.images)) for c in read_folder_tree(root)] == [("cat", "cat", 2), ("dog", "dog", 1)]

    nested = tmp_path / "nested"
    (nested / "fruit" / "apple").mkdir(parents=True)
    Image.new("L", (6, 6), 0).save(nested / "fruit" / "apple" / "0.png")
    assert [(c.name, c.group) for c in read_source(nested)] == [("fruit/apple", "fruit")]

    (root / "dog" / "broken.png").write_text("not a png")
    with pytest.raises(ImageError, match="broken.png: not an image"):
        pack_shards(read_folder_tree(root), tmp_path / "out", SIZE, 3)
    with caplog.at_level(logging.WARNING):
        manifest = pack_shards(read_folder_tree(root, on_error="skip"), tmp_path / "out", SIZE, 3)
    assert manifest["total_images"] == 3 and "broken.png" in caplog.text


def test_read_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_source(tmp_path / "missing.npz")
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(ValueError, match="unsupported dataset source"):
        read_source(tmp_path / "data.csv")


def test_a_source_that_is_not_what_it_should_be_is_bad_input(tmp_path):
    """`metagan ingest --source notes.npz` (a text file), a zip that is none, a folder without images
    ended in a ValueError: exit 70, "a bug"."""
    for name, data in (("text.npz", b"junk\n"), ("zip.npz", b"PK\x03\x04 truncated"), ("empty.npz", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadInput, match="is not an Omniglot npz"):
            read_omniglot_npz(tmp_path / name)
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(BadInput, match="expected arrays 'images' and 'labels'"):
        read_omniglot_npz(tmp_path / "other.npz")
    (tmp_path / "junk.zip").write_bytes(b"junk")
    (tmp_path / "no-images" / "a").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("x")
    for source, says in (("junk.zip", "not a zip file"), ("no-images", "no class folders with images"),
                         ("notes.txt", "unsupported dataset source")):
        with pytest.raises(BadInput, match=says):
            list(read_source(tmp_path / source))


def test_omniglot_npz_subset_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src" / "full.npz"
    src.parent.mkdir()
    np.savez_compressed(src, images=rng.random((5, 3, 9, 9)) > 0.2,
                        labels=np.repeat(np.arange(5)[:, None], 3, 1))
    (src.parent / "alphabets.json").write_text(json.dumps({"A": [0, 1], "B": [2, 4]}))
    dest = write_omniglot_subset(src, ["B"], tmp_path / "sub" / "sub.npz")
    assert json.loads((dest.parent / "alphabets.json").read_text()) == {"B": [0, 2]}
    classes = list(read_omniglot_npz(dest))
    assert [(c.name, c.group) for c in classes] == [(f"B/character0{i}", "B") for i in (1, 2, 3)]
    with np.load(src) as full:
        assert np.array_equal(np.stack(classes[1].images), full["images"][3])
    (dest.parent / "alphabets.json").unlink()  # without alphabets, each character is its own group
    assert [c.group for c in read_omniglot_npz(dest)] == ["character0001", "character0002", "character0003"]


def test_shipped_sample_is_readable():
    first = next(iter(read_omniglot_npz(SAMPLE_NPZ)))
    assert (first.name, first.group, len(first.images)) == ("Latin/character01", "Latin", 20)
    alphabets = json.loads((SAMPLE_NPZ.parent / "alphabets.json").read_text())
    assert list(alphabets) == ["Latin", "Greek", "Cyrillic", "Braille", "Futurama", "Hebrew"]
    assert SAMPLE_NPZ.stat().st_size < 1_000_000


@pytest.mark.skipif(not REAL_NPZ.exists(), reason="full Omniglot npz not available")
def test_real_omniglot_first_classes(tmp_path):
    classes = list(itertools.islice(read_omniglot_npz(REAL_NPZ), 3))
    assert [c.name for c in classes] == [f"Arcadian/character0{i}" for i in (1, 2, 3)]
    manifest = pack_shards(classes, tmp_path / "p", 32, 1)
    ds = load_packed(tmp_path / "p")
    assert manifest["total_images"] == 60 and ds.images.shape == (60, 32, 32, 1)
    assert ds.images.mean() > 200  # white background, dark strokes


def test_download_through_file_url(tmp_path):
    payload = tmp_path / "remote" / "images_background.zip"
    payload.parent.mkdir()
    with zipfile.ZipFile(payload, "w") as zf:
        zf.writestr("images_background/A/character01/a.png", png_bytes(Image.new("L", (4, 4))))
    import hashlib

    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    got = download_omniglot(tmp_path / "dl", url=payload.as_uri(), sha256=digest)
    assert got == tmp_path / "dl" / "images_background.zip" and got.read_bytes() == payload.read_bytes()
    assert [c.name for c in read_omniglot_zip(got)] == ["A/character01"]

    with pytest.raises(ValueError, match="checksum mismatch"):
        download_omniglot(tmp_path / "bad", url=payload.as_uri(), sha256="0" * 64)
    assert list((tmp_path / "bad").iterdir()) == []  # no partial file left behind
    (tmp_path / "page.zip").write_text("<html>moved</html>")
    with pytest.raises(ValueError, match="did not return a zip"):
        download_omniglot(tmp_path / "html", url=(tmp_path / "page.zip").as_uri())
    with pytest.raises(ValueError, match="scheme"):
        download_omniglot(tmp_path, url="ftp://example.com/x.zip")


# ----------------------------------------------------------------------------------------------
# Image decoding


def test_tensor_round_trip():
    a = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    t = to_tensor(a)
    assert t.shape == (2, 3, 5, 4) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(to_uint8(t), a)
    assert to_uint8(torch.full((1, 1, 2, 2), 3.0)).max() == 255  # clamped, not wrapped


def test_rgba_is_composited_on_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)  # fully transparent black...
    a[0, 0] = (255, 0, 0, 255)  # ...except one opaque red pixel
    a[0, 1] = (0, 0, 0, 128)  # and one half-transparent black one
    Image.fromarray(a, "RGBA").save(tmp_path / "x.png")
    out = load_image(tmp_path / "x.png", 4, 3)
    assert tuple(out[0, 0]) == (255, 0, 0) and 120 < out[0, 1, 0] < 135
    assert (out[1:] == 255).all()
    Image.fromarray(a[:, :, [0, 3]], "LA").save(tmp_path / "la.png")
    assert (load_image(tmp_path / "la.png", 4, 1)[1:] == 255).all()


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    im.putpixel((0, 0), 1)
    im.save(tmp_path / "p.png", transparency=0)
    out = load_image(tmp_path / "p.png", 4, 1)
    assert out[0, 0, 0] == 0 and (out.reshape(-1)[1:] == 255).all()


def test_16_bit_grayscale_is_scaled(tmp_path):
    Image.fromarray(np.full((4, 4), 100 * 257, np.uint16)).save(tmp_path / "deep.png")
    assert (load_image(tmp_path / "deep.png", 4, 1) == 100).all()


def test_cmyk(tmp_path):
    Image.new("CMYK", (4, 4), (0, 0, 0, 255)).save(tmp_path / "k.tif")
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "w.tif")
    assert load_image(tmp_path / "k.tif", 4, 3).max() < 5
    assert load_image(tmp_path / "w.tif", 4, 3).min() == 255


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("L", (4, 4), 0), Image.new("L", (4, 4), 255)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert load_image(tmp_path / "a.gif", 4, 1).max() == 0


def test_exif_orientation_and_padding(tmp_path):
    a = np.full((10, 20), 255, np.uint8)
    a[:, :10] = 0  # wide image, left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(a).save(tmp_path / "r.png", exif=exif)
    out = load_image(tmp_path / "r.png", 20, 1)[:, :, 0]
    # Displayed upright it is tall (20x10) with the black half on top, padded white left and right.
    assert out[:10, 5:15].max() == 0 and out[10:, 5:15].min() == 255
    assert out[:, :5].min() == 255 and out[:, 15:].min() == 255


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"hello, I am text", "not an image format"), ("truncated", "truncated")],
)
def test_broken_files_raise_image_error(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content == "truncated":
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        full = png_bytes(Image.fromarray(noise))
        content = full[: len(full) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageError, match=f"bad.png: {reason}"):
        load_image(path, 8, 1)


def test_formats_not_read_here_are_named_and_a_floats_missing_pixels_are_paper(tmp_path):
    """A probe's iPhone HEIC, SVG and PDF were "not an image format Pillow can read", a WMF "truncated
    or corrupt", a PNG with a large XMP packet too, and a float TIFF with one NaN pixel went black
    and was called blank (2026-12-07): the formats are named, with what to do; NaN is the paper."""
    import struct

    from PIL import PngImagePlugin

    header = struct.pack("<IHhhhhHI", 0x9AC6CDD7, 0, 0, 0, 100, 100, 1440, 0)  # a placeable WMF's header
    checksum = 0
    for i in range(0, 20, 2):
        checksum ^= struct.unpack("<H", header[i : i + 2])[0]
    uploads = {"a.heic": b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(100), "a.pdf": b"%PDF-1.4\n%",
               "a.svg": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>',
               "a.wmf": header + struct.pack("<H", checksum) + b"\x01\x00\x09\x00\x00\x03" + bytes(40)}
    said = {"a.heic": "a HEIC/HEIF photo (an iPhone's default format)", "a.pdf": "a PDF document, not an image",
            "a.svg": "an SVG drawing (a vector format, not pixels)", "a.wmf": "a Windows metafile (WMF"}
    for name, data in uploads.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError) as e:
            load_image(tmp_path / name, 8, 1)
        assert e.value.reason.startswith(said[name]) and "export the drawing as PNG or JPEG" in e.value.reason
    drawing = Image.new("L", (32, 32), 255)
    drawing.paste(0, (10, 4, 14, 28))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "y" * 2_000_000, zip=True)
    drawing.save(tmp_path / "xmp.png", pnginfo=info)
    with pytest.raises(ImageError, match="its metadata .* save the image again without metadata"):
        load_image(tmp_path / "xmp.png", 8, 1)
    floats = np.ones((32, 32), np.float32)
    floats[4:28, 10:14], floats[0, 0] = 0.0, np.nan
    Image.fromarray(floats, "F").save(tmp_path / "f.tif")
    assert np.array_equal(load_image(tmp_path / "f.tif", 32, 1), np.asarray(drawing)[..., None])


def test_decompression_bomb_is_refused_without_global_change(tmp_path):
    limit = Image.MAX_IMAGE_PIXELS
    Image.new("L", (100, 100), 255).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="big.png: 100x100 = 10000 pixels exceeds the limit of 1000"):
        load_image(tmp_path / "big.png", 8, 1, max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == limit
    assert load_image(tmp_path / "big.png", 8, 1, max_pixels=10_000).shape == (8, 8, 1)


def test_a_long_thin_image_is_shrunk_before_it_is_padded_to_a_square(tmp_path, monkeypatch):
    """A 1 x 100,000 strip (300 bytes of PNG, within the pixel limit) padded to a square as it was
    took a 10-gigapixel canvas (10 GB, 2 minutes; at 1 x 40,000,000 the kernel killed the whole
    ingestion): it is shrunk first, so no canvas is wider than MAX_CANVAS_SIDE."""
    from metagan.data import images

    Image.new("L", (1, 100_000), 0).save(tmp_path / "strip.png")
    Image.new("L", (images.MAX_CANVAS_SIDE, 3), 0).save(tmp_path / "wide.png")
    new = Image.new
    sides = []

    def canvas(mode, size, *rest, **kw):
        sides.append(max(size))
        assert max(size) <= images.MAX_CANVAS_SIDE, f"a canvas of {size}"
        return new(mode, size, *rest, **kw)

    monkeypatch.setattr(Image, "new", canvas)
    assert load_image(tmp_path / "strip.png", 16, 1).shape == (16, 16, 1)
    assert load_image(tmp_path / "wide.png", 16, 3).shape == (16, 16, 3)
    assert sides and max(sides) <= images.MAX_CANVAS_SIDE


def test_same_group_episodes_draw_every_task_from_one_alphabet(ds):
    ids = np.arange(ds.num_classes)
    groups_of = lambda classes: {ds.class_groups[int(c)] for c in classes}  # noqa: E731
    always = EpisodeSampler(ds, ids, shots=3, queries=2, seed=0, same_group=1.0)
    for _ in range(20):
        x, classes = always.sample_with_classes(2)
        assert len(groups_of(classes)) == 1 and len(set(classes.tolist())) == 2
    never = EpisodeSampler(ds, ids, shots=3, queries=2, seed=0)
    assert any(len(groups_of(never.sample_with_classes(2)[1])) > 1 for _ in range(20))
    # more tasks than any one group has (3 classes each): falls back to tasks from several groups
    assert len(groups_of(always.sample_with_classes(4)[1])) > 1
    with pytest.raises(ValueError, match="same_group"):
        EpisodeSampler(ds, ids, shots=3, queries=2, same_group=1.5)


def test_a_jpeg_cut_short_and_a_tiff_of_several_pages_are_refused_saying_so(tmp_path):
    """A probe of 2026-12-07: a JPEG whose data ended early (a premature marker, a copy stopped
    midway with its end marker) was taken as a drawing half covered in grey, libjpeg's fill, and a
    scanner's multi-page TIFF lost its later drawings unsaid. Now both are refused by name; a
    TIFF's thumbnail frame and an intact JPEG are read as before."""
    drawing = np.full((120, 120), 250, np.uint8)
    drawing[20:100, 50:60] = 10
    whole = png_bytes(Image.fromarray(drawing), format="JPEG")
    half = len(whole) // 2
    for name, data in {"marker.jpg": whole[:half] + b"\xff\xd0" + whole[half + 2:],
                       "cut.jpg": whole[:half] + b"\xff\xd9"}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError, match=r"a damaged JPEG: its data ends early \(the last \d+ of 120 rows"):
            load_image(tmp_path / name, 8, 1)
    (tmp_path / "whole.jpg").write_bytes(whole)
    assert load_image(tmp_path / "whole.jpg", 8, 1).shape == (8, 8, 1)
    page = Image.fromarray(drawing)
    page.save(tmp_path / "scans.tif", save_all=True, append_images=[page, page])
    with pytest.raises(ImageError, match="a TIFF of 3 pages: one drawing is read from a file; save each page"):
        load_image(tmp_path / "scans.tif", 8, 1)
    page.save(tmp_path / "thumbnail.tif", save_all=True, append_images=[page.resize((30, 30))])
    assert load_image(tmp_path / "thumbnail.tif", 8, 1).shape == (8, 8, 1)
