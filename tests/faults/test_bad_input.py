"""Bad input: every bad upload gets a specific reason naming customer and file; others still ingest.

Runs through the ingest flow's task (``flows.ingest.ingest_one.fn``), i.e. exactly what the
``ingest`` flow does for each customer folder. Conversions (documented in docs/RELIABILITY.md):
16-bit, palette, CMYK, alpha and animated images are converted (alpha composited on white, the
first frame of an animation); files that are not images, empty, truncated, over
``adapt.max_image_pixels`` (checked from the header, before any pixel is decoded), symbolic
links and duplicates are rejected with a reason.
"""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from flows.ingest import ingest_one
from metagan.config import Params
from metagan.errors import ConfigError
from metagan.customers import load_ingested

SIZE = Params().data.image_size  # the served size (64)


def drawing(value: int = 0, size: int = 40) -> np.ndarray:
    img = np.full((size, size), 255, np.uint8)
    img[8:32, 18:22] = value
    return img


def png_bytes(img: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a few rows of data: a decompression bomb's
    signature (a real one would hold gigabytes of zeros in a few hundred kilobytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def params(tmp_path) -> Params:
    return Params().with_overrides(adapt={"max_image_pixels": 200_000},
                                   paths={"ingested_customers": str(tmp_path / "ingested")})


@pytest.fixture
def uploads(tmp_path):
    """Two good customers beside whatever bad one a test adds."""
    root = tmp_path / "uploads"
    for name, value in (("good-1", 0), ("good-2", 60)):
        (root / name).mkdir(parents=True)
        Image.fromarray(drawing(value)).save(root / name / "a.png")
        Image.fromarray(drawing(value).T.copy()).save(root / name / "b.png")
    return root


def ingest_all(root, params):
    return {f.name: ingest_one.fn(f, params) for f in sorted(root.iterdir())}


def assert_good_customers_ingested(results, params):
    for name in ("good-1", "good-2"):
        assert results[name].ok and results[name].shots == 2, results[name]
        assert load_ingested(params.resolve(params.paths.ingested_customers), name).images.shape == (2, SIZE, SIZE, 1)


def truncated_png() -> bytes:
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()[: buf.tell() // 2]


def unsupported_dds() -> bytes:
    """A DDS texture whose pixel format Pillow does not decode (it raises NotImplementedError)."""
    import io

    buf = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 255)).save(buf, format="DDS")
    data = bytearray(buf.getvalue())
    data[80:84] = struct.pack("<I", 0)  # the pixel format's flags: none Pillow knows
    return bytes(data)


BAD_FILES = {
    # file name: (bytes, words the reason must contain)
    "notes.png": (b"these are my notes, not a drawing\n", "not an image format"),
    "report.pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "a PDF document, not an image: export the drawing as PNG or JPEG"),
    "empty.png": (b"", "empty file (0 bytes)"),
    "half.png": (truncated_png(), "truncated or corrupt"),
    "half.jpg": (truncated_jpeg(), "truncated or corrupt"),
    "bomb.png": (png_header_only(100_000, 100_000),
                 "100000x100000 = 10000000000 pixels exceeds the limit of 200000 (adapt.max_image_pixels; possible decompression bomb)"),
    "huge.png": (png_bytes(np.full((500, 500), 255, np.uint8)), "exceeds the limit of 200000"),
    "texture.png": (unsupported_dds(), "format variant Pillow cannot decode"),
}


@pytest.mark.parametrize("filename", BAD_FILES)
def test_a_bad_file_fails_its_customer_alone_naming_customer_file_and_reason(uploads, params, filename):
    """Guarantee: a customer whose upload is bad gets an error naming the customer, the file and a
    specific reason; nothing is written for them, and the other customers ingest normally."""
    data, reason = BAD_FILES[filename]
    (uploads / "bad").mkdir()
    (uploads / "bad" / filename).write_bytes(data)
    results = ingest_all(uploads, params)
    assert_good_customers_ingested(results, params)
    bad = results["bad"]
    assert not bad.ok
    assert "customer 'bad'" in bad.error and filename in bad.error and reason in bad.error, bad.error
    assert not (params.resolve(params.paths.ingested_customers) / "bad").exists()


def test_a_bomb_over_pillows_own_limit_gets_the_products_message_not_pillows(tmp_path):
    """Guarantee: an image over Pillow's own guard (2 x Image.MAX_IMAGE_PIXELS, where Pillow raises
    inside Image.open instead of warning) is refused in the words of the pixel check, "W x H = N
    pixels exceeds the limit of M", whether the limit is the product's (``max_pixels``) or, set above
    Pillow's, Pillow's own; a probe of 2026-12-07 got Pillow's "could be decompression bomb DOS attack"."""
    from metagan.data.images import ImageError, load_image

    over = 2 * Image.MAX_IMAGE_PIXELS // 10_000 + 1
    (tmp_path / "bomb.png").write_bytes(png_header_only(10_000, over))
    pixels = 10_000 * over
    for max_pixels, limit, setting in ((40_000_000, 40_000_000, "adapt.max_image_pixels"),
                                       (10 * pixels, 2 * Image.MAX_IMAGE_PIXELS, "Pillow's Image.MAX_IMAGE_PIXELS")):
        with pytest.raises(ImageError) as e:
            load_image(tmp_path / "bomb.png", 8, 1, max_pixels=max_pixels)
        assert e.value.reason == f"10000x{over} = {pixels} pixels exceeds the limit of {limit} " \
                                 f"({setting}; possible decompression bomb)", e.value.reason


def test_bad_files_beside_good_ones_are_rejected_with_reasons_and_the_rest_used(uploads, params, tmp_path):
    """Guarantee: bad files do not sink a customer who has enough good ones: each is listed with
    its reason (in the result and report.json) and the good files are used."""
    c = uploads / "mixed"
    c.mkdir()
    Image.fromarray(drawing(0)).save(c / "good.png")
    for name, (data, _) in BAD_FILES.items():
        (c / name).write_bytes(data)
    (c / "folder").mkdir()
    outside = tmp_path / "secret.png"
    Image.fromarray(drawing(90)).save(outside)
    (c / "link.png").symlink_to(outside)
    results = ingest_all(uploads, params)
    assert_good_customers_ingested(results, params)
    r = results["mixed"]
    assert r.ok and r.shots == 1
    reasons = dict(r.rejected)
    assert set(reasons) == set(BAD_FILES) | {"folder", "link.png"}
    for name, (_, reason) in BAD_FILES.items():
        assert reason in reasons[name]
    assert "symbolic link" in reasons["link.png"]
    assert "not a regular file" in reasons["folder"]
    report = (params.resolve(params.paths.ingested_customers) / "mixed" / "report.json").read_text()
    assert "half.jpg" in report and "decompression bomb" in report


def test_a_symlinked_customer_folder_is_refused(uploads, params):
    """Guarantee: a customer folder that links to another customer's uploads is refused (a model
    must be made from that customer's own files)."""
    (uploads / "copycat").symlink_to(uploads / "good-1", target_is_directory=True)
    results = ingest_all(uploads, params)
    assert_good_customers_ingested(results, params)
    assert not results["copycat"].ok and "symbolic link" in results["copycat"].error


def test_a_file_or_a_dangling_link_among_the_customer_folders_is_a_rejected_customer_said_aloud(uploads, params,
                                                                                                caplog):
    """Guarantee: a full scan of the uploads (`ingest`, `adapt`, `pipeline`, `demo`) that meets an
    entry where a customer folder would be but that is none (a regular file, a symbolic link to
    nothing) warns naming it and why, and counts it as a rejected customer when its name is a
    customer id (a customer's botched upload); one no customer can be named (README.txt) is only
    warned of, so it fails no night. The customers beside them are ingested. A probe of 2026-12-06
    found them passed over without a word, exit 0."""
    import logging

    from flows.ingest import customer_folders

    (uploads / "notes.txt").write_text("my customers")
    (uploads / "acme").write_bytes(b"PK")  # a customer's zip saved without its extension
    (uploads / "gone").symlink_to(uploads.parent / "no-such-folder")
    (uploads / "loop").symlink_to("loop")  # a loop, said as one: it was "a symbolic link to nothing" (probe of 2026-12-07)
    (uploads / ".DS_Store").write_bytes(b"")  # hidden: ignored, as ever
    with caplog.at_level(logging.WARNING, logger="flows.ingest"):
        found, rejected = customer_folders(uploads)
    assert [f.name for f in found] == ["good-1", "good-2"]
    acme, gone, loop, notes = uploads / "acme", uploads / "gone", uploads / "loop", uploads / "notes.txt"
    nowhere = uploads.parent / "no-such-folder"
    assert {r.customer_id: (r.ok, r.error) for r in rejected} == {
        "acme": (False, f"customer 'acme': its upload folder {acme} is a file, not a folder"),
        "gone": (False, f"customer 'gone': its upload folder {gone} is a symbolic link to nothing ({nowhere})"),
        "loop": (False, f"customer 'loop': its upload folder {loop} is a symbolic link that leads back to itself "
                        "(loop): a loop")}
    assert [r.getMessage() for r in caplog.records] == [
        f"{acme} is no customer folder: it is a file, not a folder; left out (the other customers go on)",
        f"{gone} is no customer folder: it is a symbolic link to nothing ({nowhere}); left out (the other customers "
        "go on)", f"{loop} is no customer folder: it is a symbolic link that leads back to itself (loop): a loop; left "
        "out (the other customers go on)", f"{notes} is no customer folder: it is a file, not a folder, and no customer "
        "id (ASCII letters, digits, - and _); ignored"]
    assert_good_customers_ingested({f.name: ingest_one.fn(f, params) for f in found}, params)
    # the customers named to ingest are as before: only those, each one not there rejected
    found, rejected = customer_folders(uploads, ["good-1", "notes.txt", "nosuch"])
    assert [f.name for f in found] == ["good-1"]
    assert [r.error for r in rejected] == [f"customer 'nosuch': its upload folder {uploads / 'nosuch'} does not exist",
                                           f"customer 'notes.txt': its upload folder {notes} is a file, not a folder"]


def test_the_hour_says_an_entry_that_is_no_customer_folder_once_per_change(uploads, params, tmp_path, monkeypatch,
                                                                          caplog):
    """Guarantee: the hourly run (`adapt-changed`) says what a full scan says of an entry where a
    customer folder would be that is none: one named as a customer (a file `acme`, a link to nothing)
    is among the hour's changed entries, ingested and so rejected ("its upload folder ... is a file,
    not a folder"), and its state recorded, so the next hour is quiet until it changes (a folder made
    in its place is ingested); one no customer can be named (README.txt, a folder `my customer` or
    `CON`) is warned of once and listed in the hour's result (`ignored`). Until a probe of 2026-12-07
    the hour's plan passed both over without a word, every hour (only the full scans said them); a
    misnamed folder was ingested and rejected every hour."""
    import logging
    import shutil

    from flows.hourly import changed_folders
    from flows.ingest import customer_folders
    from metagan import tracking
    from metagan.lifecycle import fleet

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    tracking.create_store()
    ingested = params.resolve(params.paths.ingested_customers)

    def hour():  # the hour's plan and what its ingestion does with the entries named, as the flow runs them
        with caplog.at_level(logging.WARNING, logger="flows.ingest"):
            caplog.clear()
            changes = changed_folders.fn(params, str(uploads))
        found, rejected = customer_folders(uploads, [str(f) for f in changes.folders], ingested)
        results = rejected + [ingest_one.fn(f, params) for f in found]
        fleet.record_ingestion(results)  # the ingest flow's record_ingestion task
        return changes, {r.customer_id: r.error for r in results if not r.ok}, [r.getMessage() for r in caplog.records]

    hour()  # the good customers, ingested
    (uploads / "acme").write_bytes(b"PK")  # a customer's zip saved without its extension
    (uploads / "gone").symlink_to(tmp_path / "no-such-folder")
    (uploads / "README.txt").write_text("my customers")
    shutil.copytree(uploads / "good-1", uploads / "my customer")  # folders no customer can be named
    shutil.copytree(uploads / "good-1", uploads / "CON")
    changes, rejected, said = hour()
    acme, gone, readme = uploads / "acme", uploads / "gone", uploads / "README.txt"
    assert [f.name for f in changes.folders] == ["acme", "gone"]
    assert rejected == {"acme": f"customer 'acme': its upload folder {acme} is a file, not a folder",
                        "gone": f"customer 'gone': its upload folder {gone} is a symbolic link to nothing "
                                f"({tmp_path / 'no-such-folder'})"}
    device = ("is a folder named as no customer can be (unsafe customer id: 'CON' is a device name on Windows (CON, "
              "PRN, AUX, NUL, COM0-COM9, LPT0-LPT9, in any case), which no file or folder there can bear: choose "
              "another id)")
    spaced = ("is a folder named as no customer can be (unsafe customer id: use 1-64 ASCII letters (A-Z, a-z), "
              "digits, '_' or '-', starting with a letter or digit)")
    assert changes.strays == {"CON": device, "README.txt": "is a file, not a folder", "my customer": spaced}
    assert said == [
        f"{acme} is no customer folder: it is a file, not a folder; left out (the other customers go on)",
        f"{gone} is no customer folder: it is a symbolic link to nothing ({tmp_path / 'no-such-folder'}); left out "
        "(the other customers go on)",
        f"{readme} is no customer folder: it is a file, not a folder, and no customer id (ASCII letters, digits, - "
        "and _); ignored",
        f"{uploads / 'CON'} {device}: its uploads are not read until it is renamed",
        f"{uploads / 'my customer'} {spaced}: its uploads are not read until it is renamed"]
    # said once: the next hour is quiet (until a probe of 2026-12-07 a misnamed folder was ingested and
    # rejected every hour, each hour partial)
    assert hour() == (fleet.UploadChanges([]), {}, [])
    (uploads / "my customer").rename(uploads / "my-customer")  # renamed: a customer
    changes, rejected, said = hour()
    assert [f.name for f in changes.folders] == ["my-customer"] and rejected == {} and said == []
    acme.unlink()  # the customer uploads its folder after all
    shutil.copytree(uploads / "good-1", acme)
    changes, rejected, said = hour()
    assert [f.name for f in changes.folders] == ["acme"] and rejected == {} and said == []
    assert (ingested / "acme" / "shots.npz").exists()


def test_a_new_customer_id_in_another_case_than_a_known_or_batch_one_is_refused_alone(uploads, params, tmp_path,
                                                                                       monkeypatch):
    """Guarantee: ids are case-sensitive, but on a case-insensitive file system (macOS, Windows)
    `Acme` and `acme` would share data/customers/<id>, artifacts/customers/<id> and upload folders.
    Every run that ingests (`ingest`, `ingest --customer`, `adapt`, `pipeline`, `demo`, the hourly
    run: all through `customer_folders`) refuses a NEW id that differs only in case from a known one
    (shots ingested, a registered model) or from another folder of the batch, naming both and why,
    before its folder is read: nothing written, nothing recorded in the index (the next run looks
    again); the others are ingested. An id known with that very spelling passes. Where the registry
    cannot be read, the new ids alone wait for the next run."""
    import shutil

    from metagan import known_customers, mlflow_sqlite, model_names, store, tracking
    from metagan.retry import ServiceUnavailable
    from flows.ingest import customer_folders

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    tracking.create_store()
    store.client().create_registered_model(model_names.customer_model_name("Zed"))  # adapted, its shots since lost
    ingested = params.resolve(params.paths.ingested_customers)
    assert ingest_one.fn(uploads / "good-1", params).ok
    for twin in ("GOOD-1", "zed", "Zed", "New", "new"):
        shutil.copytree(uploads / "good-2", uploads / twin)
    found, rejected = customer_folders(uploads, None, ingested)
    assert [f.name for f in found] == ["Zed", "good-1", "good-2"]
    errors = {r.customer_id: r.error for r in rejected}
    assert not any(r.ok or r.signature for r in rejected)  # so the fleet index records no such id
    shared = "ids are case-sensitive, but on a case-insensitive file system (macOS, Windows, some mounts) the two " \
             "would share folders and mix or overwrite each other's shots and models"
    assert errors == {
        "GOOD-1": f"customer 'GOOD-1': its id differs only in case from the known customer 'good-1': {shared}; if it "
                  "is that customer, upload to 'good-1', else choose another id",
        "zed": f"customer 'zed': its id differs only in case from the known customer 'Zed': {shared}; if it is that "
               "customer, upload to 'Zed', else choose another id",
        "New": f"customer 'New': its id differs only in case from 'new', uploaded in the same batch: {shared}; rename "
               "one of the two folders",
        "new": f"customer 'new': its id differs only in case from 'New', uploaded in the same batch: {shared}; rename "
               "one of the two folders"}
    assert_good_customers_ingested({f.name: ingest_one.fn(f, params) for f in found}, params)
    assert sorted(p.name for p in ingested.iterdir()) == ["Zed", "good-1", "good-2"]
    # the folders named to ingest (`ingest --customer`, the hourly run's changed ones): the same rule
    found, rejected = customer_folders(uploads, ["zed", "good-2", "new"], ingested)
    assert [f.name for f in found] == ["good-2", "new"] and [r.customer_id for r in rejected] == ["zed"]
    # a tracking server is asked by name (ILIKE), or, for many new ids, lists its customers once
    monkeypatch.setattr(mlflow_sqlite, "database_path", lambda uri: None)
    for by_name in (known_customers.SEARCHED_BY_NAME, 0):
        monkeypatch.setattr(known_customers, "SEARCHED_BY_NAME", by_name)
        assert {r.customer_id: r.error for r in customer_folders(uploads, None, ingested)[1]} == errors
    shutil.rmtree(ingested / "Zed")
    # the registry unreadable: the new ids wait for the next run, the known ones go on
    monkeypatch.setattr(known_customers, "registered_in_any_case",
                        lambda ids: (_ for _ in ()).throw(ServiceUnavailable("MLflow at http://mlflow:5000 unavailable")))
    found, rejected = customer_folders(uploads, None, ingested)
    assert [f.name for f in found] == ["good-1", "good-2"]
    assert {r.customer_id: r.error for r in rejected}["zed"] == (
        "customer 'zed': cannot tell whether a registered customer has its id in another case (MLflow at "
        "http://mlflow:5000 unavailable); it is ingested once the registry answers")


def _save_16_bit(path):
    a = np.full((40, 40), 65535, np.uint16)
    a[8:32, 18:22] = 0
    Image.fromarray(a).save(path)


def _save_palette_with_transparency(path):
    p = Image.new("P", (40, 40), 0)  # index 0: black, but transparent -> white background
    p.putpalette([0, 0, 0] + [20, 20, 20])
    p.paste(1, (18, 8, 22, 32))
    p.save(path, transparency=0)


def _save_cmyk_jpeg(path):
    im = Image.new("CMYK", (40, 40), (0, 0, 0, 0))  # no ink: white
    im.paste((0, 0, 0, 255), (18, 8, 22, 32))  # black ink stroke
    im.save(path, quality=100)


def _save_rgba(path):
    a = np.zeros((40, 40, 4), np.uint8)  # fully transparent black: becomes white
    a[8:32, 18:22] = (0, 0, 0, 255)
    Image.fromarray(a, "RGBA").save(path)


def _save_la(path):
    a = np.zeros((40, 40, 2), np.uint8)
    a[8:32, 18:22] = (0, 255)
    Image.fromarray(a, "LA").save(path)


def _save_animated_gif(path):
    first = Image.fromarray(drawing(0))
    second = Image.new("L", (40, 40), 0)  # all black: must not be what is used
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)


