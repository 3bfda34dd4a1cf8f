"""The S3 client: ``s3_client`` (boto3, configured from the environment and the retry policy, cached per
environment in ``_clients``, the only cache of clients), the transfer configuration of multipart copies,
``get_object`` / ``head_object`` with a missing key as ``NotFoundError``, and not-found detection.

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
_ENV_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")


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

            custom_endpoint = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
            config = Config(
                retries={"max_attempts": policy.request_attempts, "mode": "standard"},
                connect_timeout=policy.connect_timeout,
                read_timeout=policy.read_timeout,
                max_pool_connections=32,
                # S3-compatible stores on a plain host:port need path-style addressing.
                s3={"addressing_style": "path" if custom_endpoint else "auto"},
            )
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            client = boto3.session.Session().client("s3", config=config, region_name=region)
            _clients[key] = client
        return client


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
