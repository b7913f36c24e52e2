"""The domain check (metagan/domain.py): uploads far from the drawings the meta-model was trained on
are refused at ingestion, before any compute, with a reason the customer can act on; inverted
drawings are converted; real drawings pass. Real image files through the ingest flow's task, with
the shipped evaluator and its calibration (bench/domain_check.py measures the rates)."""

import io
import re
import json

import numpy as np
import pytest
import torch
from PIL import Image

from flows.ingest import ingest_one
from metagan.config import PROJECT_ROOT, Params
from metagan.data import load_image_bytes
from metagan.domain import (WHAT_THE_MODEL_DRAWS, DomainReference, DomainScreen, calibrate_domain, describe,
                            screen_for, upload_screen)
from metagan.evaluator import ProtoNet, load_evaluator, save_evaluator
from metagan.upload_conversions import WHITENED, whitened

EXAMPLES = PROJECT_ROOT / "metagan" / "sample_data" / "customers"
if not EXAMPLES.is_dir():
    EXAMPLES = PROJECT_ROOT / "examples" / "customers"
SHIPPED_EVALUATOR = PROJECT_ROOT / "metagan" / "pretrained" / "evaluator.pt"
SIZE = Params().data.image_size  # the served size (64)


def sample_drawings(n: int, start: int = 100) -> list[np.ndarray]:
    """Real drawings (the bundled Omniglot sample, one per character), 105 x 105, black on white."""
    images = np.load(PROJECT_ROOT / "metagan/sample_data/omniglot_sample.npz")["images"]
    return [images[start + i, 0].astype(np.uint8) * 255 for i in range(n)]


def save(folder, name: str, image) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(folder / name)


def noise_photo(rng, size: int = 256) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


@pytest.fixture
def params(tmp_path) -> Params:
    return Params().with_overrides(paths={"ingested_customers": str(tmp_path / "ingested")})


pytestmark = pytest.mark.skipif(not SHIPPED_EVALUATOR.exists(), reason="no shipped evaluator")


def test_the_shipped_evaluator_carries_domain_statistics_for_the_upload_format():
    """Guarantee: the shipped evaluator is calibrated (its weights and gate calibration untouched),
    so ingestion checks uploads of the configured format (the served size, one channel)."""
    _, reference = load_evaluator(SHIPPED_EVALUATOR, with_reference=True)
    domain = DomainReference.from_reference(reference)
    assert domain is not None and (domain.image_size, domain.channels) == (SIZE, 1)
    assert domain.calibration["farthest_tune_drawing"] < domain.threshold < domain.calibration["nearest_junk_image"]
    assert {"background", "copy_threshold", "class_spread"} <= set(reference)
    assert upload_screen(Params()) is not None


def test_noise_photos_are_refused_at_ingestion_with_a_reason_the_customer_can_act_on(tmp_path, params):
    """Guarantee: a customer who uploads five colour photos of random noise (which reached
    production before, with consistency 1.0) is refused at ingestion: one sentence names the files
    and says they look like photographs and what the model draws; nothing is written for them, so
    nothing is adapted; a customer of real drawings beside them is ingested."""
    rng = np.random.default_rng(0)
    for i in range(5):
        save(tmp_path / "up" / "photos", f"photo_{i}.png", noise_photo(rng))
    for i, d in enumerate(sample_drawings(5)):
        save(tmp_path / "up" / "drawer", f"{i}.png", d)
    photos = ingest_one.fn(tmp_path / "up" / "photos", params)
    assert not photos.ok
    assert photos.error == ("customer 'photos': 0 usable image(s), at least 1 needed (rejected: photo_0.png, "
                            "photo_1.png, photo_2.png, photo_3.png, photo_4.png: it looks like a photograph, a texture "
                            f"or a gradient (many shades, not strokes on a plain background); {WHAT_THE_MODEL_DRAWS})")
    assert not (tmp_path / "ingested" / "photos").exists()
    drawer = ingest_one.fn(tmp_path / "up" / "drawer", params)
    assert drawer.ok and drawer.shots == 5 and drawer.rejected == []