CONVERTED = {"16bit.png": _save_16_bit, "palette.png": _save_palette_with_transparency,
             "cmyk.jpg": _save_cmyk_jpeg, "rgba.png": _save_rgba, "la.png": _save_la,
             "animated.gif": _save_animated_gif}


@pytest.mark.parametrize("filename", CONVERTED)
def test_unusual_formats_are_converted_to_the_dataset_convention(uploads, params, filename):
    """Guarantee: 16-bit, palette, CMYK, alpha and animated uploads are converted (not rejected) to
    8-bit grayscale with a white background: transparency becomes white, an animation gives its
    first frame, so the shot looks like the same drawing saved as a plain PNG."""
    c = uploads / "formats"
    c.mkdir()
    CONVERTED[filename](c / filename)
    results = ingest_all(uploads, params)
    assert_good_customers_ingested(results, params)
    assert results["formats"].ok and results["formats"].rejected == [], results["formats"]
    img = load_ingested(params.resolve(params.paths.ingested_customers), "formats").images[0, :, :, 0]
    reference = np.asarray(Image.fromarray(drawing(0)).resize((SIZE, SIZE), Image.Resampling.LANCZOS))
    assert img[0, 0] >= 250 and img[SIZE - 1, 0] >= 250  # white background, whatever the format
    assert img.min() <= 40  # the dark stroke survived
    assert np.abs(img.astype(int) - reference).mean() < 8


