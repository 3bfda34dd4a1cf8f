"""``inkbooth doctor``: a preflight a platform engineer runs against a live cluster before the first run.

It prints one line per check: ``ok``, ``warn`` or ``FAIL``, what it found and, for a problem, one
concrete command or setting that fixes it; ``inkbooth doctor`` exits 1 when a check fails. Against
the cluster file (``inkbooth.cluster``) it checks:

* the KFP backend (``GET /apis/v2beta1/healthz``: ``tag_name``, ``multi_user``) against ``kfp.backend``
  and ``kfp.mode``, and where runs execute (standalone: the ml-pipeline API server's namespace;
  multi-user: a profile namespace) against ``kfp.namespace``;
* the ``kfp-launcher`` ConfigMap there (root, and ``providers``: endpoint, region, addressing,
  credentials) against ``storage``; the S3 Secret's key names (never its values) or the runner's
  cloud identity; GCS and checksum mode; the runner account's rights; Pod Security against the
  compile contract; whether the KFP UI can read the runs' reports; GPU nodes and their NVIDIA driver
  (GPU Feature Discovery labels) against the images' CUDA;
* with ``check_bucket``, the pipeline root's bucket, from here, with the local credentials;
* each model registry of ``model_registries`` (``inkbooth.sinks``: MLflow, Kubeflow Model Registry),
  from here: that it answers, with the token its ``token_env`` names where one is set. A registry at
  a cluster-internal name (``*.svc``, ``*.svc.cluster.local``) that does not resolve here is a
  ``warn``: the register steps reach it from inside the cluster.

The checks are in ``inkbooth.doctor_checks`` (KFP, the store) and ``inkbooth.doctor_cluster`` (Pod
Security, the UI, GPUs); here is the transport, ``Api``: ``kubectl get --raw`` and ``kubectl auth can-i``
(each with a timeout) and KFP's healthz over HTTP (or through the API server's service proxy when no
``kfp_host`` is given). Tests replace it with recorded answers. Nothing is written to the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from inkbooth.cluster import ClusterConfig
from inkbooth.doctor_checks import ApiError, Finding, bucket
from inkbooth.doctor_cluster import ClusterDoctor

__all__ = ["Api", "ApiError", "Finding", "diagnose", "head_bucket", "registry_findings", "render"]
TIMEOUT = 20  # seconds: every kubectl call and HTTP request


class Api:
    """The cluster as doctor reads it: ``kubectl`` (the current or a named context) and KFP's healthz."""

    def __init__(self, context: str | None = None, kubectl: str = "kubectl", timeout: float = TIMEOUT):
        self.base = [kubectl, *(["--context", context] if context else [])]
        self.timeout = timeout

    def _kubectl(self, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=self.timeout)
        except FileNotFoundError:
            raise ApiError(f"{self.base[0]} not found on PATH") from None
        except subprocess.TimeoutExpired:
            raise ApiError(f"kubectl {' '.join(args[:2])} gave no answer in {self.timeout:g}s") from None

    def get(self, path: str) -> Any:
        """The API server's JSON answer for ``path``; None when there is nothing there (404)."""
        out = self._kubectl("get", "--raw", path)
        if out.returncode == 0:
            return json.loads(out.stdout or "null")
        error = " ".join(out.stderr.split())
        if "(NotFound)" in error:
            return None
        raise ApiError(error or f"kubectl get --raw {path}: exit status {out.returncode}")

    def can_i(self, verb: str, resource: str, namespace: str, user: str) -> bool | None:
        """Whether ``user`` may; None when kubectl cannot say (e.g. no right to impersonate)."""
        out = self._kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}")
        words = out.stdout.split()
        return {"yes": True, "no": False}.get(words[0]) if words else None

    def healthz(self, host: str, token: str | None = None) -> Any:
        """KFP's ``/apis/v2beta1/healthz`` (``tag_name``, ``multi_user``; the kfp client drops ``tag_name``)."""
        url = host.rstrip("/") + "/apis/v2beta1/healthz"
        if not url.startswith(("http://", "https://")):
            raise ApiError(f"{host}: expected an http(s):// URL")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
                return json.loads(response.read() or b"{}")
        except (OSError, ValueError) as e:  # URLError is an OSError
            raise ApiError(f"GET {url}: {e}") from None


