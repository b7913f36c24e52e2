"""The domain check of customer uploads (metagan/domain.py): calibrated on the tune alphabets and on
non-character images made here, measured on the test alphabets and on other non-character images.

    python bench/domain_check.py                   # measure with the benchmark evaluator
    python bench/domain_check.py --write metagan/pretrained/evaluator.pt --evaluator metagan/pretrained/evaluator.pt

The honest figures need an evaluator that never saw the alphabets it is measured on:
``artifacts/bench2/evaluator.pt`` was trained on the 26 alphabets other than ``data.val_groups``
(the test) and ``data.tune_groups``. Its domain statistics are fitted on those 26 alphabets'
drawings, the threshold is set between the tune alphabets' farthest drawing and the calibration
junk's nearest image, and then:

- real customers: every test character, ``--draws`` random sets of K = 1, 5, 10 of its drawings;
  a customer is refused when none of its uploads passes (``adapt.min_shots`` is 1), and loses a
  file when any one is refused;
- junk customers: K images of one kind, of the calibration kinds with other seeds and of kinds the
  calibration never saw (``HELD_OUT_KINDS``);
- inverted drawings (white on black) of the test characters: converted, then judged;
- drawings as if photographed: on tinted paper (a grey background, sensor noise), under uneven
  light (the paper's brightness a slope across the page, grey ink), and in dim light (paper darker
  than mid-grey): converted (their paper whitened, ``metagan.domain.whitened``), then judged.

``--write PATH`` calibrates ``--evaluator`` the same way (its drawings: every alphabet of the
task data outside the held-out ones it was *not* trained on; for the shipped evaluator, all 30)
and stores the statistics in PATH's ``reference["domain"]``, the weights unchanged.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metagan.config import load_params  # noqa: E402
from metagan.data import decode_image, preprocess_array  # noqa: E402
from metagan.domain import DomainScreen, calibrate_domain  # noqa: E402
from metagan.upload_conversions import as_judged, read_from_the_page  # noqa: E402
from metagan.evaluator import load_evaluator, save_evaluator  # noqa: E402
from metagan.task_data import prepare_task_dataset  # noqa: E402

SIZE = 32
"""The uploads' size: set to the task data's (``data.image_size``) in main()."""
SHOTS = (1, 5, 10)


# ---------------------------------------------------------------------------------------------
# non-character images, as a customer would upload them: files of various sizes and formats


def _rgb(a) -> Image.Image:
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _smooth_field(rng, s: int, octaves: int = 5, colour: bool = True) -> np.ndarray:
    """Fractal noise: octaves of random values, bicubically upsampled (clouds, stone, foliage)."""
    c = 3 if colour else 1
    out = np.zeros((s, s, c))
    for o in range(octaves):
        n = 2 ** (o + 2)
        small = rng.random((n, n, c))
        out += np.stack([np.asarray(Image.fromarray((small[..., i] * 255).astype(np.uint8)).resize((s, s), Image.BICUBIC),
                                    float) for i in range(c)], -1) / 2 ** o
    out = (out - out.min()) / (np.ptp(out) + 1e-9) * 255
    return out if colour else np.repeat(out, 3, -1)


def noise_photo(rng, s):
    return _rgb(rng.integers(0, 256, (s, s, 3)))


def gaussian_noise(rng, s):
    return _rgb(np.repeat(rng.normal(rng.uniform(60, 200), rng.uniform(20, 70), (s, s, 1)), 3, -1))


def colour_gradient(rng, s):
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    th = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:s, 0:s] / (s - 1)
    t = np.cos(th) * x + np.sin(th) * y
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    return _rgb(a + (b - a) * t[..., None])


def radial_gradient(rng, s):
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    cy, cx = rng.uniform(0, s, 2)
    y, x = np.mgrid[0:s, 0:s]
    t = np.hypot(y - cy, x - cx)
    return _rgb(a + (b - a) * (t / t.max())[..., None])


def texture(rng, s):
    return _rgb(_smooth_field(rng, s, colour=bool(rng.integers(2))))


def natural(rng, s):
    """A natural-ish photo: a smooth field with a few objects, slightly blurred, saved as JPEG."""
    img = _smooth_field(rng, s, octaves=3)
    y, x = np.mgrid[0:s, 0:s]
    for _ in range(rng.integers(2, 6)):
        cy, cx, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(s / 16, s / 3)
        img = np.where((np.hypot(y - cy, x - cx) < r)[..., None], rng.integers(0, 256, 3), img)
    return _rgb(img).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3)))


def stripes(rng, s):
    th, period = rng.uniform(0, np.pi), rng.uniform(4, 40) * s / 128
    y, x = np.mgrid[0:s, 0:s]
    v = np.sin((np.cos(th) * x + np.sin(th) * y) / period * 2 * np.pi) > 0
    return _rgb(np.where(v[..., None], rng.integers(0, 256, 3), rng.integers(0, 256, 3)))


def checker(rng, s):
    n = rng.integers(2, 16)
    y, x = np.mgrid[0:s, 0:s] * n // s
    return _rgb(np.where(((x + y) % 2 == 0)[..., None], rng.integers(0, 256, 3), rng.integers(0, 256, 3)))


def blank(rng, s):
    return _rgb(np.broadcast_to(rng.integers(0, 256, 3), (s, s, 3)).copy())


def _text_lines(draw, rng, top: int, bottom: int, width: int, fill) -> None:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz  ETAOIN0123456789.,:()="))
    for y in range(top, bottom - 10, int(rng.integers(12, 20))):
        draw.text((int(rng.integers(2, 12)), y), "".join(rng.choice(letters, int(rng.integers(width // 8, width // 5)))),
                  fill=fill)


def written_text(rng, s):
    """A page of typed text (a document, an e-mail printed), Pillow's bitmap font."""
    im = Image.new("RGB", (s, s), tuple(int(v) for v in rng.integers(235, 256, 3)))
    _text_lines(ImageDraw.Draw(im), rng, 4, s, s, tuple(int(v) for v in rng.integers(0, 60, 3)))
    return im


