"""Which customers a project knows, the one message every command gives for a name it does not,
and the new ids ingestion refuses for being a known one (or another new one) in another case.

A customer is known when it has uploads (its folder among the uploads a command reads, or its shots
ingested under ``paths.ingested_customers``) or a registered model. The commands that take a
customer's name (``ingest --customer``, ``generate``, ``promote``, ``rollback``, ``schedule``)
check it here before any work, so a typo reads "unknown customer" whatever the command, with the
names it may have meant, and bad input's exit code; a new customer (uploads, no model yet) is known.

Torch- and MLflow-free for the embedded registry (read with :mod:`metagan.mlflow_sqlite`):
``metagan generate`` checks its customer here.
"""

from __future__ import annotations

import os
from pathlib import Path

from metagan.errors import NotFound
from metagan.model_names import CUSTOMER_PREFIX, customer_id_of, customer_model_name
from metagan.uploads import CUSTOMER_ID, UploadError, validate_customer_id

SHOWN = 8
"""Known names listed in the message (the closest match is looked for among all of them)."""

LISTED_FROM_A_SERVER = 1000
"""At most this many registered names are read from a tracking server for the message (ten pages):
a typo at a million customers costs ten requests, not ten thousand. Only the message is cut short:
whether a name is known is asked of the registry by that name (:func:`check_known`)."""

SEARCHED_BY_NAME = 20
"""Up to this many new ids are looked for in a tracking server's registry one request each, in any
case (:func:`case_twins`); more (a first scan of a fleet's uploads) read its list of customers
once, a request per 100 names."""


def check_known(customer_id: str, ingested_root: str | Path, uploads_dir: str | Path | None = None) -> str:
    """``customer_id`` when the project knows it; else :class:`~metagan.errors.NotFound` with
    :func:`unknown_customer_message`. Cheap when it is known: a look at two folders and, only when
    neither holds it, one registry read."""
    customer_id = validate_customer_id(customer_id)
    if _has_uploads(customer_id, ingested_root, uploads_dir) or _registered(customer_id):
        return customer_id
    if _refused_at_last_ingestion(customer_id):  # it did upload: "no uploads ... of that name" was untrue
        raise NotFound(f"customer {customer_id!r} has no model and no shots: its uploads were refused at its last "
                       f"ingestion (`metagan ingest --customers DIR --customer {customer_id}` says why)")
    raise NotFound(unknown_customer_said(customer_id, ingested_root, uploads_dir))


def _refused_at_last_ingestion(customer_id: str) -> bool:
    """Whether the fleet index recorded the customer's last ingestion, and as refused (its row's
    ``uploads_hash`` None). Asked only of a name otherwise unknown, and of an index that exists: a
    look, never the index's creation."""
    from metagan.errors import kind_of
    from metagan.config import INDEX_URL_ENV
    from metagan.fleet_index import embedded_index_path, registry_index
    from metagan.store import tracking_uri

    if not os.environ.get(INDEX_URL_ENV) and not embedded_index_path(tracking_uri()).exists():
        return False
    try:
        row = registry_index().row(customer_id)
    except Exception as e:  # noqa: BLE001 (a known failure of the index: the message is "unknown", as before)
        if kind_of(e) is None:
            raise
        return False
    return row is not None and row.uploads_sig is not None and row.uploads_hash is None