def diagnose(settings: ClusterConfig, api: Api, *, s3_secret: str = "inkbooth-s3", kfp_host: str | None = None,
             token: str | None = None, check_bucket: bool = False) -> list[Finding]:
    """Every check against the cluster ``api`` reads, in order; a FAIL means the first run would fail."""
    findings = ClusterDoctor(settings, api, s3_secret, kfp_host, token).run()
    if check_bucket:
        findings.append(head_bucket(settings))
    return findings + registry_findings(settings)


def _in_cluster_name(uri: str) -> bool:
    host = (urllib.parse.urlsplit(uri).hostname or "").lower()
    return host.endswith((".svc", ".svc.cluster.local")) or ("." not in host and host != "localhost")


def registry_findings(settings: ClusterConfig, check: Any = None) -> list[Finding]:
    """One finding per model registry of the cluster file: does it answer from here (``inkbooth.sinks.check``)?"""
    from inkbooth import sinks

    check = check or sinks.check
    findings = []
    for sink in settings.model_registries:
        name = f"registry {sink.label()}"
        try:
            said = check(sink)
        except sinks.SinkError as e:
            unresolved = any(w in str(e) for w in ("Name or service not known", "nodename nor servname",
                                                   "Temporary failure in name resolution", "getaddrinfo failed"))
            if unresolved and _in_cluster_name(sink.uri):
                findings.append(Finding(name, "warn", f"{sink.uri} is a cluster-internal name, not resolvable "
                                        "from here; the register steps reach it from inside the cluster",
                                        f"to check it from here: kubectl port-forward to its service, then "
                                        f"inkbooth doctor with a cluster file whose {sink.type} uri is "
                                        "http://127.0.0.1:PORT"))
                continue
            fix = {"mlflow": "check the uri (the MLflow tracking server) and MLFLOW_TRACKING_TOKEN or token_env; "
                             "pip install 'inkbooth[mlflow]' for the client",
                   "kubeflow": "check the uri (the Model Registry REST service, scheme://host:port) and the token "
                               "(token_env); pip install 'inkbooth[model-registry]' for the client"}[sink.type]
            findings.append(Finding(name, "FAIL", f"{sink.uri}: {e}", fix))
            continue
        findings.append(Finding(name, "ok", f"{sink.uri}: {said}"))
    return findings


def render(findings: list[Finding]) -> str:
    """The findings as lines, and a count."""
    count = {s: sum(f.status == s for f in findings) for s in ("FAIL", "warn", "ok")}
    return "\n".join([*(f.line() for f in findings),
                      f"inkbooth doctor: {count['FAIL']} FAIL, {count['warn']} warn, {count['ok']} ok"])


@contextlib.contextmanager
def _store_env(env: dict[str, str]) -> Iterator[None]:
    """The storage settings as the environment, over whatever this shell sets (its credentials stay)."""
    keys = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION",
            "AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION", "INKBOOTH_S3_ADDRESSING_STYLE")
    saved = {k: os.environ.pop(k, None) for k in keys}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def head_bucket(settings: ClusterConfig) -> Finding:
    """head_bucket on the pipeline root's bucket from here: the storage settings, the local credentials."""
    from inkbooth import storage

    name, env = bucket(settings), settings.storage.env(settings.s3_endpoint())
    with _store_env(env):
        try:
            storage.s3_client().head_bucket(Bucket=name)
        except Exception as e:  # noqa: BLE001 - every failure is a finding naming its code
            code = str(((getattr(e, "response", None) or {}).get("Error") or {}).get("Code") or "")
            said = code or f"{type(e).__name__}: {storage.redact(' '.join(str(e).split()))[:200]}"
            create = f"create it (aws s3 mb s3://{name}) or fix storage.pipeline_root"
            region = "the bucket is in another region: set storage.region to it"
            fix = {"404": create, "NoSuchBucket": create, "301": region, "PermanentRedirect": region,
                   "403": "the local credentials may not list it: check the bucket policy (k8s/iam) and the keys",
                   "AccessDenied": "the local credentials may not list it: check the bucket policy (k8s/iam)"}
            return Finding("bucket", "FAIL", f"head_bucket s3://{name}: {said}",
                           fix.get(code, "check storage.endpoint and the local credentials (AWS_PROFILE or keys)"))
    return Finding("bucket", "ok", f"s3://{name} answers head_bucket with the local credentials")
