"""Is the registry whole? What ``metagan doctor`` checks: the store itself; every customer version
that serves, is about to, or would serve again after a rollback (``production``, ``candidate``,
``previous``): its model file is there, it is the file registered (the ``onnx_sha256`` tag recorded
at registration) and, for versions registered before that tag existed, onnxruntime loads it; and
the file of the meta-model's and the evaluator's ``current`` version against the sha256 recorded
at their registration (``checkpoint_sha256``, ``sha256``).

A damaged version or file is reported with what to do, never repaired here: the operator restores
``mlflow/artifacts`` (or the database) from backup, copies back the project's own copy of a file
where it has the registered checksum, rolls back, or adapts the customer again. Nothing is tagged
again to make a file pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from metagan import model_names, model_versions, serving, store
from metagan.addresses import file_uri_path
from metagan.config import Params
from metagan.errors import Damaged
from metagan.files import sha256_file
from metagan.lifecycle import listings

CHECKED_ALIASES = (model_names.PRODUCTION, model_names.CANDIDATE, model_names.PREVIOUS)
"""A customer's versions doctor checks: ``previous`` too, which ``metagan rollback`` would serve."""


@dataclass(frozen=True)
class VersionCheck:
    customer_id: str
    version: str
    aliases: tuple[str, ...]
    """The aliases naming this version (``production``, ``candidate``, ``previous``)."""
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
class FileCheck:
    """The registered file of the meta-model's or the evaluator's ``current`` version."""

    what: str
    """``meta-model`` or ``evaluator``."""
    model: str
    version: str
    expected: str
    """The sha256 recorded at registration; "" for a version registered without one (not checked)."""
    file: str = ""
    """The registered file checked (a path, or an artifact URI off this machine); "" when missing."""
    found: str = ""
    """Its sha256; "" when the file is missing."""
    problem: str = ""
    fix: str = ""
    """What to do about the problem."""

    @property
    def ok(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        head = f"{self.what} {self.model} v{self.version} ({model_names.CURRENT})"
        if self.ok:
            return f"ok      {head}: " + ("checked by checksum" if self.expected else
                                          "present (registered without a checksum: not checked)")
        return f"DAMAGED {head}: {self.problem}; {self.fix}"


@dataclass(frozen=True)
class RegistryHealth:
    store: str
    """The tracking URI checked."""
    versions: list[VersionCheck] = field(default_factory=list)
    files: list[FileCheck] = field(default_factory=list)
    """The meta-model's and the evaluator's (those registered)."""

    @property
    def ok(self) -> bool:
        return not self.damaged

    @property
    def damaged(self) -> list[VersionCheck | FileCheck]:
        return [c for c in [*self.versions, *self.files] if not c.ok]


def check_registry(params: Params | None = None) -> RegistryHealth:
    """Check the store (a missing or unreadable one raises :class:`~metagan.errors.Damaged` at once),
    every ``production``, ``candidate`` and ``previous`` customer version, from one paginated
    listing and one read of each version's model file, and the meta-model's and evaluator's
    ``current`` files. ``params``: where the project keeps its own copies of those two (a copy with
    the registered checksum is named as the way to restore a damaged one)."""
    uri = store.configure()
    checks = []
    for entry in listings.list_customers():
        named: dict[str, list[str]] = {}
        for alias in CHECKED_ALIASES:
            if alias in entry.aliases:
                named.setdefault(entry.aliases[alias], []).append(alias)
        checks += [check_version(entry.customer_id, version, tuple(aliases)) for version, aliases in named.items()]
    local = {} if params is None else {model_names.META_MODEL: params.resolve(params.paths.meta_checkpoint),
                                       model_names.EVALUATOR_MODEL: params.resolve(params.paths.evaluator)}
    files = [check_file(what, name, local.get(name)) for what, name in
             (("meta-model", model_names.META_MODEL), ("evaluator", model_names.EVALUATOR_MODEL))]
    return RegistryHealth(uri, checks, [f for f in files if f is not None])


def check_version(customer_id: str, version: str, aliases: tuple[str, ...]) -> VersionCheck:
    """One version: its model file read as serving reads it (:func:`serving.load_onnx_version`) and
    verified (:func:`serving.verify_model_bytes`)."""
    name = model_names.customer_model_name(customer_id)
    # a damaged previous is refused by `metagan rollback` (production_moves.rollback reads it first): say so
    then = "; until then `metagan rollback` refuses it" if model_names.PREVIOUS in aliases else ""
    try:
        found = serving.load_onnx_version(name, version=version)
    except Damaged as e:
        return VersionCheck(customer_id, version, aliases, "checksum", f"{e}{then}")
    if found is None:
        return VersionCheck(customer_id, version, aliases, "checksum",
                            f"{name} version {version}, named by {' and '.join(aliases)}, is not in the registry")
    expected = found.tags.get(model_versions.ONNX_SHA256_TAG)
    how = "checksum" if expected else "loaded"
    try:
        serving.verify_model_bytes(found.onnx, expected)
    except Damaged as e:
        return VersionCheck(customer_id, version, aliases, how, f"{name} version {version}"
                            f"{_file_named(found.tags.get(model_versions.ONNX_FILE_TAG))}: {e}{then}")
    return VersionCheck(customer_id, version, aliases, how)


CHECKSUM_TAGS = {model_names.META_MODEL: model_versions.CHECKPOINT_SHA256_TAG,
                 model_names.EVALUATOR_MODEL: model_versions.EVALUATOR_SHA256_TAG}


def check_file(what: str, name: str, local: Path | None = None) -> FileCheck | None:
    """The file of ``name``'s ``current`` version (a folder of one file, as registered by
    :mod:`metagan.lifecycle.meta_model`) against its recorded sha256; None when no version is
    ``current``. ``local``: the project's own copy, named in the fix when it has that checksum."""
    version = model_versions.get_alias(name, model_names.CURRENT)
    if version is None:
        return None
    v, expected = str(version.version), version.tags.get(CHECKSUM_TAGS[name], "")
    found: dict[str, str] = {}
    for uri in model_versions.artifact_file_uris(version.source):
        try:
            found[uri] = hashlib.sha256(serving.read_model_file(uri)).hexdigest()
        except Damaged:  # gone between the listing and the read
            pass
    match = next((uri for uri, sha in found.items() if not expected or sha == expected), None)
    if match is not None:
        return FileCheck(what, name, v, expected, _shown(match), found[match])
    fix = _fix(what, name, v, expected, local, next(iter(found), None), version.source)
    if not found:
        recorded = f"; registered sha256 {expected[:12]}..." if expected else ""
        return FileCheck(what, name, v, expected, problem=f"its registered file is missing (nothing in "
                         f"{_shown(version.source)}{recorded})", fix=fix)
    (uri, sha), *others = found.items()
    more = f" (and {len(others)} other file(s) there, none of them with it)" if others else ""
    return FileCheck(what, name, v, expected, _shown(uri), sha, f"its registered file {_shown(uri)} does not match its "
                     f"registered checksum (sha256 {expected[:12]}... registered, {sha[:12]}... found){more}", fix)


def _fix(what: str, name: str, version: str, expected: str, local: Path | None, damaged: str | None,
         source: str) -> str:
    """What to do for a damaged registered file: copy back the project's own copy where it is the
    registered file, otherwise restore the backup, otherwise register it anew once the damaged
    version is deleted (while it is there, meta-training with the same data and settings stops on
    it, and the evaluator's registration of the same file finds it and registers nothing)."""
    if local is not None and local.is_file() and sha256_file(local) == expected:
        target = _shown(damaged) if damaged else f"{_shown(source)}/{local.name}"
        return f"the project's copy {local} has the registered sha256: copy it to {target}"
    again = ("train it again (`metagan meta-train`)" if what == "meta-model"
             else "register the evaluator file again (`metagan pipeline` does)")
    return (f"restore {store.artifacts_backup()} from backup; without a backup, delete version {version} of {name} "
            f"(MLflow UI or client) and {again}")


def _shown(uri: str) -> str:
    """A registered file as the operator finds it: a path on this machine, else its URI."""
    return str(file_uri_path(uri)) if uri.startswith("file:") else uri


def _file_named(uri: str | None) -> str:
    return f", file {_shown(uri)}" if uri else ""
