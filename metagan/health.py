"""Is the registry whole? What ``metagan doctor`` checks: the store itself, then every customer
version that serves or is about to (``production`` and ``candidate``): its model file is there, it
is the file registered (the ``onnx_sha256`` tag recorded at registration) and, for versions
registered before that tag existed, onnxruntime loads it.

A damaged version is reported, never repaired: the operator restores ``mlflow/artifacts`` (or the
database) from backup, rolls back, or adapts the customer again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metagan import registry, tracking
from metagan.errors import Damaged


@dataclass(frozen=True)
class VersionCheck:
    customer_id: str
    version: str
    aliases: tuple[str, ...]
    """The aliases naming this version (``production``, ``candidate``)."""
    how: str
    """``checksum`` (compared with the registered sha256) or ``loaded`` (no checksum recorded)."""
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        state = "ok      " if self.ok else "DAMAGED "
        what = f"checked by {'checksum' if self.how == 'checksum' else 'loading (registered without a checksum)'}"
        return f"{state}{self.customer_id} v{self.version} ({', '.join(self.aliases)}): {self.problem or what}"


@dataclass(frozen=True)
class RegistryHealth:
    store: str
    """The tracking URI checked."""
    versions: list[VersionCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.versions)

    @property
    def damaged(self) -> list[VersionCheck]:
        return [v for v in self.versions if not v.ok]


def check_registry() -> RegistryHealth:
    """Check the store (a missing or unreadable one raises :class:`~metagan.errors.Damaged` at once)
    and every ``production`` and ``candidate`` customer version, from two paginated listings and
    one read of each version's model file."""
    uri = tracking.configure()
    tags = {(v.name, str(v.version)): dict(v.tags or {})
            for v in tracking.search_versions(f"name LIKE '{registry.CUSTOMER_PREFIX}%'")}
    checks = []
    for entry in registry.list_customers():
        served: dict[str, list[str]] = {}
        for alias in (registry.PRODUCTION, registry.CANDIDATE):
            if alias in entry.aliases:
                served.setdefault(entry.aliases[alias], []).append(alias)
        for version, aliases in served.items():
            checks.append(check_version(entry.customer_id, version, tuple(aliases),
                                        tags.get((entry.name, version), {})))
    return RegistryHealth(uri, checks)


def check_version(customer_id: str, version: str, aliases: tuple[str, ...], tags: dict[str, str]) -> VersionCheck:
    """One version: its model file read from the registry and verified (:func:`registry.verify_model_bytes`)."""
    expected = tags.get(tracking.ONNX_SHA256_TAG)
    how = "checksum" if expected else "loaded"
    try:
        data = tracking.load_onnx_bytes(f"models:/{registry.customer_model_name(customer_id)}/{version}")
        registry.verify_model_bytes(data, expected)
    except Damaged as e:
        return VersionCheck(customer_id, version, aliases, how, str(e))
    return VersionCheck(customer_id, version, aliases, how)
