"""What a customer folder of many huge near-blank pages costs one ingestion, with and without the
read budget (``metagan.uploads.READ_BUDGET_IMAGES``): a probe of 2026-12-07 held an ingestion
54 s with 200 such 40-megapixel PNGs, every customer of the run waiting.

    python bench/upload_budget.py --pages 80 --report docs/results/upload-budget-2026-12-07.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from metagan import uploads

SIDE = 6300  # 39.7 megapixels: under adapt.max_image_pixels (40,000,000)


def make_folder(folder: Path, pages: int) -> None:
    """One drawing and ``pages`` near-blank pages (one dark pixel each, so none is a duplicate)."""
    folder.mkdir(parents=True, exist_ok=True)
    drawing = np.full((SIDE, SIDE), 255, np.uint8)
    drawing[3000:3400, 3000:3040] = 0
    Image.fromarray(drawing).save(folder / "a.png")
    for i in range(pages):
        page = np.full((SIDE, SIDE), 255, np.uint8)
        page[i, i] = 0
        Image.fromarray(page).save(folder / f"z{i:03d}.png")


def ingest_seconds(folder: Path, budget_images: int) -> tuple[float, int]:
    uploads.READ_BUDGET_IMAGES = budget_images
    start = time.monotonic()
    up = uploads.load_customer_uploads(folder, 64, 1)
    read = len(up.files) + sum(not reason.startswith("not read") for _, reason in up.rejected)
    return time.monotonic() - start, read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=80)
    ap.add_argument("--folder", help="reuse a folder made before (made here when missing)")
    ap.add_argument("--report", default="upload-budget.json")
    args = ap.parse_args()
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp()) / "acme"
    if not folder.exists():
        make_folder(folder, args.pages)
    shipped = uploads.READ_BUDGET_IMAGES
    rows = {}
    for name, budget in (("no budget (the code before)", 10**6), (f"budget of {shipped} images (shipped)", shipped)):
        seconds, read = ingest_seconds(folder, budget)
        rows[name] = {"seconds": round(seconds, 2), "files_read": read}
        print(f"{name}: {seconds:.1f} s, {read} files read", flush=True)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
              "pages": len(list(folder.iterdir())) - 1, "megapixels_a_page": round(SIDE * SIDE / 1e6, 1), "rows": rows}
    Path(args.report).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
