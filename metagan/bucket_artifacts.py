"""Files a run logs go straight to the tracking server's bucket when this process knows it.

A tracking server that proxies artifacts (``mlflow-artifacts:`` URIs, the scale-out profile's
``mlflow server --artifacts-destination s3://...``) receives every file a run logs and writes it to
its bucket: an adaptation's ONNX model and its four MLflow files, ``params.yaml`` and the contact
sheet, seven uploads through the server for each customer, a third of its requests and most of
its bytes. A process that has the server's ``MLFLOW_ARTIFACTS_DESTINATION`` (and S3 credentials,
as every scale-out client has for DVC and the batches) writes them to the same keys itself: the
URIs stay ``mlflow-artifacts:``, so the server, its UI and every reader find the files where they
would have been. Without the destination, uploads go through the server as before. Reads are
not changed here (the night reads its models directly: :func:`metagan.serving.direct_s3_uri`).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from pathlib import Path
from urllib.parse import urlparse

from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.store.artifact.artifact_repo import verify_artifact_path

from metagan.errors import BadInput
from metagan.storage import OutputLocation, proxied_object, write_object

_AGREED: set[tuple[str, str]] = set()
"""(tracking server, destination) pairs this process found to agree: checked once per process."""


class BucketArtifacts(MlflowArtifactsRepository):
    """``mlflow-artifacts:`` uploads as PUTs to the server's bucket (the server's own layout:
    ``mlflow-artifacts:/PATH`` is ``DESTINATION/PATH``); everything else as MLflow does it."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None) -> None:
        self._proxied_uri = artifact_uri.rstrip("/")  # before the parent resolves it to the server's URL
        super().__init__(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)

    def log_artifact(self, local_file, artifact_path=None):
        verify_artifact_path(artifact_path)  # as MLflow checks it: no "..", no absolute path
        name = posixpath.join(*(p for p in (artifact_path, Path(local_file).name) if p))
        target = proxied_object(f"{self._proxied_uri}/{name}")
        if target is None:
            return super().log_artifact(local_file, artifact_path)
        self._check_destination()
        write_object(target, Path(local_file).read_bytes())

    def _check_destination(self) -> None:
        """Check, once per process, that the server reads what this process writes: a worker whose
        ``MLFLOW_ARTIFACTS_DESTINATION`` was not the server's (a typo, a server moved to a restored
        bucket) registered and promoted models whose files the server could not find (an operator
        probe of 2026-12-08: exit 0, then every reader failed). A file is written beside the run's
        files, listed through the server, then removed."""
        destination = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
        server = urlparse(self.artifact_uri).netloc
        if (server, destination) in _AGREED:
            return
        probe = f".metagan-destination-check-{uuid.uuid4().hex}"
        written = proxied_object(f"{self._proxied_uri}/{probe}")
        write_object(written, b"metagan checks that the tracking server reads this bucket and prefix\n")
        try:
            seen = {posixpath.basename(f.path) for f in super().list_artifacts()}
        finally:
            folder, name = written.rsplit("/", 1)
            OutputLocation(folder).remove(name)
        if probe not in seen:
            raise BadInput(f"MLFLOW_ARTIFACTS_DESTINATION={destination} is not the tracking server's artifacts "
                           f"destination: a file written to {written} is not found through the server ({server}); "
                           "set it to the value the server was started with (docs/DEPLOY.md, section 1), or "
                           "unset it to upload through the server")
        _AGREED.add((server, destination))


def install() -> None:
    """Use :class:`BucketArtifacts` for ``mlflow-artifacts:`` URIs in this process (idempotent)."""
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry

    _artifact_repository_registry.register("mlflow-artifacts", BucketArtifacts)
