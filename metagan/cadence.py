"""A customer's batch cadence: when a batch drawn at a night's start is due again.

Core rules shared by the night's planning (:mod:`metagan.lifecycle.fleet`) and the index's repair from the
registry (:mod:`metagan.lifecycle.fleet_repair`), so neither imports the other for them.
"""

from __future__ import annotations

EVERY_TAG = "batch_every_hours"
"""Registered-model tag: the customer's own batch cadence (the registry keeps it; the index copies it)."""


MIN_EVERY_HOURS = 1 / 60
"""The shortest cadence (a minute): the night's planning runs no more often than that."""

MAX_EVERY_HOURS = 10 * 365 * 24.0
"""The longest cadence (ten years): longer is "never", and its seconds must fit the index's columns."""

CADENCE_RANGE = "from a minute (0.017h) to 3650 days, or 0 / never (only when its model changes)"


def cadence_ok(hours: float) -> bool:
    """A cadence in hours metagan accepts, the customer's own (``metagan schedule``) as the fleet's
    default (``fleet.batch_every_hours``): 0, or a minute to ten years (NaN is none)."""
    return hours == 0 or MIN_EVERY_HOURS <= hours <= MAX_EVERY_HOURS


def next_due(stamp: float, every_s: int | None, default_s: int) -> float | None:
    """When a batch drawn in the night that started at ``stamp`` is due again (None: only when
    production changes)."""
    cadence = default_s if every_s is None else every_s
    return stamp + cadence if cadence > 0 else None


def every_s_of(tag: str | None) -> int | None:
    """A registered model's cadence tag as seconds (None: the default)."""
    if not tag:
        return None
    try:
        return round(float(tag) * 3600)
    except ValueError:
        return None