def test_too_few_usable_shots_name_the_customer_and_every_rejected_file(uploads, params):
    """Guarantee: a customer left with fewer usable shots than adapt.min_shots fails with a
    message listing each rejected file and why (duplicates included)."""
    params = params.with_overrides(adapt={"min_shots": 2})
    c = uploads / "few"
    c.mkdir()
    Image.fromarray(drawing(0)).save(c / "a.png")
    Image.fromarray(drawing(0)).save(c / "a-again.png")  # same pixels: a duplicate upload
    (c / "empty.png").write_bytes(b"")
    results = ingest_all(uploads, params)
    assert_good_customers_ingested(results, params)
    err = results["few"].error
    assert "customer 'few'" in err and "1 usable image(s), at least 2 needed" in err
    assert "a.png: duplicate of a-again.png" in err or "a-again.png: duplicate of a.png" in err
    assert "empty.png: empty file" in err


def test_too_many_shots_and_empty_folders_fail_alone(uploads, params):
    """Guarantee: more than adapt.max_shots usable images, or an empty folder, fails that customer
    with the count in the message; the others ingest."""
    params = params.with_overrides(adapt={"max_shots": 3})
    many = uploads / "many"
    many.mkdir()
    for i in range(6):
        Image.fromarray(drawing(i * 30)).save(many / f"{i}.png")
    (uploads / "empty").mkdir()
    (uploads / "empty" / ".DS_Store").write_bytes(b"\x00\x00")  # hidden files are not uploads
    results = ingest_all(uploads, params)
    assert_good_customers_ingested(results, params)
    assert "customer 'many'" in results["many"].error and "at most 3 allowed" in results["many"].error
    assert "customer 'empty'" in results["empty"].error and "0 usable image(s)" in results["empty"].error


