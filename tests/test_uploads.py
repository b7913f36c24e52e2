import numpy as np
import pytest
from PIL import Image

from metagan.customers import ingest_customer, load_ingested
from metagan.uploads import UploadError, load_customer_uploads, validate_customer_id


def png(path, value=0, size=40):
    img = np.full((size, size), 255, np.uint8)
    img[10:30, 18:22] = value
    Image.fromarray(img).save(path)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", ".hidden", "", "x" * 65, "name with space", "a\\b"])
def test_unsafe_customer_ids_are_rejected(bad):
    with pytest.raises(UploadError, match="unsafe customer id"):
        validate_customer_id(bad)


def test_an_id_that_differs_only_in_case_from_a_known_or_batch_id_is_refused_naming_both():
    """Ids are case-sensitive, but `Acme` and `acme` would share folders on a case-insensitive file
    system: a new id refused for a known id or another id of its batch in another case, naming both
    and why; an id known with that very spelling passes, even beside its twin."""
    with pytest.raises(UploadError) as refused:
        validate_customer_id("acme", known={"Acme", "beta"})
    assert refused.value.customer == "acme"
    assert str(refused.value) == (
        "customer 'acme': its id differs only in case from the known customer 'Acme': ids are case-sensitive, but on "
        "a case-insensitive file system (macOS, Windows, some mounts) the two would share folders and mix or "
        "overwrite each other's shots and models; if it is that customer, upload to 'Acme', else choose another id")
    with pytest.raises(UploadError, match=r"^customer 'acme': its id differs only in case from 'ACME', uploaded in "
                                          r"the same batch: .*; rename one of the two folders$"):
        validate_customer_id("acme", known={"beta"}, batch=["ACME", "acme", "beta"])
    assert validate_customer_id("Acme", known={"Acme", "acme"}, batch=["Acme", "acme"]) == "Acme"  # both known
    assert validate_customer_id("acme", known={"beta"}, batch=["acme", "acme-2"]) == "acme"
    # casefold makes "strasse" of the unsafe "Straße": no twin of a safe id (it is refused for itself)
    assert validate_customer_id("strasse", batch=["Stra\u00dfe"]) == "strasse"


def test_bad_files_are_rejected_with_reasons_and_the_rest_used(tmp_path):
    c = tmp_path / "acme"
    c.mkdir()
    png(c / "a.png", 0)
    png(c / "b.png", 40)
    png(c / "b_copy.png", 40)  # same pixels: a duplicate upload
    (c / "notes.txt").write_text("hello")
    (c / "empty.jpg").write_bytes(b"")
    up = load_customer_uploads(c, 32, 1)
    assert up.files == ["a.png", "b.png"]
    reasons = dict(up.rejected)
    assert "duplicate of b.png" in reasons["b_copy.png"]
    assert "empty" in reasons["empty.jpg"]
    assert "notes.txt" in reasons
    assert up.images.shape == (2, 32, 32, 1)


def test_an_upload_too_small_to_hold_strokes_is_refused_as_too_small_not_as_a_photograph(tmp_path):
    """An 8x8 upload blown up to 64 px was refused as "a photograph, texture or gradient" (or, for
    half the drawings shrunk that far, served as a blur): now refused for its size, by name."""
    c = tmp_path / "acme"
    c.mkdir()
    png(c / "scan.png", 0, size=40)
    Image.new("L", (8, 8), 255).save(c / "thumb.png")
    Image.new("L", (16, 3), 255).save(c / "strip.png")  # the longer side counts: 16 is enough at 64
    up = load_customer_uploads(c, 64, 1)
    assert up.files == ["scan.png", "strip.png"]
    assert dict(up.rejected)["thumb.png"] == ("8x8 pixels: too small to hold a drawing's strokes; upload it at "
                                              "least 16 pixels across (a scan is about 100)")


