"""The S3 client: ``s3_client`` (boto3, configured from the environment variables listed in the package
docstring and the retry policy, cached per environment in ``_clients``, the only cache of clients), the
transfer configuration of multipart copies, ``get_object`` / ``head_object`` with a missing key as
``NotFoundError``, and not-found detection.

May import ``errors``, ``locations``, ``retries`` and ``localfiles`` (for ``CHUNK``) of this package. boto3
and botocore are imported inside the functions that need them: importing this module does not load them.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from inkbooth.storage import retries
from inkbooth.storage.errors import NotFoundError
from inkbooth.storage.localfiles import CHUNK
from inkbooth.storage.locations import Location

_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()
# The environment variables the client depends on (the package docstring says what each does): a
# client is made anew when any of them changes. boto3 reads all but AWS_REGION and ADDRESSING_ENV itself.
ADDRESSING_ENV = "INKBOOTH_S3_ADDRESSING_STYLE"
ADDRESSING_STYLES = ("path", "virtual", "auto")
_ENV_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
             "AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION", ADDRESSING_ENV)


def s3_client() -> Any:
    """A boto3 S3 client configured from the environment (cached per environment)."""
    policy = retries._retry_policy
    key = (*(os.environ.get(k) for k in _ENV_KEYS), policy.request_attempts, policy.connect_timeout,
           policy.read_timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import InvalidChecksumConfigError

            config = Config(
                retries={"max_attempts": policy.request_attempts, "mode": "standard"},
                connect_timeout=policy.connect_timeout,
                read_timeout=policy.read_timeout,
                max_pool_connections=32,
                s3={"addressing_style": _addressing_style()},
            )
            # No region set: boto3's own (AWS_DEFAULT_REGION, the profile's, else us-east-1 for S3).
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
            try:
                client = boto3.session.Session().client("s3", config=config, region_name=region)
            except InvalidChecksumConfigError as e:  # a typo in the Secret: say which variable
                raise ValueError(f"AWS_REQUEST_CHECKSUM_CALCULATION / AWS_RESPONSE_CHECKSUM_VALIDATION: "
                                 f"{e}") from None
            # A timeout goes straight to ``retries.retrying``, which warns at once and keeps to the deadline;
            # botocore would retry it silently request_attempts more times (a stalled store: 4 x read_timeout
            # before the first word). Other failures keep botocore's per-request retries.
            client.meta.events.register_first("needs-retry.s3", _timeouts_are_not_retried_here)
            _clients[key] = client
        return client


def _timeouts_are_not_retried_here(caught_exception: BaseException | None = None, **_: Any) -> None:
    """botocore's ``needs-retry`` hook: a request that timed out raises at once (before botocore's
    own retry handler runs, so it neither sleeps nor spends retry quota on it)."""
    if caught_exception is not None and retries._is_timeout(caught_exception):
        raise caught_exception


def _addressing_style() -> str:
    """``path`` (``http://host/bucket/key``), ``virtual`` (``http://bucket.host/key``) or ``auto``, from
    ``INKBOOTH_S3_ADDRESSING_STYLE``; unset: path for a custom endpoint (S3-compatible stores on a
    plain host:port need it), else auto."""
    value = os.environ.get(ADDRESSING_ENV, "").strip().lower()
    if not value:
        custom_endpoint = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
        return "path" if custom_endpoint else "auto"
    if value not in ADDRESSING_STYLES:
        raise ValueError(f"{ADDRESSING_ENV}={os.environ[ADDRESSING_ENV]!r}: expected one of "
                         f"{', '.join(ADDRESSING_STYLES)}")
    return value


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    # Multipart above 16 MiB, in 16 MiB parts; threads stay few, the machines are shared.
    return TransferConfig(multipart_threshold=16 * CHUNK, multipart_chunksize=16 * CHUNK, max_concurrency=4)


def _object_call(method: str, uri: str, loc: Location) -> dict[str, Any]:
    """``get_object`` / ``head_object`` on one key, a 404 turned into NotFoundError."""
    try:
        return getattr(s3_client(), method)(Bucket=loc.bucket, Key=loc.key)
    except Exception as e:
        if _not_found(e):
            raise NotFoundError(f"{uri}: no such object") from None
        raise


def _not_found(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return err.get("Code") in ("NoSuchKey", "404", "NotFound", "NoSuchBucket") or status == 404
    return False