@pytest.mark.parametrize("name", ["..", "a b", "a;rm -rf", "ünïcode", "-dash-first", "x" * 65, "a:b"])
def test_unsafe_customer_folder_names_fail_alone_and_write_nothing(uploads, params, tmp_path, name):
    """Guarantee: a customer id (folder name) with path tricks or unsafe characters is refused
    before any file is read or written; the other customers ingest."""
    folder = uploads / name
    if name != "..":
        folder.mkdir()
        Image.fromarray(drawing(0)).save(folder / "a.png")
    results = ingest_all(uploads, params)
    bad = ingest_one.fn(folder, params)
    assert not bad.ok and "unsafe customer id" in bad.error and repr(folder.name) in bad.error
    assert_good_customers_ingested(results, params)
    ingested = params.resolve(params.paths.ingested_customers)
    assert sorted(p.name for p in ingested.iterdir()) == ["good-1", "good-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ingested", "uploads"]


def test_windows_device_names_as_customer_ids_are_refused_alone_at_ingestion(uploads, params):
    """Guarantee: the id rules keep ids safe as file names on Windows too, so a customer folder named
    as a Windows device (CON, PRN, AUX, NUL, COM0-9, LPT0-9, in any case; with an extension, `con.txt`,
    already no id) is refused at ingestion, that customer alone, saying why, nothing written for it;
    names that only begin like one (`console`, `com10`) are ids like any. Until a probe of 2026-12-07
    `CON` and the others were ingested."""
    from metagan.uploads import windows_device_name

    reserved = ["CON", "con", "Prn", "aux", "NUL", "COM1", "com9", "LPT1", "lpt0"]
    for name in reserved + ["console", "com10", "lpt"]:
        (uploads / name).mkdir()
        for i in range(2):
            Image.fromarray(drawing(i * 40)).save(uploads / name / f"{i}.png")
    results = ingest_all(uploads, params)
    assert_good_customers_ingested(results, params)
    for name in reserved:
        assert not results[name].ok and results[name].error == (
            f"customer {name!r}: unsafe customer id: {name!r} is a device name on Windows (CON, PRN, AUX, NUL, "
            "COM0-COM9, LPT0-LPT9, in any case), which no file or folder there can bear: choose another id")
    assert all(results[name].ok for name in ("console", "com10", "lpt"))
    ingested = params.resolve(params.paths.ingested_customers)
    assert sorted(p.name for p in ingested.iterdir()) == ["com10", "console", "good-1", "good-2", "lpt"]
    assert windows_device_name("con.txt") and windows_device_name("Nul.tar.gz") and not windows_device_name("cons")