def test_what_systems_leave_in_folders_is_passed_over_as_hidden_files_are(tmp_path):
    """A macOS zip's __MACOSX, a volume's lost+found, a NAS's @eaDir were customers with unsafe ids on
    every run (exit 1, and the hour ingested them again each hour); Thumbs.db and desktop.ini were
    uploads "left out" on every line (a probe of 2026-12-07). They are passed over unseen."""
    from metagan.uploads import folder_signature, upload_entries

    root = tmp_path / "uploads"
    for junk in ("__MACOSX", "lost+found", "@eaDir", "System Volume Information", "$RECYCLE.BIN"):
        (root / junk).mkdir(parents=True)
    (root / "Thumbs.db").write_bytes(b"\0" * 10)
    c = root / "acme"
    (c / "__MACOSX").mkdir(parents=True)
    png(c / "a.png")
    before = folder_signature(c)
    for junk in ("Thumbs.db", "desktop.ini", "DESKTOP.INI"):
        (c / junk).write_bytes(b"junk")
    assert upload_entries(root) == ([c], [])
    up = load_customer_uploads(c, 32, 1)
    assert (up.files, up.rejected) == (["a.png"], [])
    assert folder_signature(c) == before  # the hour sees no change when Windows writes its thumbnails


def test_a_name_that_reads_as_another_is_rejected_and_an_empty_folder_said_empty(tmp_path):
    """Direction overrides printed raw make a name read as another (a probe of 2026-12-07); an empty
    folder said only "0 usable image(s)"."""
    c = tmp_path / "acme"
    c.mkdir()
    png(c / "a.png")
    png(c / "b.png", 40)
    (c / "b.png").rename(c / "b\u202egnp.exe")
    up = load_customer_uploads(c, 32, 1)
    assert up.files == ["a.png"]
    assert up.rejected == [("b\\u202egnp.exe", "the file name holds control characters (a line break, a tab...): "
                                              "rename the file")]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"x")
    with pytest.raises(UploadError, match=r"0 usable image\(s\), at least 1 needed: the folder holds no file"):
        load_customer_uploads(empty, 32, 1)


def test_too_few_and_too_many_shots(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UploadError, match="0 usable image"):
        load_customer_uploads(empty, 32, 1)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(4):
        png(many / f"{i}.png", i * 10)
    with pytest.raises(UploadError, match="at most 3"):
        load_customer_uploads(many, 32, 1, max_shots=3)


def test_a_customers_uploads_are_read_up_to_a_budget_of_pixels_and_the_rest_said_not_read(tmp_path):
    """A probe of 2026-12-07: 200 near-blank 40-megapixel pages held an ingestion 54 s, each decoded
    and judged in turn. A customer's uploads are now decoded up to READ_BUDGET_IMAGES times the
    per-image limit in all; the files after are left out, said, and the drawings read are served."""
    from metagan.uploads import READ_BUDGET_IMAGES

    c = tmp_path / "acme"
    c.mkdir()
    for i in range(READ_BUDGET_IMAGES + 5):  # 40 x 40 = 1,600 pixels each: the budget is READ_BUDGET_IMAGES of them
        png(c / f"{i:02d}.png", i * 5)
    up = load_customer_uploads(c, 32, 1, max_shots=100, max_pixels=1_600)
    assert up.files == [f"{i:02d}.png" for i in range(READ_BUDGET_IMAGES)]
    reasons = dict(up.rejected)
    not_read = [n for n, r in reasons.items() if r.startswith("not read: this customer's uploads before it held")]
    assert not_read == [f"{i:02d}.png" for i in range(READ_BUDGET_IMAGES, READ_BUDGET_IMAGES + 5)], reasons
    assert f"({READ_BUDGET_IMAGES} x adapt.max_image_pixels)" in reasons[not_read[0]]