def case_twins(customer_ids: list[str], ingested_root: str | Path) -> dict[str, UploadError]:
    """The new ids among ``customer_ids`` (a batch about to be ingested) that
    :func:`~metagan.uploads.validate_customer_id` refuses for differing only in case from a known
    customer (shots ingested, a registered model), from another id of the batch or from the id an
    overlapping run claimed, each with its error: on a case-insensitive file system the two would
    share folders. Ids known with that very spelling pass; unsafe ids are left to ingestion, which
    says why. Where the registry or the fleet index cannot be read, the new ids are refused for
    that alone (the next run looks again), the known ones go on.

    What is known is read before anything is written, so two overlapping runs, one ingesting
    ``Acme`` and the other ``acme``, would both find neither. The new ids that pass are therefore
    claimed in the fleet index both runs share (:meth:`~metagan.fleet_index.FleetIndex.claim_ids`),
    before their folders are read: the first claim of a case-folded id wins, the other spelling is
    refused. Only new ids are claimed: the known ones are checked where they are known, so a lost
    index holds nothing back but the claims of runs still ingesting. A claim stays with the shots
    written under it; a folder refused or not written gives it back (:func:`release_unwritten`)."""
    from metagan.customers import ingested_customers
    from metagan.errors import kind_of

    ingested = set(ingested_customers(ingested_root))
    new = [c for c in customer_ids if CUSTOMER_ID.fullmatch(c) and c not in ingested]
    if not new:
        return {}
    try:
        known = ingested | registered_in_any_case(new)
    except Exception as e:  # noqa: BLE001 (a known failure of the registry; a bug is raised)
        if kind_of(e) is None:
            raise
        return {c: UploadError(c, f"cannot tell whether a registered customer has its id in another case ({e}); "
                                  "it is ingested once the registry answers") for c in new}
    # each id checked against those of its own case-folded spelling only: against every known id
    # and every id of the batch, a first ingestion of n new customers took n^2 comparisons (10,000: 4 s)
    known_by_fold, batch_by_fold = _by_fold(known), _by_fold(customer_ids)
    refused = {}
    for c in new:
        try:
            validate_customer_id(c, known_by_fold.get(c.casefold(), ()), batch_by_fold.get(c.casefold(), ()))
        except UploadError as e:
            refused[c] = e
    return refused | _claimed_otherwise([c for c in new if c not in refused and c not in known])


def _claimed_otherwise(customer_ids: list[str]) -> dict[str, UploadError]:
    """Claim ``customer_ids`` (new ids, no twin known): those whose case-folded id another spelling
    holds, with the twin's error; all of them where the index cannot be written."""
    from metagan.errors import kind_of
    from metagan.fleet_index import registry_index

    if not customer_ids:
        return {}
    try:
        held = registry_index().claim_ids(customer_ids)
    except Exception as e:  # noqa: BLE001 (a known failure of the index; a bug is raised)
        if kind_of(e) is None:
            raise
        return {c: UploadError(c, f"cannot claim its id in the fleet index ({e}); it is ingested once the index "
                                  "answers") for c in customer_ids}
    refused = {}
    for c in customer_ids:
        try:
            validate_customer_id(c, claimed=(held[c],))
        except UploadError as e:
            refused[c] = e
    return refused


def release_unwritten(customer_ids: list[str], ingested_root: str | Path) -> None:
    """The claims of ``customer_ids`` (refused at ingestion) whose shots are not under
    ``ingested_root`` are given back: a folder refused for its uploads (too few usable shots) and
    renamed to fix its case takes the new spelling at the next run. A failure to write the index
    is logged: the claims stay until that folder's next ingestion, which claims them again, or for a
    day (:data:`~metagan.fleet_index.CLAIM_LEASE_S`)."""
    import logging

    from metagan.errors import kind_of
    from metagan.fleet_index import registry_index

    unwritten = [c for c in customer_ids if CUSTOMER_ID.fullmatch(c)
                 and not (Path(ingested_root) / c / "shots.npz").exists()]
    if not unwritten:
        return
    try:
        registry_index().release_ids(unwritten)
    except Exception as e:  # noqa: BLE001 (a known failure of the index; a bug is raised)
        if kind_of(e) is None:
            raise
        logging.getLogger(__name__).warning("the claims of %d refused customer id(s) stay in the fleet index: %s",
                                            len(unwritten), e)


def _by_fold(ids) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for i in ids:
        grouped.setdefault(i.casefold(), []).append(i)
    return grouped


def registered_in_any_case(customer_ids: list[str]) -> set[str]:
    """The registered customers whose ids equal one of ``customer_ids`` but for case (the same ids
    included): one query of the embedded registry; a server is asked by name (:data:`SEARCHED_BY_NAME`)."""
    from metagan import mlflow_sqlite
    from metagan.store import tracking_uri

    folded = {c.casefold() for c in customer_ids}
    db = mlflow_sqlite.database_path(tracking_uri())
    names = None
    if db is not None:
        try:
            names = mlflow_sqlite.model_names_in_any_case(db, [customer_model_name(c) for c in customer_ids])
        except mlflow_sqlite.UnknownLayout:
            pass  # MLflow's client reads it
    if names is None:
        from metagan import model_versions

        if len(customer_ids) <= SEARCHED_BY_NAME:
            names = [m.name for c in customer_ids
                     for m in model_versions.search_models_in_any_case(customer_model_name(c))]
        else:
            names = [m.name for m in model_versions.list_models(CUSTOMER_PREFIX)]
    return {customer_id_of(n) for n in names
            if n.startswith(CUSTOMER_PREFIX) and customer_id_of(n).casefold() in folded}