@pytest.mark.parametrize("customer_id", ["../good-1", "a/b", "..", "/etc/passwd", "a\x00b"])
def test_path_like_customer_ids_are_refused_by_every_entry_point(params, customer_id, tmp_path):
    """Guarantee: ids that are paths never reach the file system or the registry: loading
    ingested shots, adapting and generating all refuse them."""
    out = tmp_path / "generated"
    from flows.adapt_customers import adapt_one
    from flows.generate import draw
    from metagan.lifecycle.fleet import named_customers
    from metagan.uploads import CustomerUploads, UploadError

    with pytest.raises(UploadError, match="unsafe customer id"):
        load_ingested(params.resolve(params.paths.ingested_customers), customer_id)
    with pytest.raises(UploadError, match="unsafe customer id"):
        adapt_one(CustomerUploads(customer_id, np.zeros((1, 32, 32, 1), np.uint8), ["a.png"]), "1", "", params)
    (batch,) = draw.fn(named_customers([customer_id]).due, False, 1, str(out), 0, "png", 0.0, 86400)  # the night's task
    assert not batch.ok and "unsafe customer id" in batch.error and not out.exists()


@pytest.mark.parametrize("text, message", [
    ("adapt:\n  stepz: 3\n", "adapt.stepz"),
    ("adapt:\n  max_image_pixels: 1e9\n", "adapt.max_image_pixels"),
    ("paths:\n  generated: 42\n", "paths.generated"),
    ("nonsense: {}\n", "nonsense"),
    ("- a list\n", "top level must be a mapping"),
    ("adapt:\n  steps: 3\nadapt:\n  steps: 4\n", "'adapt' is given twice"),  # plain YAML keeps the last
])
def test_bad_params_yaml_fails_before_any_work(tmp_path, uploads, text, message, capsys, monkeypatch):
    """Guarantee: a params.yaml with unknown keys or wrong types is rejected with the offending key
    before any flow starts and anything is read, written, versioned or registered."""
    import flows.ingest
    from flows.app.cli import main
    from metagan.errors import ExitCode

    started = []
    monkeypatch.setattr(flows.ingest, "ingest", lambda *a, **k: started.append(a))
    bad = tmp_path / "params.yaml"
    bad.write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(["--params", str(bad), "ingest", "--customers", str(uploads)])
    assert rc == ExitCode.BAD_INPUT and started == []
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.raises(ConfigError, match=message.split(".")[-1]):
        from flows.common import load

        load(str(bad))