def test_a_folder_of_thousands_of_bad_files_gets_a_readable_line_and_the_whole_list_elsewhere(tmp_path):
    """Guarantee: a customer refused for thousands of bad files gets an error line that names the
    first few of each reason and counts the rest ("... and 4,995 more"), and past ten reasons counts
    their files; every file and reason stays in the error's ``rejected`` and the ingestion's result.
    Until a probe of 2026-12-07 the line named all of them (60 KB for 5,000 files)."""
    c = tmp_path / "up" / "acme"
    c.mkdir(parents=True)
    for i in range(5_000):
        (c / f"{i:05d}.png").write_bytes(b"")
    for i in range(12):  # twelve other reasons: a duplicate of each of twelve files
        png(c / f"orig-{i:02d}.png", i * 10)
        png(c / f"z-copy-{i:02d}.png", i * 10)
    with pytest.raises(UploadError) as refused:
        load_customer_uploads(c, 32, 1, min_shots=13)
    line = str(refused.value)
    assert len(line) < 1_000, len(line)
    assert ("00000.png, 00001.png, 00002.png, 00003.png, 00004.png and 4,995 more: empty file (0 bytes); "
            "z-copy-00.png: duplicate of orig-00.png; ") in line, line
    assert line.endswith("z-copy-08.png: duplicate of orig-08.png; and 3 more file(s) for 3 other reason(s))"), line
    assert len(refused.value.rejected) == 5_012
    r = ingest_customer(c, tmp_path / "data", 32, 1, 13, 20, 10**7)
    assert not r.ok and len(r.error) < 1_000 and len(r.rejected) == 5_012


def test_ingest_packs_shots_and_is_byte_reproducible(tmp_path):
    c = tmp_path / "up" / "acme"
    c.mkdir(parents=True)
    png(c / "a.png")
    r1 = ingest_customer(c, tmp_path / "data", 32, 1, 1, 20, 10**7)
    first = (tmp_path / "data/acme/shots.npz").read_bytes()
    r2 = ingest_customer(c, tmp_path / "data", 32, 1, 1, 20, 10**7)
    assert r1.ok and r1.content_hash == r2.content_hash
    assert (tmp_path / "data/acme/shots.npz").read_bytes() == first  # stable DVC hash
    assert load_ingested(tmp_path / "data", "acme").images.shape == (1, 32, 32, 1)


def test_a_failed_ingest_writes_nothing(tmp_path):
    c = tmp_path / "up" / "bad"
    c.mkdir(parents=True)
    (c / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    r = ingest_customer(c, tmp_path / "data", 32, 1, 1, 20, 10**7)
    assert not r.ok and "x.png" in r.error
    assert not (tmp_path / "data" / "bad").exists()


def test_a_file_name_that_is_not_utf8_is_rejected_alone_and_the_folder_still_has_a_signature(tmp_path):
    """Guarantee: an upload whose name is not UTF-8 (bytes from another system's encoding) is
    rejected with a reason that can be printed and stored, and the rest of the customer is used;
    a probe's one such file stopped the whole run (exit 70) in the hourly scan and in ingestion."""
    import json
    import os

    from metagan.uploads import folder_signature

    c = tmp_path / "acme"
    c.mkdir()
    png(c / "a.png", 0)
    png(os.fsdecode(bytes(c) + b"/r\xe9sum\xe9.png"), 40)
    before = folder_signature(c)
    up = load_customer_uploads(c, 32, 1)
    assert up.files == ["a.png"]
    assert up.rejected == [("r\\xe9sum\\xe9.png", "the file name is not valid UTF-8: rename the file")]
    json.dumps(up.rejected).encode("utf-8")  # reports and logs can hold it
    os.utime(c / "a.png", ns=(1, 1))
    assert folder_signature(c) != before


def test_damaged_ingested_shots_are_named_as_damaged_not_as_pickled_data(tmp_path):
    """Guarantee: an ingested shots.npz that is not a readable archive fails its customer with
    "damaged" and what to do (numpy's own words were "contains pickled (object) data")."""
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "shots.npz").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UploadError, match=r"customer 'acme': its ingested shots .*shots.npz are damaged"):
        load_ingested(tmp_path, "acme")


