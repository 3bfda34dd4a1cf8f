"""Retries of transient storage failures: ``RetryPolicy``, the process-wide policy (``set_retry_policy``; this
module is the only one that holds it), ``retrying``, the classification of an error as transient, a store
error or a checksum error, and ``redact``, which takes credentials out of what we print.

May import ``errors`` of this package. botocore is imported inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import time
from collections.abc import Callable
from typing import TypeVar

from inkbooth.storage.errors import ChecksumError, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 8.0
    # botocore's own retries of one HTTP request (a multipart part is retried alone this way); a
    # timeout is not retried there but here (see ``s3client``), where it is logged and bounded.
    request_attempts: int = 3
    # A store that accepts connections but never answers: each request gives up after read_timeout
    # seconds without a byte (connect_timeout without a connection) and the first warning comes then;
    # after a timeout, another attempt starts only if one more stalled request (connect_timeout +
    # read_timeout) would still end by deadline, so a stalled store is an error by deadline seconds.
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    deadline: float = 300.0

    def delay(self, attempt: int) -> float:
        # Full jitter: spread retries of many workers so they do not hammer a throttled store in step.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


DEFAULT_RETRY = RetryPolicy()
_retry_policy = DEFAULT_RETRY

_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504", "RequestLimitExceeded",
}


def set_retry_policy(policy: RetryPolicy) -> None:
    """Replace the process-wide retry policy (tests use a fast one)."""
    global _retry_policy
    _retry_policy = policy


def _is_transient(exc: BaseException) -> bool:
    from botocore import exceptions as bx

    if isinstance(exc, ChecksumError):
        return True  # corruption on the wire: a second read may well be clean
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.ResponseStreamingError,
                        bx.IncompleteReadError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return err.get("Code") in _TRANSIENT_CODES or status >= 500 or status == 429
    return False


def retrying(fn: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """Run ``fn`` and retry it on transient storage failures; the final error names ``what``."""
    policy = policy or _retry_policy
    started = time.monotonic()
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as raised:  # noqa: BLE001 - classified below
            exc = _as_checksum_error(raised, what)
            if not _is_transient(exc):
                if _is_store_error(exc):  # auth, missing credentials, bad request: one line naming the URI
                    raise StorageError(f"{redact(what)}: {_describe(exc)}") from None
                raise
            # A mismatch read twice is corruption at rest, not on the wire: no point in more tries.
            if isinstance(exc, ChecksumError) and attempt >= 1:
                raise exc from raised
            wait = policy.delay(attempt)
            elapsed = time.monotonic() - started
            # After a timeout the next attempt may time out too: start it only if it would end by the deadline.
            reserve = policy.connect_timeout + policy.read_timeout if _is_timeout(exc) else 0.0
            if attempt == policy.attempts - 1 or elapsed + wait + reserve > policy.deadline:
                if isinstance(exc, ChecksumError):
                    raise exc from raised
                stalled = f" (no answer in {elapsed:.0f}s: the store stalls)" if _is_timeout(exc) else ""
                raise StorageError(f"{redact(what)}: failed after {attempt + 1} attempts{stalled}: "
                                   f"{_describe(exc)}") from None
            log.warning("%s: %s; retrying in %.2fs (%d/%d)", redact(what), _describe(exc), wait, attempt + 1,
                        policy.attempts - 1)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _is_timeout(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    return isinstance(exc, (ReadTimeoutError, ConnectTimeoutError, TimeoutError))


def _as_checksum_error(exc: BaseException, what: str) -> BaseException:
    """botocore's own integrity check (the server's CRC) failing is a checksum error too."""
    from botocore.exceptions import FlexibleChecksumError

    if isinstance(exc, FlexibleChecksumError):
        return ChecksumError(f"{what}: checksum mismatch on the wire ({exc})")
    return exc


def _describe(exc: BaseException) -> str:
    """A one-line description of a store error, with any credentials in URLs redacted."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return redact(f"{err.get('Code', '?')}: {err.get('Message', '')}".strip())
    return redact(f"{type(exc).__name__}: {exc}")


# user:password@ in a URL, and the signing parameters of presigned URLs.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"']*@")
_SIGNED = re.compile(r"(?i)\b(X-Amz-(?:Signature|Credential|Security-Token)|Signature|AWSAccessKeyId|"
                     r"x-amz-security-token)=[^&\s\"']+")


def redact(text: str) -> str:
    """``text`` with credentials in URLs replaced by ``***`` (user info, signatures, session tokens)."""
    return _SIGNED.sub(r"\1=***", _USERINFO.sub(r"\1***@", text))


def _is_store_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, (BotoCoreError, ClientError))