def test_a_decoder_failing_as_no_one_listed_rejects_that_file_alone(uploads, params, monkeypatch):
    """Guarantee: untrusted bytes may make a decoder raise anything (IndexError, struct.error...);
    such a failure rejects the file, with its reason, never its customer or the others (a probe's
    DDS texture raised NotImplementedError, which ended every customer's ingestion, exit 70)."""
    from PIL import ImageOps

    real = ImageOps.exif_transpose

    def odd_decoder(im, *args, **kwargs):
        if im.size == (41, 41):  # odd.png's
            raise IndexError("tuple index out of range")
        return real(im, *args, **kwargs)

    monkeypatch.setattr(ImageOps, "exif_transpose", odd_decoder)
    c = uploads / "mixed"
    c.mkdir()
    Image.fromarray(drawing(0)).save(c / "good.png")
    Image.fromarray(drawing(30, size=41)).save(c / "odd.png")
    results = ingest_all(uploads, params)
    assert_good_customers_ingested(results, params)
    assert results["mixed"].ok and results["mixed"].shots == 1
    assert dict(results["mixed"].rejected)["odd.png"] == ("the image decoder failed on it "
                                                          "(IndexError: tuple index out of range)")


def test_a_bug_met_by_one_customers_uploads_fails_that_customer_alone(uploads, params, monkeypatch):
    """Guarantee: whatever goes wrong ingesting one customer (a bug included) fails that customer
    alone, naming what went wrong; the others are ingested (only upload and file-system errors were
    caught per customer: anything else stopped every customer's ingestion)."""
    import metagan.customers

    real = metagan.customers.load_customer_uploads

    def buggy(folder, *args, **kwargs):
        if folder.name == "unlucky":
            raise ZeroDivisionError("division by zero")
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(metagan.customers, "load_customer_uploads", buggy)
    (uploads / "unlucky").mkdir()
    Image.fromarray(drawing(0)).save(uploads / "unlucky" / "a.png")
    results = ingest_all(uploads, params)
    assert_good_customers_ingested(results, params)
    assert not results["unlucky"].ok
    assert results["unlucky"].error == ("customer 'unlucky': ingestion failed (ZeroDivisionError: division by zero); "
                                        "the others went on")