def test_a_file_name_with_a_line_break_is_rejected_alone_and_shown_on_one_line(tmp_path):
    """Guarantee: an upload whose name holds a line break, a tab, a terminal escape or a Unicode
    line separator is rejected with its name escaped, so the customer's error stays one line: a
    probe's "a<newline>FAILED nothing; all customers fine.png" split `metagan ingest`'s line in two,
    the second forged. Names with other invisible characters (an emoji's joiner) are used."""
    from metagan.uploads import UploadError

    c = tmp_path / "acme"
    c.mkdir()
    png(c / "a.png", 0)
    png(c / "\U0001F469\u200d\U0001F3A8.png", 40)
    for name in ("b\nFAILED x.png", "c\r.png", "d\x1b[2J.png", "e\u2028.png", "f\t.png"):
        (c / name).write_bytes(b"not even an image")
    up = load_customer_uploads(c, 32, 1)
    assert up.files == ["a.png", "\U0001F469\u200d\U0001F3A8.png"]
    reason = "the file name holds control characters (a line break, a tab...): rename the file"
    assert sorted(up.rejected) == sorted((n, reason) for n in
                                         ("b\\nFAILED x.png", "c\\r.png", "d\\x1b[2J.png", "e\\u2028.png", "f\\t.png"))
    (c / "a.png").unlink()
    (c / "\U0001F469\u200d\U0001F3A8.png").unlink()
    with pytest.raises(UploadError) as e:
        load_customer_uploads(c, 32, 1)
    assert len(str(e.value).splitlines()) == 1 and "b\\nFAILED x.png" in str(e.value)


def test_only_the_uploads_the_domain_check_keeps_count_toward_max_shots(tmp_path):
    """Guarantee: `adapt.max_shots` drawings and a photo give the drawings as shots and the photo
    rejected with its reason: the photo counted, and the customer was refused whole with "more than
    20 usable images" (probe of 2026-12-06, 20 drawings and a noise photo). Past the limit of kept
    shots the customer still fails, and decoding stops there."""
    from metagan.domain import Verdict

    judged = []

    def screen(images):  # the domain check's shape: a verdict per image; dark ones (value 0) are "photos"
        judged.append(len(images))
        return [Verdict(img, 0.0, 1.0, refusal="" if img.min() > 0 else "it looks like a photograph") for img in images]

    c = tmp_path / "acme"
    c.mkdir()
    for i in range(3):
        png(c / f"d{i}.png", 60 + 30 * i)
    png(c / "photo.png", 0)
    up = load_customer_uploads(c, 32, 1, max_shots=3, screen=screen)
    assert up.files == ["d0.png", "d1.png", "d2.png"]
    assert up.rejected == [("photo.png", "it looks like a photograph")]
    for i in range(3, 6):
        png(c / f"e{i}.png", 60 + 30 * i)
    with pytest.raises(UploadError, match="more than 3 usable images, at most 3 allowed"):
        load_customer_uploads(c, 32, 1, max_shots=3, screen=screen)


def test_a_drawing_uploaded_again_under_a_name_sorting_first_leaves_the_shots_and_their_identity_as_they_were(
        tmp_path):
    """A probe of 2026-12-07: a customer's drawing uploaded again under a new name registered a new
    version from the same drawings. The copy sorting first was kept and the original left out, so
    the shots' order, and the content hash of the model's identity, changed. The file uploaded
    first is the shot, a later copy the duplicate, whatever the names; the same time: by name."""
    import os
    import shutil

    c = tmp_path / "acme"
    c.mkdir()
    png(c / "a.png", 0)
    png(c / "b.png", 90)
    before = load_customer_uploads(c, 32, 1)
    shutil.copy(c / "b.png", c / "0-again.png")
    stamp = os.stat(c / "b.png").st_mtime_ns
    os.utime(c / "0-again.png", ns=(stamp + 10**9, stamp + 10**9))  # uploaded a second later
    after = load_customer_uploads(c, 32, 1)
    assert after.files == ["a.png", "b.png"] and after.rejected == [("0-again.png", "duplicate of b.png")]
    assert after.content_hash == before.content_hash
    os.utime(c / "0-again.png", ns=(stamp, stamp))
    assert load_customer_uploads(c, 32, 1).rejected == [("b.png", "duplicate of 0-again.png")]
