"""The faults of issue 19, reproduced in a project after `metagan demo`, each command timed.

    git clone -q /path/to/metagan /tmp/c19 && cd /tmp/c19
    python -m flows.app.cli demo
    python bench/fault_timings.py --report docs/results/fault-timings-2026-11-29.json

Each case damages the project (the registry deleted or truncated, a production model file
truncated or deleted, an unknown customer, one customer's folders made immutable with
`chattr +i`, uploads that are not drawings), runs real `metagan` processes and records the exit
code, the wall time and what the user reads (the last line of stderr, the number of lines,
whether a traceback was printed), then restores the project from a copy taken first. The
registry-damaging cases must leave the database as they found it (checked by hash).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path.cwd()
KEPT = ("mlflow", "data", "artifacts", "data.dvc")


def metagan(*argv: str) -> dict:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.app.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    err = [line for line in done.stderr.splitlines() if line.strip()]
    return {"command": "metagan " + " ".join(argv), "exit": done.returncode,
            "seconds": round(time.monotonic() - start, 2), "stderr_lines": len(err),
            "traceback": any(line.startswith("Traceback") for line in err), "last_line": err[-1] if err else "",
            "stderr": err[-12:],
            "stdout_tail": done.stdout.strip().splitlines()[-6:]}


def backup(into: Path) -> None:
    for name in KEPT:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, into / name, symlinks=True)
        elif src.exists():
            shutil.copy2(src, into / name)


def restore(frm: Path) -> None:
    for name in KEPT:
        dest = ROOT / name
        if dest.is_dir():
            subprocess.run(["chattr", "-R", "-i", str(dest)], capture_output=True)
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        src = frm / name
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True)
        elif src.exists():
            shutil.copy2(src, dest)


def db_hash() -> str | None:
    db = ROOT / "mlflow" / "mlflow.db"
    return hashlib.sha256(db.read_bytes()).hexdigest() if db.exists() else None


def production_model_file(customer: str) -> Path:
    import sqlite3
    from urllib.parse import unquote, urlparse

    con = sqlite3.connect(ROOT / "mlflow" / "mlflow.db")
    (version,) = con.execute("SELECT version FROM registered_model_aliases WHERE name = ? AND alias = 'production'",
                             (f"metagan-customer-{customer}",)).fetchone()
    (location,) = con.execute("SELECT storage_location FROM model_versions WHERE name = ? AND version = ?",
                              (f"metagan-customer-{customer}", version)).fetchone()
    return Path(unquote(urlparse(location).path)) / "model.onnx"


def uploads(folder: Path, examples: Path) -> Path:
    """The example customers, the first two with an extra drawing (so they are ingested and adapted
    anew), a customer of five colour noise photos and one of the third's drawings inverted."""
    shutil.copytree(examples, folder)
    first, second, third = sorted(p.name for p in examples.iterdir() if p.is_dir())[:3]
    for customer, other in ((first, third), (second, third)):
        drawing = np.asarray(Image.open(sorted((examples / other).glob("*.png"))[0]).convert("L"))
        Image.fromarray(np.roll(drawing, 3, 1)).save(folder / customer / "extra.png")
    rng = np.random.default_rng(0)
    (folder / "noise-photos").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / "noise-photos" / f"{i}.png")
    (folder / "inverted").mkdir()
    for i, f in enumerate(sorted((examples / third).glob("*.png"))):
        Image.fromarray(255 - np.asarray(Image.open(f).convert("L"))).save(folder / "inverted" / f"{i}.png")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", default="docs/results/fault-timings-2026-11-29.json")
    args = ap.parse_args()
    examples = next(p for p in (ROOT / "metagan/sample_data/customers", ROOT / "examples/customers") if p.is_dir())
    customers = sorted(p.name for p in examples.iterdir() if p.is_dir())
    served = customers[-1]
    readers = [("models",), ("doctor",), ("promote",), ("rollback", "--customer", served),
               ("generate", "--customer", served, "--count", "4", "--out", "out/faults"),
               ("adapt", "--customers", str(examples)), ("demo",)]
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved"
        saved.mkdir()
        backup(saved)

        def case(name: str, damage, commands, registry_untouched: bool = False) -> None:
            restore(saved)
            damage()
            before = db_hash()
            runs = [metagan(*c) for c in commands]
            entry = {"fault": name, "runs": runs}
            if registry_untouched:
                entry["registry_untouched"] = db_hash() == before
            cases.append(entry)
            for r in runs:
                print(f"{r['seconds']:6.2f} s  exit {r['exit']}  {name}: {r['command']}\n          {r['last_line'][:160]}")

        db = ROOT / "mlflow" / "mlflow.db"
        case("registry deleted", lambda: db.unlink(), readers, registry_untouched=True)
        case("registry truncated to a third", lambda: _truncate(db, db.stat().st_size // 3), readers,
             registry_untouched=True)
        case(f"production model of {customers[0]} truncated, of {customers[1]} deleted",
             lambda: (_truncate(production_model_file(customers[0]), 1000), production_model_file(customers[1]).unlink()),
             [("doctor",)] + [("generate", "--customer", c, "--count", "4", "--out", "out/faults") for c in customers])
        case("unknown customer", lambda: None, [("generate", "--customer", "nosuch", "--count", "4", "--out", "out/faults"),
                                                ("rollback", "--customer", "nosuch")])
        folder = uploads(Path(tmp) / "uploads", examples)

        def immutable():
            for path in (ROOT / "data/customers" / customers[0], ROOT / "artifacts/customers" / customers[1]):
                path.mkdir(parents=True, exist_ok=True)
                if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                    raise SystemExit(f"chattr +i {path} failed: this file system cannot make a folder immutable")
        case(f"data/customers/{customers[0]} and artifacts/customers/{customers[1]} immutable (chattr +i), "
             "with noise photos and inverted drawings beside", immutable, [("adapt", "--customers", str(folder))])
        # the same faults alone: how long until the per-customer reasons when nothing else is adapted
        alone = Path(tmp) / "alone"
        for name in customers[:2]:
            shutil.copytree(folder / name, alone / "faulty" / name)
        shutil.copytree(folder / "noise-photos", alone / "junk" / "noise-photos")
        case("the two immutable customers alone", immutable, [("adapt", "--customers", str(alone / "faulty"))])
        case("five noise photos alone", lambda: None, [("adapt", "--customers", str(alone / "junk"))])
        case("no fault (baseline): the example customers again, every one reused", lambda: None,
             [("adapt", "--customers", str(examples))])
        restore(saved)
    report = {"date": datetime.now(timezone.utc).date().isoformat(), "machine": f"{platform.machine()}, "
              f"{os.cpu_count()} cores", "load_average_at_end": os.getloadavg(), "project": str(ROOT), "cases": cases}
    out = ROOT / args.report
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("wrote", out)


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


if __name__ == "__main__":
    main()
