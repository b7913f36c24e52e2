"""Is an upload the kind of image the meta-model knows? The domain check of customer uploads.

The meta-model learned from drawings: strokes of one colour on a plain white background. Given
anything else it still adapts, and the gate, which measures a generator against the customer's
own shots, passes it: five photos of random noise reached production with consistency 1.0
(noise "looks like" noise) and served grey texture. So each upload is checked at ingestion,
before any compute, against the drawings the meta-model was trained on:

- **distance**: the Mahalanobis distance of the image's evaluator features to the features of
  the meta-training drawings (their mean and covariance, stored with the evaluator as
  ``reference["domain"]``). In ``bench/domain_check.py``'s measurements it did not depend on
  whether the evaluator had seen a drawing's alphabet, which a distance to the nearest training
  class does;
- **threshold**: midway between the farthest drawing of the tune alphabets (``data.tune_groups``)
  and the nearest non-character image of the calibration set (noise photos, gradients, textures,
  patterns, blank images), with an evaluator that saw neither; measured on the test alphabets
  (docs/history/2026-11-29-upload-domain-check.md; at 64 px: docs/BENCHMARKS.md);
- **inverted drawings** (light strokes on a dark background, told by the image's border) are
  *converted*: inverted to dark on white, then checked like any upload;
- **drawings on paper that is not white** (photographed: grey, tinted, unevenly lit) are
  *converted* too: the paper made white (:func:`metagan.upload_conversions.whitened`), then
  checked like any upload;
- **the reason** a refused upload gets says what it looks like (blank; a grey paper background;
  many shades, as in a photograph, texture or gradient; a pattern covering the image) and what
  the model draws.

The check needs an evaluator calibrated with :func:`calibrate_domain` for the image format of
the uploads; without one it is skipped (and :func:`screen_for` says so in the log).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metagan.torch_export_lock import TORCH_EXPORT
from metagan.upload_conversions import INVERTED, WHITENED, as_judged, border_pixels, grays

log = logging.getLogger(__name__)

DOMAIN_FORMAT = "metagan/domain/1"
WHAT_THE_MODEL_DRAWS = "this model draws single-colour strokes on a plain background"


@dataclass(frozen=True)
class DomainReference:
    """The meta-training drawings in an evaluator's feature space, and the refusal threshold."""

    mean: torch.Tensor
    precision: torch.Tensor
    """Inverse covariance of the drawings' features (ridge-regularised)."""
    threshold: float
    image_size: int
    channels: int
    calibration: dict
    """What the threshold was set from (for the record: counts, the two distances it lies between)."""

    @classmethod
    def from_reference(cls, reference: dict | None) -> "DomainReference | None":
        """The domain statistics an evaluator's ``reference`` carries, or None (an older evaluator)."""
        d = (reference or {}).get("domain")
        if not d or d.get("format") != DOMAIN_FORMAT:
            return None
        return cls(d["mean"], d["precision"], float(d["threshold"]), int(d["image_size"]), int(d["channels"]),
                   dict(d.get("calibration", {})))

    def to_dict(self) -> dict:
        return {"format": DOMAIN_FORMAT, "mean": self.mean, "precision": self.precision, "threshold": self.threshold,
                "image_size": self.image_size, "channels": self.channels, "calibration": self.calibration}

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of each row of ``features`` to the meta-training drawings."""
        x = features - self.mean
        return ((x @ self.precision) * x).sum(1).clamp_min(0).sqrt()


def fit_features(features: torch.Tensor, ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and inverse covariance of ``features`` (N, D); the ridge keeps the inverse stable."""
    mean = features.mean(0)
    cov = torch.cov((features - mean).T.double())
    cov += ridge * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
    return mean.float(), torch.linalg.inv(cov).float()


BLANK_RANGE = 24
"""An image whose lightest and darkest pixels differ by less than this has nothing drawn on it."""


SPECK_PIXELS = 5
"""At 64 px, an image with fewer pixels of ink than this is a blank page with a speck (of dust, a
dot): the Omniglot drawings least inked have 8 (of 19,280, shrunk to 64 px); scaled with the area."""