def test_inverted_drawings_are_converted_to_dark_on_white(tmp_path, params):
    """Decision: drawings in white on black are converted (inverted), not refused: the customer gets
    the same shots as for the same drawings in black on white, and report.json says so."""
    drawings = sample_drawings(4)
    for i, d in enumerate(drawings):
        save(tmp_path / "up" / "plain", f"{i}.png", d)
        save(tmp_path / "up" / "inverted", f"{i}.png", 255 - d)
    plain = ingest_one.fn(tmp_path / "up" / "plain", params)
    inverted = ingest_one.fn(tmp_path / "up" / "inverted", params)
    assert plain.ok and inverted.ok and inverted.rejected == []
    assert np.array_equal(plain.uploads.images, inverted.uploads.images)
    assert inverted.content_hash == plain.content_hash
    report = json.loads((tmp_path / "ingested" / "inverted" / "report.json").read_text())
    assert [f for f, _ in report["converted"]] == ["0.png", "1.png", "2.png", "3.png"]
    assert "inverted" in report["converted"][0][1]


def photographed(drawing: np.ndarray, rng, paper: float, slope: float, ink: float, size: int = 420) -> Image.Image:
    """``drawing`` (black on white) as a phone photo of it: enlarged to ``size`` px, paper of
    brightness ``paper`` lit with a slope across the page, ink of level ``ink``, sensor noise; JPEG."""
    big = np.asarray(Image.fromarray(drawing).resize((size, size), Image.BILINEAR), dtype=np.float64) / 255
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    light = paper + slope * (0.8 * xx - 0.6 * yy)
    photo = np.clip(ink + big * (light - ink) + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).convert("RGB").save(buf, format="JPEG", quality=85)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("light", ["grey paper", "uneven light", "dim light"])
def test_photographed_drawings_are_converted_to_white_paper_and_kept(tmp_path, params, light):
    """Decision: drawings photographed on grey, unevenly lit or dim paper (refused before: 83 to
    100% of them, docs/BENCHMARKS.md) have their paper made white, not refused: the customer gets
    shots close to the same drawings scanned (dim ones are not taken for inverted drawings), and
    report.json says what was done."""
    paper, slope, ink = {"grey paper": (175, 0, 15), "uneven light": (190, 70, 50), "dim light": (95, 30, 15)}[light]
    rng = np.random.default_rng(3)
    drawings = sample_drawings(4)
    for i, d in enumerate(drawings):
        save(tmp_path / "up" / "plain", f"{i}.png", d)
        save(tmp_path / "up" / "photos", f"{i}.jpg", photographed(d, rng, paper, slope, ink))
    plain = ingest_one.fn(tmp_path / "up" / "plain", params)
    photos = ingest_one.fn(tmp_path / "up" / "photos", params)
    assert plain.ok and photos.ok and photos.rejected == [] and photos.shots == 4
    difference = np.abs(photos.uploads.images.astype(int) - plain.uploads.images.astype(int))
    assert difference.mean() < 12, difference.mean()  # the same drawings, not their photos' paper
    report = json.loads((tmp_path / "ingested" / "photos" / "report.json").read_text())
    assert [f for f, _ in report["converted"]] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert all(why == WHITENED for _, why in report["converted"])


