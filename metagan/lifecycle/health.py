"""Is the registry whole? What ``metagan doctor`` checks: the store itself, then every customer
version that serves or is about to (``production`` and ``candidate``): its model file is there, it
is the file registered (the ``onnx_sha256`` tag recorded at registration) and, for versions
registered before that tag existed, onnxruntime loads it.

A damaged version is reported, never repaired: the operator restores ``mlflow/artifacts`` (or the
database) from backup, rolls back, or adapts the customer again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metagan import model_names, model_versions, serving, store
from metagan.lifecycle import listings
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
    and every ``production`` and ``candidate`` customer version, from one paginated listing and one
    read of each version's model file."""
    uri = store.configure()
    checks = []
    for entry in listings.list_customers():
        served: dict[str, list[str]] = {}
        for alias in (model_names.PRODUCTION, model_names.CANDIDATE):
            if alias in entry.aliases:
                served.setdefault(entry.aliases[alias], []).append(alias)
        checks += [check_version(entry.customer_id, version, tuple(aliases)) for version, aliases in served.items()]
    return RegistryHealth(uri, checks)


def check_version(customer_id: str, version: str, aliases: tuple[str, ...]) -> VersionCheck:
    """One version: its model file read as serving reads it (:func:`serving.load_onnx_version`) and
    verified (:func:`serving.verify_model_bytes`)."""
    name = model_names.customer_model_name(customer_id)
    try:
        found = serving.load_onnx_version(name, version=version)
    except Damaged as e:
        return VersionCheck(customer_id, version, aliases, "checksum", str(e))
    if found is None:
        return VersionCheck(customer_id, version, aliases, "checksum",
                            f"{name} version {version}, named by {' and '.join(aliases)}, is not in the registry")
    expected = found.tags.get(model_versions.ONNX_SHA256_TAG)
    how = "checksum" if expected else "loaded"
    try:
        serving.verify_model_bytes(found.onnx, expected)
    except Damaged as e:
        return VersionCheck(customer_id, version, aliases, how, f"{name} version {version}: {e}")
    return VersionCheck(customer_id, version, aliases, how)