def ink_pixels(image: np.ndarray) -> int:
    """How many pixels of ``image`` (H, W[, C]) uint8 are ink: farther from its background (the
    border's median) than half the farthest one is, and than :data:`BLANK_RANGE`; so faint pencil
    counts as ink, and a dust speck's faint rim does not."""
    return _ink_and_marked(image)[0]


def _ink_and_marked(image: np.ndarray) -> tuple[int, int]:
    """(pixels of ink, pixels marked at all: farther than :data:`BLANK_RANGE` from the background)."""
    gray = grays(image[None])[0]
    away = np.abs(gray - float(np.median(border_pixels(gray[None]))))
    return int((away > max(BLANK_RANGE, 0.5 * float(away.max()))).sum()), int((away > BLANK_RANGE).sum())


def is_speck(image: np.ndarray) -> bool:
    """A plain page but for a speck: few pixels of ink, and few marked at all (a speck's rim). A
    gradient or noise has few pixels at its extreme too, but many marked: it is no plain page."""
    limit = speck_limit(image)
    ink, marked = _ink_and_marked(image)
    return ink < limit and marked < 3 * limit


def speck_limit(image: np.ndarray) -> int:
    return max(2, round(SPECK_PIXELS * image.shape[0] * image.shape[1] / 64 ** 2))


def is_blank(image: np.ndarray) -> bool:
    """Nothing is drawn on ``image`` (H, W[, C]) uint8: one even shade, or but a speck, whatever its
    distance. A plain page sits close to the drawings' features (their background is most of every
    drawing), so the distance alone let white and black pages through (found by a probe, 2026-12-06),
    and a page with a speck of dust on it was a customer's drawing (2026-12-07)."""
    gray = grays(image[None])[0]
    return float(gray.max() - gray.min()) < BLANK_RANGE or is_speck(image)


def describe(image: np.ndarray) -> str:
    """What an out-of-domain upload looks like, from its pixels (an inverted drawing after
    inversion; a whitened one before whitening), in words a customer can act on."""
    gray = grays(image[None])[0]
    background = float(np.median(border_pixels(gray[None])))
    plain = float((np.abs(gray - background) < 32).mean())
    if is_blank(image):
        specks = ink_pixels(image) if float(gray.max() - gray.min()) >= BLANK_RANGE else 0
        return f"it is blank but for a speck ({specks} pixel{'s' * (specks > 1)} at {image.shape[0]} px): nothing " \
               "is drawn on it" if specks else "it is blank: nothing is drawn on it"
    if background < 240 and plain >= 0.6 and float((gray < background - 64).mean()) >= 0.02:
        return ("its background is grey or coloured, not white (a photographed drawing?): scan it, or raise the "
                "contrast until the paper is white")
    if float(((gray > 48) & (gray < 208)).mean()) > 0.3:
        return "it looks like a photograph, a texture or a gradient (many shades, not strokes on a plain background)"
    if plain < 0.5:
        return "it is covered in a pattern: there is no plain background"
    return "its strokes are unlike the drawings this model learned from"


@dataclass(frozen=True)
class Verdict:
    """The domain check's decision on one upload."""

    image: np.ndarray
    """The image as ingestion keeps it (inverted when ``converted``)."""
    distance: float
    threshold: float
    converted: str = ""
    """What was done to it, if anything (an inverted drawing)."""
    refusal: str = ""
    """Why it is refused; empty when it is kept."""

    @property
    def ok(self) -> bool:
        return not self.refusal


