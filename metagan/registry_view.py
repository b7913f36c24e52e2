"""``metagan models``: what the registry holds, as a table."""

from __future__ import annotations

from metagan import tracking

KEY_METRICS = ("consistency", "copy_rate", "diversity", "shot_coverage", "parity_max_abs_diff")


def models_table() -> str:
    rows = [("model", "versions", "production", "candidate", "previous", *KEY_METRICS)]
    c = tracking.client()
    for m in sorted(tracking.list_models(), key=lambda m: m.name):
        versions = c.search_model_versions(f"name='{m.name}'")
        aliases = {a: tracking.get_alias(m.name, a) for a in ("production", "candidate", "previous")}
        shown = aliases["production"] or aliases["candidate"] or (versions and max(versions, key=lambda v: int(v.version)))
        metrics = [shown.tags.get(k, "-") if shown else "-" for k in KEY_METRICS]
        rows.append((m.name, str(len(versions)), *[(str(v.version) if v else "-") for v in aliases.values()], *metrics))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows)
