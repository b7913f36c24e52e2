"""The MLflow tracking server's refusals, told apart from its outages.

An outage is retried (:func:`metagan.store.retrying`); a refusal is the configuration's fault and
is :class:`~metagan.errors.BadInput` at once, in one line that names the server and what to fix.
Behind a proxying server (``--serve-artifacts``) most refusals are of the *server's* own S3
credentials by its bucket, which the server reports differently by direction: a list or a
download is answered 401 UNAUTHENTICATED naming the bucket, an upload a bare 500.
"""

from __future__ import annotations

import re

ARTIFACT_ROOT = "/api/2.0/mlflow-artifacts/artifacts"
# a file sent to or read from the server's artifact proxy that got a 500 (MLflow's own wording,
# as an HTTPError's text or, with its HTTP retries off, as "too many 500 error responses")
_ARTIFACT_500 = re.compile(r"/mlflow-artifacts/\S* failed with (error code 500\b|exception .*too many 500 error)")


def credentials_refused(e: BaseException, what: str, server: str):
    """The tracking server's 401 or 403 as :class:`~metagan.errors.BadInput`, or None. A message
    naming ``s3://`` is the server's artifact store refusing the server's own keys (a probe on
    SeaweedFS of 2026-12-07 met it as a bug's traceback, exit 70, or as a damaged model, exit 5);
    "Invalid Host header" is the server's allowed-hosts list not naming the address this client
    used; otherwise it is this client's login that the server refused."""
    import requests
    from mlflow.exceptions import MlflowException

    from metagan.errors import BadInput

    if isinstance(e, requests.exceptions.HTTPError) and e.response is not None \
            and e.response.status_code in (401, 403):
        try:
            answer = e.response.json()
        except ValueError:
            answer = {}
        # a body that is no JSON (the server's allowed-hosts guard answers in plain text) is the message
        code = answer.get("error_code", str(e.response.status_code))
        message = answer.get("message", (e.response.text or "").strip() or e.response.reason)
    elif isinstance(e, MlflowException) and e.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        code, message = e.error_code, e.message
    else:
        return None
    message = str(message).splitlines()[0] if message else code
    if "Invalid Host header" in message:
        # the server's DNS-rebinding guard: the address this client used is not one it answers to
        # (an operator probe of 2026-12-07 was sent to check its credentials instead)
        hint = (f"that the server's MLFLOW_ALLOWED_HOSTS (mlflow/start-server.sh) names the host this client "
                f"gives in MLFLOW_TRACKING_URI, {_host_of(server)}, port included, then restart the server")
    elif "s3://" in message:
        hint = ("the tracking server's own S3 credentials for its artifact store: AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY where mlflow/start-server.sh runs, then restart it")
    else:
        hint = "this client's MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    return BadInput(f"MLflow ({server}) refused {what}: {code}: {message} (check {hint})")


def _host_of(server: str) -> str:
    """``http://host:port/path`` -> ``host:port`` (the Host header a client sends)."""
    from urllib.parse import urlsplit

    return urlsplit(server).netloc or server


def artifact_store_refusal(e: BaseException, what: str, server: str, timeout_s: float = 10.0):
    """After a 500 from the server's artifact proxy: is it the server's bucket refusing the server's
    keys? One list of the artifact root tells (401 naming the bucket), and the refusal is returned as
    :class:`~metagan.errors.BadInput`; None for any other answer, or none (an outage, which the
    retry layer judges). Until a probe of 2026-12-07 such an upload was retried as an outage and
    ended "MLflow unavailable" (exit 4) after 15 s, the cause only in the server's log."""
    if not server.startswith(("http://", "https://")) or not _artifact_500(e):
        return None
    import requests
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:  # a second try: the server may drop the connection the failed upload left open
        answer = http_request(get_default_host_creds(server), ARTIFACT_ROOT, "GET", max_retries=1,
                              backoff_factor=0, timeout=timeout_s)
    except Exception:  # the server itself is not answering: an outage, not a refusal
        return None
    if answer.status_code not in (401, 403):
        return None
    return credentials_refused(requests.exceptions.HTTPError(response=answer), what, server)


def _artifact_500(e: BaseException) -> bool:
    import requests

    if isinstance(e, requests.exceptions.HTTPError):
        response = e.response
        return response is not None and response.status_code == 500 and "/mlflow-artifacts/" in (response.url or "")
    return bool(_ARTIFACT_500.search(str(e)))