class DomainScreen:
    """The domain check with one evaluator: uint8 (N, H, W, C) uploads -> one :class:`Verdict` each."""

    def __init__(self, net, domain: DomainReference):
        self.net, self.domain = net, domain

    def distances(self, images: np.ndarray) -> np.ndarray:
        from metagan.evaluator import embed

        with TORCH_EXPORT.shared():  # an upload screened while another thread exports (metagan.torch_export_lock)
            return self.domain.distance(embed(self.net, images)).numpy().astype(np.float64)

    def __call__(self, images: np.ndarray) -> list[Verdict]:
        if len(images) == 0:
            return []
        judged, conversions = as_judged(images)
        t = self.domain.threshold
        verdicts = []
        for original, image, converted, d in zip(images, judged, conversions, self.distances(judged)):
            # the same words for the same kind of upload (the customer's message names the files
            # sharing a reason together); the distance is for the log. A whitened upload that is
            # still refused is described as it came (its paper, its shading), not as whitened
            seen = image if WHITENED not in converted else 255 - original if INVERTED in converted else original
            refusal = "" if d <= t and not is_blank(image) else f"{describe(seen)}; {WHAT_THE_MODEL_DRAWS}"
            if refusal:
                log.info("upload refused by the domain check: distance %.2f > %.2f", d, t)
            verdicts.append(Verdict(image, float(d), t, converted, refusal))
        return verdicts


def screen_for(evaluator, image_size: int, channels: int) -> DomainScreen | None:
    """The domain check for uploads of this format with ``evaluator`` (a ``(net, reference)`` pair),
    or None when there is no evaluator, it carries no domain statistics, or they were calibrated
    for another image format (the check is then skipped, and the log says why). Uploads a whole
    multiple of the calibrated size are averaged down to it (:func:`metagan.evaluator.embed`)."""
    if evaluator is None:
        log.warning("no evaluator: uploads are not checked against the meta-model's domain")
        return None
    net, reference = evaluator
    domain = DomainReference.from_reference(reference)
    if domain is None:
        log.warning("the evaluator carries no domain statistics (bench/domain_check.py --write adds them): "
                    "uploads are not checked against the meta-model's domain")
        return None
    if domain.channels != channels or image_size % domain.image_size:
        log.warning("the evaluator's domain statistics are for %dx%d images with %d channel(s), not %dx%d with %d: "
                    "uploads are not checked against the meta-model's domain", domain.image_size, domain.image_size,
                    domain.channels, image_size, image_size, channels)
        return None
    return DomainScreen(net, domain)


def upload_screen(params) -> DomainScreen | None:
    """The domain check ingestion applies with the configured evaluator (``paths.evaluator``), for
    the configured image format; None when it cannot run (:func:`screen_for`)."""
    path = params.resolve(params.paths.evaluator)
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    return _cached_screen(str(path), mtime, params.data.image_size, params.data.channels)


@functools.lru_cache(maxsize=4)
def _cached_screen(path: str, mtime_ns: int, image_size: int, channels: int) -> DomainScreen | None:
    # one load (and one warning when the check cannot run) per evaluator file, not per customer
    from metagan.evaluator import load_evaluator

    evaluator = load_evaluator(Path(path), with_reference=True) if mtime_ns else None
    return screen_for(evaluator, image_size, channels)


@torch.no_grad()
def calibrate_domain(net, drawings: np.ndarray, tune: np.ndarray, junk: np.ndarray) -> DomainReference:
    """Domain statistics for ``net``: the feature distribution of ``drawings`` (the meta-training
    drawings) and a threshold midway between the farthest of the ``tune`` drawings (real drawings
    of alphabets held out of training) and the nearest ``junk`` image (non-character images), each
    judged as :class:`DomainScreen` judges uploads (dark backgrounds inverted). When the two
    overlap, the threshold is the farthest tune drawing's distance: real drawings come first."""
    from metagan.evaluator import embed

    mean, precision = fit_features(embed(net, drawings))
    probe = DomainReference(mean, precision, 0.0, drawings.shape[1], drawings.shape[-1], {})
    d_tune = probe.distance(embed(net, as_judged(tune)[0])).numpy()
    d_junk = probe.distance(embed(net, as_judged(junk)[0])).numpy()
    far, near = float(d_tune.max()), float(d_junk.min())
    threshold = (far + near) / 2 if near > far else far
    calibration = {"drawings": len(drawings), "tune_drawings": len(tune), "junk_images": len(junk),
                   "farthest_tune_drawing": far, "nearest_junk_image": near}
    return DomainReference(mean, precision, threshold, drawings.shape[1], drawings.shape[-1], calibration)