def test_a_postscript_upload_is_refused_without_running_ghostscript(uploads, params, tmp_path, monkeypatch):
    """Guarantee: an EPS upload is refused with its reason, and nothing is run on it. Pillow renders
    PostScript by running Ghostscript on the file, wherever `gs` is installed: a customer's upload
    was a program this machine ran (a probe of 2026-12-07; `{} loop`, 30 bytes, never ends, and held
    the run), so it is refused from its header, before any pixel is drawn."""
    from PIL import EpsImagePlugin

    ran = tmp_path / "ghostscript-ran"
    gs = tmp_path / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" >> {ran}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", str(gs))  # as if Ghostscript were installed
    c = uploads / "mixed"
    c.mkdir()
    Image.fromarray(drawing(0)).save(c / "good.png")
    Image.fromarray(drawing(30)).save(c / "drawing.eps")  # Pillow writes EPS itself, without Ghostscript
    (c / "loop.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 40 40\n{} loop\n")
    results = ingest_all(uploads, params)
    assert not ran.exists(), ran.read_text()
    assert_good_customers_ingested(results, params)
    assert results["mixed"].ok and results["mixed"].shots == 1
    rejected = dict(results["mixed"].rejected)
    assert set(rejected) == {"drawing.eps", "loop.eps"}
    assert all("PostScript (EPS)" in reason and "PNG" in reason for reason in rejected.values()), rejected