def unknown_among(customer_ids: list[str], ingested_root: str | Path, uploads_dir: str | Path | None = None) -> list[str]:
    """Those of ``customer_ids`` the project does not know (their :func:`check_known` would refuse)."""
    return [c for c in customer_ids if not (_has_uploads(c, ingested_root, uploads_dir) or _registered(c))]


def unknown_customer_said(customer_id: str, ingested_root: str | Path, uploads_dir: str | Path | None = None) -> str:
    """:func:`unknown_customer_message` with the names the project knows (from a tracking server,
    the first :data:`LISTED_FROM_A_SERVER` registered ones: then the count is not given)."""
    known, cut = _known(ingested_root, uploads_dir)
    return unknown_customer_message(customer_id, known, cut=cut)


def unknown_customer_message(customer_id: str, known: list[str], cut: bool = False) -> str:
    """``unknown customer 'acm': no uploads or registered model of that name (known: acme, beta;
    did you mean 'acme'?)``. ``cut``: ``known`` is only some of them (a server's first names), so
    the message says "and more", not a count it does not know."""
    import difflib

    if not known:
        return (f"unknown customer {customer_id!r}: no uploads or registered model of that name (this project "
                "knows no customer yet: `metagan ingest --customers DIR` or `metagan adapt --customers DIR` "
                "adds them)")
    more = "" if len(known) <= SHOWN and not cut else " and more" if cut else f" and {len(known) - SHOWN} more"
    listed = ", ".join(known[:SHOWN]) + more
    # ids are case-sensitive ("Acme" and "acme" are two customers), but a name typed in another
    # case is a typo of the known one(s): difflib, which compares case too, offered none for "GOOD"
    same_letters = [k for k in known if k.casefold() == customer_id.casefold()]
    close = same_letters or difflib.get_close_matches(customer_id, known, n=1)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    return f"unknown customer {customer_id!r}: no uploads or registered model of that name (known: {listed}{hint})"


def _known(ingested_root: str | Path, uploads_dir: str | Path | None) -> tuple[list[str], bool]:
    """Every customer with uploads (folders of ``uploads_dir``, shots under ``ingested_root``) or a
    registered model, sorted; and whether the list was cut (a tracking server's first
    :data:`LISTED_FROM_A_SERVER` registered names)."""
    from metagan.customers import ingested_customers

    registered, cut = _registered_customers()
    names = set(ingested_customers(ingested_root)) | set(registered)
    if uploads_dir is not None and Path(uploads_dir).is_dir():
        names |= {p.name for p in Path(uploads_dir).iterdir() if p.is_dir() and CUSTOMER_ID.fullmatch(p.name)}
    return sorted(names), cut


def _has_uploads(customer_id: str, ingested_root: str | Path, uploads_dir: str | Path | None) -> bool:
    # anything of that name among the uploads, even a file or a broken link: ingestion says what is wrong with it
    return (uploads_dir is not None and os.path.lexists(Path(uploads_dir) / customer_id)) \
        or (Path(ingested_root) / customer_id / "shots.npz").exists()


def _registered(customer_id: str) -> bool:
    return bool(_registered_customers(customer_model_name(customer_id))[0])


def _registered_customers(name: str | None = None) -> tuple[list[str], bool]:
    """The ids of the customers with a registered model (only ``name``'s, when given: exact at any
    number of customers), and whether the list was cut: all of them are read from the embedded
    registry, the first :data:`LISTED_FROM_A_SERVER` from a server."""
    from metagan import mlflow_sqlite
    from metagan.store import tracking_uri

    db = mlflow_sqlite.database_path(tracking_uri())
    if db is not None:
        try:
            return [customer_id_of(n) for n in mlflow_sqlite.model_names(db, CUSTOMER_PREFIX, name)], False
        except mlflow_sqlite.UnknownLayout:
            pass  # MLflow's client reads it
    from metagan import model_versions

    if name is not None:
        return [customer_id_of(m.name) for m in model_versions.search_models([name])], False
    found = model_versions.list_models(CUSTOMER_PREFIX, limit=LISTED_FROM_A_SERVER)
    return sorted(customer_id_of(m.name) for m in found), len(found) >= LISTED_FROM_A_SERVER