def window_screenshot(rng, s):
    """A screenshot: a light window with a dark title bar, lines of text and a button or two."""
    im = Image.new("RGB", (s, s), tuple(int(v) for v in rng.integers(225, 250, 3)))
    draw = ImageDraw.Draw(im)
    bar = max(6, s // 14)
    draw.rectangle((0, 0, s, bar), fill=tuple(int(v) for v in rng.integers(20, 90, 3)))
    _text_lines(draw, rng, bar + 4, s * 3 // 4, s, (20, 20, 20))
    for _ in range(int(rng.integers(1, 3))):
        x, y = int(rng.integers(0, s * 2 // 3)), int(rng.integers(s * 3 // 4, s - 12))
        draw.rectangle((x, y, x + s // 4, y + 10), outline=(60, 60, 60), fill=tuple(int(v) for v in rng.integers(150, 230, 3)))
    return im


CALIBRATION_KINDS = {"noise_photo": noise_photo, "gaussian_noise": gaussian_noise, "colour_gradient": colour_gradient,
                     "texture": texture, "blank": blank}
HELD_OUT_KINDS = {"radial_gradient": radial_gradient, "natural_photo": natural, "stripes": stripes,
                  "checkerboard": checker, "written_text": written_text, "window_screenshot": window_screenshot}
"""Kinds the calibration never saw: does the threshold hold beyond what it was set on?"""


def junk(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``kind``, encoded as files (PNG; the natural photos JPEG) of 64-256 px and
    read as ingestion reads them (metagan.uploads.load_customer_uploads): decoded, cropped where a
    small drawing sits on a large page, brought to the served size. Returns (the images, whether
    ingestion refuses each before the domain check: a page of many separate marks)."""
    make = (CALIBRATION_KINDS | HELD_OUT_KINDS)[kind]
    rng = np.random.default_rng([seed, sorted(CALIBRATION_KINDS | HELD_OUT_KINDS).index(kind)])
    out, refused = [], []
    for i in range(n):
        buf = io.BytesIO()
        make(rng, int(rng.integers(64, 257))).save(buf, format="JPEG" if kind == "natural_photo" else "PNG")
        raw, _, refusal = read_from_the_page(decode_image(io.BytesIO(buf.getvalue()), f"{kind}-{i}"), SIZE)
        out.append(preprocess_array(raw, SIZE, 1))
        refused.append(bool(refusal))
    return np.stack(out), np.array(refused)


def tinted_paper(drawings: np.ndarray, rng) -> np.ndarray:
    """Drawings as if photographed on paper: a grey background (150-230) and sensor noise."""
    x = drawings.astype(np.float64) / 255 * rng.uniform(150, 230, (len(drawings), 1, 1, 1))
    return np.clip(x + rng.normal(0, 6, x.shape), 0, 255).astype(np.uint8)


def photographed(drawings: np.ndarray, rng, paper: tuple[float, float], slope: float, ink: tuple[float, float],
                 noise: float) -> np.ndarray:
    """Drawings as if photographed: paper of a brightness drawn from ``paper``, lit across the page
    with a slope of up to ``slope`` grey levels from one side to the other (a random direction),
    ink of a level drawn from ``ink`` (antialiased edges kept), sensor noise of ``noise``."""
    n, h, w = drawings.shape[:3]
    yy, xx = np.mgrid[0:h, 0:w] / max(h - 1, 1) - 0.5
    direction = rng.uniform(-1, 1, (n, 2))
    light = rng.uniform(*paper, n)[:, None, None] + slope * (direction[:, :1, None] * xx + direction[:, 1:, None] * yy)
    level = rng.uniform(*ink, n)[:, None, None]
    share = drawings[..., 0].astype(np.float64) / 255  # 1 on paper, 0 on ink
    x = level + share * (light - level) + rng.normal(0, noise, share.shape)
    return np.clip(x, 0, 255).astype(np.uint8)[..., None]


PHOTOGRAPHED = {
    "tinted paper": lambda d, rng: tinted_paper(d, rng),
    "uneven light": lambda d, rng: photographed(d, rng, (150, 235), 60, (20, 100), 5),
    "dim light": lambda d, rng: photographed(d, rng, (70, 125), 30, (5, 40), 4),
}


# ---------------------------------------------------------------------------------------------


def customers_of(ds, class_ids, k: int, draws: int, rng) -> list[np.ndarray]:
    """Upload sets of ``k`` drawings of one character each, ``draws`` per character."""
    return [rng.choice(ds.indices_of(int(c)), size=k, replace=False) for c in class_ids for _ in range(draws)]


def refusals(ok: np.ndarray, sets: list[np.ndarray]) -> dict:
    """Per-file verdicts (ok by image row) -> customer figures: refused (no upload passes) and lost a file."""
    passed = np.array([ok[s].sum() for s in sets])
    k = len(sets[0])
    return {"customers": len(sets), "refused": int((passed == 0).sum()), "refused_rate": float((passed == 0).mean()),
            "lost_a_file": int((passed < k).sum()), "lost_a_file_rate": float((passed < k).mean())}


def reason_counts(verdicts) -> dict[str, int]:
    """How many refused uploads got each reason (its first part: what the upload looks like)."""
    counts: dict[str, int] = {}
    for v in verdicts:
        if not v.ok:
            r = v.refusal.split("; ")[0]
            counts[r] = counts.get(r, 0) + 1
    return counts


def nearest_prototype_separation(net, ds, train_ids, tune_ids, val_ids, junk_images, rows) -> dict:
    """The other candidate distance: to the nearest meta-training character's prototype (mean of
    its drawings' features), in units of the mean within-character spread. Where real drawings and
    junk overlap on it, no threshold separates them."""
    from metagan.evaluator import embed
    from metagan.metrics import mean_pairwise_distance

    protos, spreads = [], []
    for c in train_ids:
        f = embed(net, ds.images[ds.indices_of(int(c))])
        protos.append(f.mean(0))
        spreads.append(mean_pairwise_distance(f))
    protos, unit = torch.stack(protos), float(np.mean(spreads))

    def d(images):
        return (torch.cdist(embed(net, as_judged(images)[0]), protos).min(1).values / unit).numpy()

    tune, test, j = d(ds.images[rows(tune_ids)]), d(ds.images[rows(val_ids)]), d(junk_images)
    return {"distance": "nearest meta-training character prototype / within-character spread",
            "farthest_tune_drawing": float(tune.max()), "farthest_test_drawing": float(test.max()),
            "nearest_junk_image": float(j.min()), "junk_nearer_than_farthest_tune_drawing": int((j < tune.max()).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evaluator", default="artifacts/bench2/evaluator.pt")
    ap.add_argument("--tasks", default="artifacts/bench64/tasks-64", help="packed task data (all 30 alphabets)")
    ap.add_argument("--image-size", type=int, default=64, help="the served size uploads are decoded at")
    ap.add_argument("--trained-on-held-out", action="store_true",
                    help="the evaluator was trained on every alphabet (the shipped one): fit its domain on all of them")
    ap.add_argument("--junk", type=int, default=200, help="images per kind, calibration and test each")
    ap.add_argument("--draws", type=int, default=20, help="customers per test character and K")
    ap.add_argument("--write", help="store the domain statistics in this evaluator file (weights unchanged)")
    ap.add_argument("--report", default="docs/results/domain-check-2026-11-29.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.monotonic()

    params = load_params()
    global SIZE
    ds = prepare_task_dataset(params.with_overrides(data={"packed_dir": str((ROOT / args.tasks).resolve()),
                                                          "image_size": args.image_size}))
    SIZE = args.image_size  # uploads are decoded at the served size; the evaluator averages them down
    groups = np.array(ds.class_groups)
    val_ids = np.flatnonzero(np.isin(groups, params.data.val_groups))
    tune_ids = np.flatnonzero(np.isin(groups, params.data.tune_groups))
    held_out = np.isin(groups, params.data.val_groups + params.data.tune_groups)
    train_ids = np.arange(len(groups)) if args.trained_on_held_out else np.flatnonzero(~held_out)
    rows = lambda ids: np.concatenate([ds.indices_of(int(c)) for c in ids])  # noqa: E731

    net, reference = load_evaluator(ROOT / args.evaluator, with_reference=True)
    calibration_junk = np.concatenate([images[~refused] for images, refused in
                                       (junk(k, args.junk, seed=1) for k in CALIBRATION_KINDS)])
    domain = calibrate_domain(net, ds.images[rows(train_ids)], ds.images[rows(tune_ids)], calibration_junk)
    screen = DomainScreen(net, domain)
    print(f"threshold {domain.threshold:.2f}: farthest tune drawing {domain.calibration['farthest_tune_drawing']:.2f}, "
          f"nearest calibration junk {domain.calibration['nearest_junk_image']:.2f}")

    def ok_of(images: np.ndarray) -> np.ndarray:
        return np.array([v.ok for v in screen(images)])

    rng = np.random.default_rng(args.seed)
    report = {"evaluator": args.evaluator, "threshold": domain.threshold, "calibration": domain.calibration,
              "calibration_kinds": sorted(CALIBRATION_KINDS), "held_out_kinds": sorted(HELD_OUT_KINDS),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
              "date": datetime.now(timezone.utc).date().isoformat(), "real": {}, "junk": {}}

    for split, ids in (("test", val_ids), ("tune", tune_ids)):
        images = ds.images
        ok = np.ones(len(images), bool)
        ok[rows(ids)] = ok_of(images[rows(ids)])
        d = screen.distances(images[rows(ids)])
        report["real"][split] = {"alphabets": sorted(set(groups[ids])), "characters": len(ids),
                                 "drawings": int(len(rows(ids))), "files_refused": int((~ok[rows(ids)]).sum()),
                                 "farthest_drawing": float(d.max()), "median_distance": float(np.median(d)),
                                 **{f"K={k}": refusals(ok, customers_of(ds, ids, k, args.draws, rng)) for k in SHOTS}}
        if split == "test":
            inverted = 255 - images[rows(ids)]
            verdicts = screen(inverted)
            inv_ok = np.array([v.ok for v in verdicts])
            report["real"]["test_inverted"] = {
                "drawings": len(inverted), "converted": int(sum(bool(v.converted) for v in verdicts)),
                "refused": int((~inv_ok).sum()),
                "same_as_uninverted": bool(all(np.array_equal(v.image, o) for v, o in zip(verdicts, images[rows(ids)])))}
            for how, make in PHOTOGRAPHED.items():
                photos = make(images[rows(ids)], rng)
                verdicts = screen(photos)
                p_ok = np.array([v.ok for v in verdicts])
                report["real"][f"test_{how.replace(' ', '_')}"] = {
                    "drawings": len(photos), "converted": int(sum(bool(v.converted) for v in verdicts)),
                    "refused": int((~p_ok).sum()), "refused_rate": float((~p_ok).mean()),
                    "reasons": reason_counts(verdicts),
                    **{f"K={k}": refusals(p_ok, [rng.choice(len(photos), k, replace=False) for _ in range(200)])
                       for k in SHOTS}}

    for kind in [*CALIBRATION_KINDS, *HELD_OUT_KINDS]:
        images, on_the_page = junk(kind, args.junk, seed=2)
        verdicts = screen(images)
        ok = np.array([v.ok for v in verdicts]) & ~on_the_page
        d = screen.distances(as_judged(images)[0])
        report["junk"][kind] = {"in_calibration": kind in CALIBRATION_KINDS, "images": len(images),
                                "files_refused": int((~ok).sum()), "refused_on_the_page": int(on_the_page.sum()),
                                "nearest": float(d.min()),
                                "converted": int(sum(bool(v.converted) for v in verdicts)),
                                "reasons": reason_counts(verdicts),
                                **{f"K={k}": refusals(ok, [rng.choice(len(images), k, replace=False)
                                                           for _ in range(args.draws * 10)]) for k in SHOTS}}
    # a customer mixing real drawings with one junk upload: the junk file goes, the drawings stay
    real = ds.images[rows(val_ids)]
    extra = [junk(k, 1, seed=3 + i) for i, k in enumerate(list(CALIBRATION_KINDS) * 20)]
    mixed = [np.concatenate([real[rng.choice(len(real), 4, replace=False)], images]) for images, _ in extra]
    kept = [[v.ok for v in screen(m)] for m in mixed]
    for ok, (_, page) in zip(kept, extra):
        ok[-1] = ok[-1] and not page[0]  # the junk file, refused on the page before the check
    report["mixed"] = {"customers": len(mixed), "junk_file_refused": int(sum(not k[-1] for k in kept)),
                       "drawings_kept": int(sum(sum(k[:-1]) for k in kept)), "drawings": 4 * len(mixed)}
    report["alternative"] = nearest_prototype_separation(net, ds, train_ids, tune_ids, val_ids, calibration_junk, rows)
    report["seconds"] = round(time.monotonic() - start, 1)

    print(json.dumps({k: report[k] for k in ("real", "mixed")}, indent=1))
    for kind, r in report["junk"].items():
        print(f"{kind:16s} files refused {r['files_refused']}/{r['images']}  nearest {r['nearest']:.2f}  "
              f"K=1 refused {r['K=1']['refused_rate']:.3f}  {r['reasons']}")
    if args.report:
        out = ROOT / args.report
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=float) + "\n")
        print("wrote", out)
    if args.write:
        write_domain(ROOT / args.write, domain)


def write_domain(path: Path, domain) -> None:
    """Store ``domain`` in the evaluator file at ``path``; the weights and the rest of its reference
    stay as they are (checked after writing)."""
    from metagan.checkpoint import load_checkpoint
    from metagan.evaluator import EVALUATOR_FORMAT

    before = load_checkpoint(path, EVALUATOR_FORMAT)
    net = load_evaluator(path)
    reference = dict(before["reference"] or {}) | {"domain": domain.to_dict()}
    save_evaluator(net, path, before["info"], reference)
    after = load_checkpoint(path, EVALUATOR_FORMAT)
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert all(torch.equal(before["reference"][k], after["reference"][k]) if torch.is_tensor(before["reference"][k])
               else before["reference"][k] == after["reference"][k] for k in before["reference"] if k != "domain")
    print(f"wrote domain statistics (threshold {domain.threshold:.2f}) into {path}")


if __name__ == "__main__":
    main()