def test_only_drawings_on_paper_are_whitened_not_gradients_noise_or_textures():
    """Guarantee: whitening needs a plain page of little grain and ink apart from it; shading,
    noise and patterns on grey are judged as they came (and refused for what they are)."""
    rng = np.random.default_rng(4)
    gradient = np.broadcast_to(np.linspace(60, 230, SIZE, dtype=np.uint8)[None, :, None], (SIZE, SIZE, 1))
    noise = rng.integers(60, 200, (SIZE, SIZE, 1), dtype=np.uint8)
    checks = np.where(((np.arange(SIZE)[:, None] // 8) + (np.arange(SIZE)[None, :] // 8)) % 2, 40, 180)
    junk = np.stack([gradient, noise, checks[..., None].astype(np.uint8)])
    images, done = whitened(junk)
    assert not done.any() and np.array_equal(images, junk)
    drawing = load_image_bytes(_png(sample_drawings(1)[0]), "d", SIZE, 1)
    assert not whitened(drawing[None])[1].any()  # white paper: judged as it is
    grey = (drawing.astype(float) / 255 * 160 + 20).astype(np.uint8)
    assert whitened(grey[None])[1].all()


def test_one_photo_among_drawings_is_rejected_alone(tmp_path, params):
    """Guarantee: a photo, a blank page and a pattern among real drawings are rejected, each with
    its reason; the customer keeps its drawings."""
    rng = np.random.default_rng(1)
    for i, d in enumerate(sample_drawings(3)):
        save(tmp_path / "up" / "mixed", f"{i}.png", d)
    save(tmp_path / "up" / "mixed", "photo.jpg", noise_photo(rng).convert("RGB"))
    save(tmp_path / "up" / "mixed", "blank.png", np.full((64, 64), 240, np.uint8))
    stripes = np.where((np.arange(128)[None, :] // 8) % 2 == 0, 30, 220).astype(np.uint8).repeat(128, 0)
    save(tmp_path / "up" / "mixed", "stripes.png", stripes)
    result = ingest_one.fn(tmp_path / "up" / "mixed", params)
    assert result.ok and result.shots == 3
    reasons = dict(result.rejected)
    assert reasons.keys() == {"photo.jpg", "blank.png", "stripes.png"}
    assert reasons["blank.png"].startswith("it is blank")
    assert reasons["photo.jpg"].startswith("it looks like a photograph")
    assert all(r.endswith(WHAT_THE_MODEL_DRAWS) for r in reasons.values())


@pytest.mark.parametrize("shade", [255, 250, 0])
def test_a_plain_page_is_refused_whatever_its_distance(tmp_path, params, shade):
    """Guarantee: a page with nothing drawn on it is refused as blank, white, near-white or black
    (inverted to white). A plain page sits close to the drawings' features, so a probe found white
    and black ones under the distance threshold, adapted and registered (2026-12-06)."""
    save(tmp_path / "up" / "page", "page.png", np.full((105, 105), shade, np.uint8))
    result = ingest_one.fn(tmp_path / "up" / "page", params)
    assert not result.ok and "page.png: it is blank" in result.error


def test_real_customers_pass(tmp_path):
    """Guarantee: the example customers and drawings of every character of the bundled sample
    (its alphabets include held-out ones) pass the domain check."""
    screen = upload_screen(Params())
    files = sorted(EXAMPLES.glob("*/*.png"))
    examples = np.stack([load_image_bytes(f.read_bytes(), f.name, SIZE, 1) for f in files])
    assert all(v.ok and not v.converted for v in screen(examples))
    sample = np.load(PROJECT_ROOT / "metagan/sample_data/omniglot_sample.npz")["images"]
    from metagan.data import preprocess_array

    drawings = np.stack([preprocess_array(sample[c, j], SIZE, 1) for c in range(len(sample)) for j in range(2)])
    verdicts = screen(drawings)
    assert sum(not v.ok for v in verdicts) == 0, max(v.distance for v in verdicts)


def test_the_reasons_describe_what_the_upload_looks_like():
    """Guarantee: the refusal says what is wrong in the customer's terms: blank, a grey (photographed)
    page, a photograph/texture/gradient, a pattern."""
    blank = np.full((32, 32, 1), 200, np.uint8)
    assert describe(blank).startswith("it is blank")
    drawing = load_image_bytes(_png(sample_drawings(1)[0]), "d", SIZE, 1)
    grey_paper = (drawing.astype(float) / 255 * 170 + 10).astype(np.uint8)  # strokes 10, paper 180
    assert describe(grey_paper).startswith("its background is grey")
    gradient = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 32, 1)).copy()
    assert describe(gradient).startswith("it looks like a photograph")


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_without_calibrated_statistics_the_check_is_skipped_and_says_so(tmp_path, caplog):
    """Guarantee: with no evaluator, an evaluator without domain statistics, or statistics for
    another image format, ingestion does not check the domain (it cannot), and the log says why."""
    net = ProtoNet(1, 8)
    assert screen_for(None, 32, 1) is None
    assert screen_for((net, {"background": torch.zeros(1, 8)}), 32, 1) is None
    _, reference = load_evaluator(SHIPPED_EVALUATOR, with_reference=True)
    assert screen_for((net, reference), 64, 3) is None
    assert "not checked against the meta-model's domain" in caplog.text


def test_calibration_sets_the_threshold_midway_and_survives_a_save(tmp_path):
    """Guarantee: the threshold lies midway between the farthest real (tune) drawing and the nearest
    non-character image; the statistics are saved with the evaluator and load back with
    `weights_only` (no pickle)."""
    torch.manual_seed(0)
    net = ProtoNet(1, 8).eval()
    drawings = np.stack([load_image_bytes(_png(d), "d", SIZE, 1) for d in sample_drawings(40, start=0)])
    tune = np.stack([load_image_bytes(_png(d), "t", SIZE, 1) for d in sample_drawings(10, start=60)])
    rng = np.random.default_rng(0)
    junk = np.stack([load_image_bytes(_png(rng.integers(0, 256, (64, 64), dtype=np.uint8)), "j", SIZE, 1)
                     for _ in range(10)])
    domain = calibrate_domain(net, drawings, tune, junk)
    c = domain.calibration
    if c["nearest_junk_image"] > c["farthest_tune_drawing"]:
        assert domain.threshold == pytest.approx((c["nearest_junk_image"] + c["farthest_tune_drawing"]) / 2)
    else:
        assert domain.threshold == c["farthest_tune_drawing"]
    path = save_evaluator(net, tmp_path / "e.pt", {}, {"domain": domain.to_dict()})
    loaded = DomainReference.from_reference(load_evaluator(path, with_reference=True)[1])
    assert loaded.threshold == domain.threshold and torch.equal(loaded.precision, domain.precision)
    screen = DomainScreen(net, loaded)
    assert [v.ok for v in screen(tune)] == [True] * len(tune)


def test_a_page_with_a_speck_is_blank_and_a_small_dot_of_a_drawing_is_not(tmp_path, params):
    """A blank page with a speck of dust passed as a drawing (a probe of 2026-12-07: a customer of
    five such pages was adapted and registered). Fewer pixels of ink than the least inked Omniglot
    drawing has (8 at 64 px, of 19,280) are a speck; a dot drawn as a character, and faint pencil, are ink."""
    speck = np.full((105, 105), 255, np.uint8)
    speck[50, 50] = 0
    dot = np.full((105, 105), 255, np.uint8)
    dot[48:55, 48:55] = 0
    save(tmp_path / "up" / "dusty", "page.png", speck)
    save(tmp_path / "up" / "dusty", "drawn.png", sample_drawings(1)[0])
    result = ingest_one.fn(tmp_path / "up" / "dusty", params)
    assert result.ok and dict(result.rejected)["page.png"].startswith("it is blank but for a speck (1 pixel at 64 px)")
    faint = np.where(sample_drawings(1, start=7)[0] < 128, 200, 255).astype(np.uint8)  # light pencil
    kept = [load_image_bytes(_png(a), "x", SIZE, 1) for a in (dot, faint)]
    assert not any(describe(k).startswith("it is blank") for k in kept)


def test_an_inverted_copy_is_a_duplicate_and_blank_pages_are_blank_not_duplicates(tmp_path, params):
    """Duplicates are told after conversion: a drawing and its inverted copy were two shots (20
    drawings and one copy in dark mode were "more than 20"); and blank pages were "duplicate of" the
    first blank one, white strokes on a transparent background (blank on white) too."""
    d = sample_drawings(2)
    save(tmp_path / "up" / "dark-mode", "a.png", d[0])
    save(tmp_path / "up" / "dark-mode", "copy-dark.png", 255 - d[0])
    save(tmp_path / "up" / "dark-mode", "b.png", d[1])
    for i in range(3):
        save(tmp_path / "up" / "dark-mode", f"blank{i}.png", np.full((105, 105), 255, np.uint8))
    result = ingest_one.fn(tmp_path / "up" / "dark-mode", params)
    reasons = dict(result.rejected)
    assert result.ok and result.uploads.files == ["a.png", "b.png"]
    assert reasons["copy-dark.png"] == "duplicate of a.png"
    assert all(reasons[f"blank{i}.png"].startswith("it is blank") for i in range(3))


def test_light_strokes_on_transparency_are_the_drawing_not_a_blank_page(tmp_path, params):
    """White strokes on a transparent background (a drawing for a dark theme) vanished on the white
    they were composited onto: three drawings were "blank" and "duplicate of" each other (a probe of
    2026-12-07). They go on black and are inverted, the same shots as the drawings in black on white;
    black strokes on transparency stay on white."""
    drawings = sample_drawings(3)
    for i, d in enumerate(drawings):
        for colour, folder in ((255, "light"), (0, "dark"), (None, "plain")):
            if colour is None:
                save(tmp_path / "up" / folder, f"{i}.png", d)
                continue
            rgba = np.zeros(d.shape + (4,), np.uint8)
            rgba[..., :3], rgba[..., 3] = colour, 255 - d
            save(tmp_path / "up" / folder, f"{i}.png", Image.fromarray(rgba, "RGBA"))
    light, dark, plain = (ingest_one.fn(tmp_path / "up" / f, params) for f in ("light", "dark", "plain"))
    assert light.ok and dark.ok and light.rejected == dark.rejected == []
    assert np.array_equal(light.uploads.images, plain.uploads.images)
    assert np.array_equal(dark.uploads.images, plain.uploads.images)
    assert [f for f, _ in light.uploads.converted] == ["0.png", "1.png", "2.png"] and not dark.uploads.converted


def test_a_small_drawing_on_a_large_page_is_cropped_to_it_and_a_drawings_own_frame_is_not(tmp_path, params):
    """An A4 scan (300 dpi) of a drawing 4 cm wide was a 7-pixel mark in a 64 px shot, and a 105 px
    drawing on a 4,000 px page "blank" (a probe of 2026-12-07): a small drawing on a large page is
    cropped to it, with the margin of a drawing in its own frame, and said. Drawings in their own
    frames (the Omniglot scans, 105 px) and photographs are left as they are."""
    from metagan.upload_conversions import CROPPED, DRAWING_FILLS, cropped_to_drawing

    drawing = sample_drawings(1)[0]
    a4 = np.full((3508, 2480), 255, np.uint8)
    a4[1500:1900, 300:700] = np.asarray(Image.fromarray(drawing).resize((400, 400), Image.LANCZOS))
    big = np.full((4000, 4000), 255, np.uint8)
    big[2000:2105, 3000:3105] = drawing
    for name, page in (("a4.png", a4), ("big.png", big)):
        save(tmp_path / "up" / "pages", name, page)
    save(tmp_path / "up" / "pages", "frame.png", sample_drawings(1, start=3)[0])
    result = ingest_one.fn(tmp_path / "up" / "pages", params)
    assert result.ok and result.rejected == [] and result.uploads.files == ["a4.png", "big.png", "frame.png"]
    assert dict(result.uploads.converted) == {"a4.png": CROPPED, "big.png": CROPPED}
    for shot in result.uploads.images[:2]:
        rows, cols = np.nonzero(shot[..., 0] < 128)
        span = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
        assert abs(span - DRAWING_FILLS * SIZE) <= 0.1 * SIZE
    photo = noise_photo(np.random.default_rng(0), 1000)
    assert not cropped_to_drawing(np.asarray(photo), SIZE)[1]
    assert not cropped_to_drawing(drawing, SIZE)[1]


def test_a_page_of_text_or_a_screenshot_is_refused_for_its_many_marks(tmp_path, params):
    """Screenshots, a page of text and a class diagram passed the domain check (a probe of
    2026-12-07: a customer of scans with a ruler reached production). A drawing of one character
    has a few separate marks (Omniglot's: at most 7), a page of text hundreds: more than 40 on a
    plain page are refused, before the domain check; noise is no plain page, and stays its."""
    from PIL import ImageDraw

    from metagan.upload_conversions import MARKS_AT_MOST, separate_marks

    page = Image.new("RGB", (900, 600), (245, 245, 240))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, 900, 40), fill=(40, 40, 60))
    for y in range(60, 580, 20):
        draw.text((20, y), "fn main() { let total = compute(value, 42); } // a comment", fill=(20, 20, 20))
    save(tmp_path / "up" / "docs", "screenshot.png", page)
    save(tmp_path / "up" / "docs", "drawn.png", sample_drawings(1)[0])
    result = ingest_one.fn(tmp_path / "up" / "docs", params)
    assert result.ok and result.uploads.files == ["drawn.png"]
    assert re.fullmatch(r"it holds \d+ separate marks, as text, a document, a screenshot or speckle does \(a drawing of "
                        r"one character has a few\): upload one drawing", dict(result.rejected)["screenshot.png"])
    assert max(separate_marks(d) for d in sample_drawings(40, start=0)) <= 7 < MARKS_AT_MOST
    assert separate_marks(np.asarray(noise_photo(np.random.default_rng(0), 600))) == 0


def test_a_scanners_dark_edges_and_corners_are_made_paper(tmp_path, params):
    """A scan with a dark band along one side, a dark frame, or black corners (a page laid skewed)
    was refused as "covered in a pattern", or kept with the band baked into the shot (a probe of
    2026-12-07): those are made the page's paper, and said; the shot is close to the clean scan's."""
    from metagan.upload_conversions import DARK_EDGES

    drawing = Image.fromarray(sample_drawings(1)[0]).resize((300, 300), Image.LANCZOS)
    page = Image.new("L", (480, 480), 255)
    page.paste(drawing, (90, 90))
    band, framed = np.asarray(page).copy(), np.asarray(page).copy()
    band[:40] = 10
    framed[:30], framed[-30:], framed[:, :30], framed[:, -30:] = 20, 20, 20, 20
    skewed = page.rotate(8, resample=Image.BILINEAR, expand=True, fillcolor=0)
    for name, image in (("clean.png", page), ("band.png", band), ("frame.png", framed), ("skewed.png", skewed)):
        save(tmp_path / "up" / name.removesuffix(".png"), name, image)
    shots = {}
    for name in ("clean", "band", "frame", "skewed"):
        result = ingest_one.fn(tmp_path / "up" / name, params)
        assert result.ok and result.rejected == [], (name, result.error)
        assert dict(result.uploads.converted).get(f"{name}.png") == (DARK_EDGES if name != "clean" else None), name
        shots[name] = result.uploads.images[0].astype(float)
    for name in ("band", "frame"):
        assert np.abs(shots[name] - shots["clean"]).mean() < 3, name
    assert (shots["skewed"][:4, :4] > 200).all()  # its corner is paper, not black
