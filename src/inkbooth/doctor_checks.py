"""The checks of ``inkbooth doctor`` on KFP and the store (``inkbooth.doctor_cluster`` adds the cluster's).

``Doctor`` reads the cluster through any object with ``get(path)`` (the API server's JSON for a path,
None for a 404), ``can_i(verb, resource, namespace, user)`` and ``healthz(host, token)``, and adds one
``Finding`` per check. The facts about KFP are from its source at each tag (kubeflow/pipelines):

* standalone KFP runs every workflow in the API server's ``POD_NAMESPACE`` (resource_manager.go,
  ``CreateRun``); multi-user KFP in the experiment's profile namespace; the default runner account is
  ``pipeline-runner`` (common/const.go), ``default-editor`` in multi-user installs (its params.env);
* the launcher reads ``kfp-launcher`` from the run's namespace; ``providers.s3`` has ``default`` and
  ``Overrides`` (bucketName...) with endpoint, region, disableSSL, forcePathStyle (default true) and
  credentials (backend/src/v2/config/s3.go); the profile controller's ConfigMap has no providers
  (pipelines-profile-controller/sync.py).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.parse
from collections.abc import Callable
from typing import Any, Literal

from inkbooth import backends
from inkbooth.cluster import S3_KEYS, ClusterConfig

IDENTITY_ANNOTATIONS = ("eks.amazonaws.com/role-arn", "iam.gke.io/gcp-service-account",
                        "azure.workload.identity/client-id")
KFP_RUNNER = "pipeline-runner"
PROFILE_LABEL = ("app.kubernetes.io/part-of", "kubeflow-profile")  # set by Kubeflow's profile controller
GCS_HOST = "storage.googleapis.com"
APPLY = "inkbooth manifests --cluster FILE --out DIR, then kubectl apply -k DIR"  # the install, in fixes
Status = Literal["ok", "warn", "FAIL"]


@dataclasses.dataclass
class Finding:
    check: str
    status: Status
    message: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4} {self.check}: {self.message}" + (f" -- fix: {self.fix}" if self.fix else "")


class ApiError(RuntimeError):
    """A call to the cluster or to KFP failed (a plain 404 is an answer, not an error)."""


def field(obj: Any, key: str) -> Any:
    """A field of the launcher's providers as Go's JSON decoding finds it (names match case-insensitively)."""
    if isinstance(obj, dict):
        return next((v for k, v in obj.items() if str(k).lower() == key.lower()), None)
    return None


def truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() == "true"


def where(endpoint: str, disable_ssl: bool = False) -> tuple[str, str]:
    """(scheme, host[:port]) of an S3 endpoint; AWS S3 (none, or an amazonaws.com host) is ("https", "aws")."""
    if not endpoint:
        return "https", "aws"
    if "://" not in endpoint:
        endpoint = ("http://" if disable_ssl else "https://") + endpoint
    url = urllib.parse.urlparse(endpoint)
    host = (url.hostname or "").lower()
    if host == "amazonaws.com" or host.endswith(".amazonaws.com"):
        return "https", "aws"
    if url.port and (url.scheme, url.port) not in (("http", 80), ("https", 443)):
        host += f":{url.port}"
    return url.scheme, host


def shown(place: tuple[str, str]) -> str:
    return "AWS S3" if place[1] == "aws" else f"{place[0]}://{place[1]}"


def bucket(settings: ClusterConfig) -> str:
    return urllib.parse.urlparse(settings.storage.pipeline_root).netloc


def secret_data(secret: Any) -> dict[str, str]:
    """A Secret's data, decoded (callers report key names only, never values)."""
    out = {}
    for key, value in ((secret or {}).get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value or "").decode("utf-8", "replace")
        except ValueError:
            out[key] = ""
    return out


def container_of(deployment: dict, name: str | None) -> dict:
    containers = deployment["spec"]["template"]["spec"].get("containers") or [{}]
    return next((c for c in containers if c.get("name") == name), containers[0])


class Doctor:
    """One pass of the checks over a cluster; ``run`` returns the findings in order."""

    def __init__(self, settings: ClusterConfig, api: Any, s3_secret: str, kfp_host: str | None, token: str | None):
        self.s, self.api, self.secret_name, self.host, self.token = settings, api, s3_secret, kfp_host, token
        self.ns = settings.kfp.namespace
        self.system_ns = getattr(settings.kfp, "system_namespace", "kubeflow")
        self.version: str | None = None  # the server's tag_name
        self.contract = backends.name(settings.kfp.backend)  # what inkbooth submit compiles for
        self.multi_user = settings.kfp.mode == "multi-user"
        self.secret: dict[str, str] = {}
        self.provider: dict | None = None
        self.findings: list[Finding] = []
        self._answers: dict[str, Any] = {}

    def add(self, check: str, status: Status, message: str, fix: str = "") -> None:
        self.findings.append(Finding(check, status, message, fix if status != "ok" else ""))

    def get(self, path: str) -> Any:
        if path not in self._answers:
            self._answers[path] = self.api.get(path)
        return self._answers[path]

    def run(self) -> list[Finding]:
        try:
            version = self.get("/version") or {}
        except ApiError as e:
            self.add("kubernetes", "FAIL", f"cannot read the cluster: {e}",
                     "point kubectl at the cluster (kubectl config use-context NAME, or --context NAME)")
            if self.host:
                self.kfp_version()
            return self.findings
        self.add("kubernetes", "ok", f"Kubernetes {version.get('gitVersion', '(version unknown)')}")
        for check in self.checks():
            try:
                check()
            except ApiError as e:
                self.add(check.__name__.replace("_", "-"), "warn", f"could not read what this check needs: {e}",
                         "run doctor as a user who may read it (e.g. cluster-admin's view), or pass --context")
        return self.findings

    def checks(self) -> list[Callable[[], None]]:
        return [self.kfp_version, self.runs_namespace, self.credentials, self.launcher, self.checksums]

    def optional(self, path: str) -> Any:
        """``get``, with a refusal taken as absence (for things that may not be installed at all)."""
        try:
            return self.get(path)
        except ApiError:
            return None

    # --- helpers ----------------------------------------------------------------------------------

    def deployment(self, name: str) -> dict | None:
        """A Deployment of KFP's by name: listed cluster-wide (the usual namespaces first), else looked up
        in the usual namespaces (kfp.namespace, KFP's own) where listing is not allowed."""
        usual = tuple(dict.fromkeys((self.ns, self.system_ns, "kubeflow")))
        try:
            items = (self.get(f"/apis/apps/v1/deployments?fieldSelector=metadata.name%3D{name}") or {})
            items = items.get("items") or []
        except ApiError:
            items = []
        if items:
            return sorted(items, key=lambda d: d["metadata"]["namespace"] not in usual)[0]
        for ns in usual:
            found = self.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
            if found:
                return found
        return None

    def env(self, deployment: dict, name: str, container: str | None = None) -> str | None:
        """A container's environment variable as the pod gets it (value, the pod's namespace, a ConfigMap key)."""
        c, ns = container_of(deployment, container), deployment["metadata"]["namespace"]

        def configmap(ref: dict) -> dict:
            try:
                return (self.get(f"/api/v1/namespaces/{ns}/configmaps/{ref.get('name')}") or {}).get("data") or {}
            except ApiError:
                return {}

        for entry in c.get("env") or []:
            if entry.get("name") == name:
                source = entry.get("valueFrom") or {}
                if "value" in entry or not source:
                    return entry.get("value", "")
                if (source.get("fieldRef") or {}).get("fieldPath") == "metadata.namespace":
                    return ns
                ref = source.get("configMapKeyRef")
                return configmap(ref).get(ref.get("key")) if ref else None
        for source in c.get("envFrom") or []:
            prefix, ref = source.get("prefix", ""), source.get("configMapRef")
            if ref and name.startswith(prefix) and name[len(prefix):] in configmap(ref):
                return configmap(ref)[name[len(prefix):]]
        return None

    # --- the checks ---------------------------------------------------------------------------------

    def kfp_version(self) -> None:
        """(2) The backend's version and mode against kfp.backend and kfp.mode."""
        if self.host:
            place = self.host
            try:
                answer = self.api.healthz(self.host, self.token)
            except ApiError as e:
                return self.add("kfp-version", "FAIL", f"the KFP API did not answer: {e}",
                                "check --host (the KFP endpoint, e.g. https://kubeflow.example.com/pipeline) and "
                                "--token or INKBOOTH_KFP_TOKEN")
        else:
            api_server = self.deployment("ml-pipeline")
            ns = api_server["metadata"]["namespace"] if api_server else self.system_ns
            place = f"service ml-pipeline in {ns}"
            try:
                answer = self.get(f"/api/v1/namespaces/{ns}/services/ml-pipeline:8888/proxy/apis/v2beta1/healthz")
            except ApiError:
                answer = None
            if not isinstance(answer, dict):
                return self.add("kfp-version", "warn", f"could not ask {place} its version through the API server's "
                                "service proxy; version and mode are not checked",
                                "pass --host KFP_URL (and --token)")
        if not isinstance(answer, dict):
            return self.add("kfp-version", "FAIL", f"{place} answered healthz with no JSON object: not a KFP API",
                            "check --host (the KFP endpoint, e.g. https://kubeflow.example.com/pipeline)")
        tag, mode = str(answer.get("tag_name") or "unknown"), "multi-user" if answer.get("multi_user") else "standalone"
        if mode != self.s.kfp.mode:
            self.add("kfp-mode", "FAIL", f"{place} runs {mode} KFP; the cluster file says kfp.mode: {self.s.kfp.mode}",
                     f"set kfp.mode: {mode} and kfp.namespace: " +
                     ("your profile namespace" if mode == "multi-user" else "the API server's namespace"))
        else:
            self.add("kfp-mode", "ok", f"{mode}, as kfp.mode says")
        self.multi_user = mode == "multi-user"
        try:
            backends.parse(tag)
        except ValueError:
            return self.add("kfp-version", "warn", f"{place} reports version {tag!r}: inkbooth submit compiles for "
                            f"kfp.backend {self.s.kfp.backend}", "check the API server image (its TAG_NAME)")
        try:
            contract = backends.name(tag)
        except ValueError as e:
            return self.add("kfp-version", "FAIL", str(e), "upgrade the KFP backend to 2.5 or newer (2.17 for every "
                            "feature inkbooth uses)")
        self.version, self.contract, wanted = tag, contract, backends.name(self.s.kfp.backend)
        if contract == wanted:
            return self.add("kfp-version", "ok", f"KFP {tag} at {place} (contract {contract}, as kfp.backend says)")
        left_out = backends.left_out(wanted, tag)
        self.add("kfp-version", "warn", f"{place} runs KFP {tag}; the cluster file says kfp.backend: "
                 f"{self.s.kfp.backend}: inkbooth submit compiles for {contract}, the server's contract"
                 + (f", leaving out: {'; '.join(left_out)}" if left_out else ""),
                 f"set kfp.backend: {contract} in the cluster file (and inkbooth compile --backend {contract} for "
                 "pipelines uploaded by hand)")

    def runs_namespace(self) -> None:
        """(1) Where runs execute: the API server's namespace (standalone) or a profile namespace."""
        if not self.multi_user:
            api_server = self.deployment("ml-pipeline")
            if not api_server:
                return self.add("namespace", "warn", "no ml-pipeline Deployment found, so where standalone runs "
                                "execute is not known", "run doctor against KFP's cluster (--context); "
                                "kubectl get deploy -A -l app=ml-pipeline")
            # POD_NAMESPACE, default kubeflow (apiserver/common/config.go); the manifests set the pod's own.
            runs = self.env(api_server, "POD_NAMESPACE", "ml-pipeline-api-server") or "kubeflow"
            if runs != self.ns:
                return self.add("namespace", "FAIL", f"standalone KFP runs every workflow in {runs} (the ml-pipeline "
                                f"API server's POD_NAMESPACE), whatever namespace a run asks for; kfp.namespace is "
                                f"{self.ns}, so the launcher settings, Secret and runner account there go unused",
                                f"set kfp.namespace: {runs} in the cluster file, then {APPLY} (it puts the runner "
                                "and the launcher settings there; the Secret goes there too)")
            return self.add("namespace", "ok", f"runs execute in {runs}, the API server's namespace, as kfp.namespace "
                            "says")
        namespace = self.get(f"/api/v1/namespaces/{self.ns}")
        if namespace is None:
            return self.add("namespace", "FAIL", f"namespace {self.ns} does not exist",
                            f"create a Kubeflow Profile named {self.ns}, or set kfp.namespace to your profile "
                            "namespace")
        meta = namespace.get("metadata") or {}
        marked = ((meta.get("labels") or {}).get(PROFILE_LABEL[0]) == PROFILE_LABEL[1]
                  or "owner" in (meta.get("annotations") or {}))
        if marked or self.optional(f"/apis/kubeflow.org/v1/profiles/{self.ns}"):
            return self.add("namespace", "ok", f"runs execute in profile namespace {self.ns}")
        self.add("namespace", "FAIL", f"{self.ns} is not a Kubeflow profile namespace (no {'='.join(PROFILE_LABEL)} "
                 "label, owner annotation or Profile): multi-user KFP runs only in profile namespaces",
                 "set kfp.namespace to your profile namespace (kubectl get profiles), or create a Profile for it")

    def launcher(self) -> None:
        """The kfp-launcher ConfigMap the runs see: its root, and its providers against storage."""
        import yaml

        cm = self.get(f"/api/v1/namespaces/{self.ns}/configmaps/kfp-launcher")
        if cm is None:
            return self.add("launcher", "FAIL", f"no kfp-launcher ConfigMap in {self.ns}: the launcher falls back "
                            "to minio://mlpipeline/v2/artifacts and the SDK's defaults",
                            f"{APPLY} (it puts kfp-launcher in kfp.namespace, {self.ns})")
        data, root = cm.get("data") or {}, self.s.storage.pipeline_root
        if data.get("defaultPipelineRoot") != root:
            self.add("launcher-root", "warn", f"defaultPipelineRoot is {data.get('defaultPipelineRoot') or '(unset)'}, "
                     f"storage.pipeline_root {root}: runs must pass a pipeline root, as inkbooth submit and schedule "
                     "do; runs started another way (the KFP UI) write elsewhere",
                     f"{APPLY} (it sets the root in a profile namespace)" if self.multi_user else
                     "nothing for inkbooth submit; for runs started elsewhere: kubectl -n "
                     f"{self.ns} patch configmap kfp-launcher --type merge -p "
                     f"'{json.dumps({'data': {'defaultPipelineRoot': root}})}'")
        else:
            self.add("launcher-root", "ok", f"defaultPipelineRoot is {root}")
        if not data.get("providers"):
            profile = " (as KFP's profile controller creates it)" if self.multi_user else ""
            keeps = "; the profile controller keeps the edit (it updates its ConfigMaps OnDelete)"
            return self.add("launcher", "FAIL" if self.multi_user else "warn",
                            f"kfp-launcher in {self.ns} has no providers{profile}: the launcher reaches the store "
                            "with the SDK's defaults (credentials and region from the pod, virtual-host addressing), "
                            "not storage's settings", f"add providers.s3: {APPLY}" + (keeps if self.multi_user else ""))
        try:
            providers = yaml.safe_load(data["providers"])
        except yaml.YAMLError as e:
            return self.add("launcher", "FAIL", f"providers in kfp-launcher is not YAML: {' '.join(str(e).split())}",
                            f"kubectl -n {self.ns} edit configmap kfp-launcher")
        s3, name = field(providers, "s3"), bucket(self.s)
        entry = next((o for o in field(s3, "Overrides") or [] if field(o, "bucketName") == name), None)
        which = f"providers.s3.Overrides[bucketName={name}]" if entry else "providers.s3.default"
        entry = entry or field(s3, "default")
        if not isinstance(entry, dict):
            return self.add("launcher", "FAIL", f"providers has no s3 default and no s3 override for bucket {name}",
                            "add providers.s3.default with endpoint, region, forcePathStyle and credentials "
                            f"({APPLY} writes it from storage)")
        self.provider = entry
        self.add("launcher", "ok", f"kfp-launcher in {self.ns} has {which}")
        self.store_agreement(entry, which)

    def store_agreement(self, entry: dict, which: str) -> None:
        """(4) The launcher's endpoint, region, addressing and credentials against storage."""
        steps = where(self.s.s3_endpoint())
        launcher = where(str(field(entry, "endpoint") or ""), truthy(field(entry, "disableSSL")))
        region, problems = str(field(entry, "region") or ""), 0
        # The steps' region: storage.region, else the Secret's optional AWS_DEFAULT_REGION (KFP 2.15+),
        # which is compared but never shown (only key names of a Secret are).
        wanted = self.s.storage.region or (self.secret.get("AWS_DEFAULT_REGION", "")
                                           if backends.honours(self.contract, "optional_secret_env") else "")
        said = self.s.storage.region or "the Secret's AWS_DEFAULT_REGION"
        if launcher != steps:
            problems += 1
            self.add("launcher-endpoint", "FAIL", f"the launcher reaches {shown(launcher)} ({which}), the steps "
                     f"{shown(steps)}: artifacts passed between steps would go to another store",
                     f"in {which} set endpoint: {'s3.amazonaws.com' if steps[1] == 'aws' else steps[1]} and "
                     f"disableSSL: {str(steps[0] == 'http').lower()}, or change storage.endpoint")
        if region and wanted and region != wanted:
            problems += 1
            self.add("launcher-region", "FAIL", f"the launcher signs for region {region} ({which}), the steps for "
                     f"{said}: requests signed for the wrong region are refused",
                     f"make them one: region: {said} in {which}, or storage.region: {region}")
        elif not region and steps[1] != "aws":
            problems += 1
            if wanted:
                self.add("launcher-region", "warn", f"no region in {which}: the launcher signs with the pod's "
                         f"AWS_DEFAULT_REGION ({said}), which only inkbooth's own steps carry",
                         f"set region: {said} in {which}")
            else:
                suggest = "auto" if steps[1] == GCS_HOST else "us-east-1"
                self.add("launcher-region", "FAIL", f"no region in {which} nor in storage.region for the non-AWS "
                         f"endpoint {shown(steps)}: the launcher's SDK (aws-sdk-go-v2) stops with 'A region must be "
                         "set when sending requests to S3'",
                         f"set storage.region: {suggest} (any value the store accepts) and region: {suggest} in "
                         f"{which} ({APPLY} writes it)")
        elif region and not wanted and region != "us-east-1":
            problems += 1
            self.add("launcher-region", "warn", f"the launcher signs for {region}, the steps for boto3's default "
                     "(us-east-1)", f"set storage.region: {region}")
        force = field(entry, "forcePathStyle")
        path_launcher = True if force is None else truthy(force)  # the launcher's default: path style
        style = self.s.storage.addressing_style
        path_steps = style == "path" or (style == "auto" and steps[1] != "aws")
        if steps[1] != "aws" and path_launcher != path_steps:
            problems += 1
            self.add("launcher-addressing", "warn", f"the launcher uses {'path' if path_launcher else 'virtual-host'} "
                     f"addressing ({which}), the steps {'path' if path_steps else 'virtual-host'}",
                     f"set forcePathStyle: {str(path_steps).lower()} in {which}, or storage.addressing_style")
        credentials = field(entry, "credentials") or {}
        from_env, ref = truthy(field(credentials, "fromEnv")), field(credentials, "secretRef") or {}
        if self.s.credentials == "workload-identity" and not from_env:
            problems += 1
            self.add("launcher-credentials", "FAIL", f"{which} reads keys from Secret {field(ref, 'secretName')}, but "
                     "credentials: workload-identity means there are none", f"set credentials: {{fromEnv: true}} in "
                     f"{which} ({APPLY} writes it)")
        elif self.s.credentials == "secret" and not from_env and field(ref, "secretName") != self.secret_name:
            problems += 1
            self.add("launcher-credentials", "warn", f"{which} reads keys from Secret {field(ref, 'secretName')}, the "
                     f"steps from {self.secret_name}", f"set secretRef.secretName: {self.secret_name} in {which}")
        if not problems:
            keys = "from the pod" if from_env else f"from Secret {field(ref, 'secretName')}"
            self.add("launcher-store", "ok", f"{shown(launcher)}, region {region or '(from the pod)'}, "
                     f"{'path' if path_launcher else 'virtual-host'} addressing, credentials {keys}: as storage says")

    def credentials(self) -> None:
        """The S3 Secret's keys (names only), or the runner's cloud identity."""
        if self.s.credentials == "secret":
            name, ns = self.secret_name, self.ns
            secret = self.get(f"/api/v1/namespaces/{ns}/secrets/{name}")
            create = (f"kubectl create secret generic {name} -n {ns} --from-literal=AWS_ACCESS_KEY_ID=... "
                      "--from-literal=AWS_SECRET_ACCESS_KEY=...")
            if secret is None:
                return self.add("credentials", "FAIL", f"no Secret {name} in {ns}: every step's AWS_* keys come "
                                "from it", create)
            self.secret = secret_data(secret)
            missing = [k for k in S3_KEYS if not self.secret.get(k)]
            has = ", ".join(sorted(self.secret)) or "no keys"
            if missing:
                patch = json.dumps({"stringData": {k: "..." for k in missing}})
                return self.add("credentials", "FAIL", f"Secret {name} in {ns} lacks {', '.join(missing)} (it has "
                                f"{has})", f"kubectl -n {ns} patch secret {name} --type merge -p '{patch}'")
            return self.add("credentials", "ok", f"Secret {name} in {ns} has {has}")
        account = self.s.service_account
        if not account:
            return self.add("credentials", "FAIL", "credentials: workload-identity without a service_account",
                            "set service_account: inkbooth-runner (bound to a cloud identity) in the cluster file")
        sa = self.get(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{account}")
        if sa is None:
            return self.add("credentials", "FAIL", f"no service account {account} in {self.ns}",
                            f"{APPLY} (with runner_annotations binding it to the cloud identity)")
        annotations = (sa.get("metadata") or {}).get("annotations") or {}
        bound = [k for k in IDENTITY_ANNOTATIONS if annotations.get(k)]
        if bound:
            return self.add("credentials", "ok", f"service account {account} carries "
                            f"{bound[0]}={annotations[bound[0]]}")
        self.add("credentials", "warn", f"service account {account} carries no identity annotation "
                 f"({', '.join(IDENTITY_ANNOTATIONS)}): keyless credentials then work only through EKS Pod Identity",
                 f"kubectl -n {self.ns} annotate serviceaccount {account} eks.amazonaws.com/role-arn=ROLE_ARN "
                 "(GKE: iam.gke.io/gcp-service-account, AKS: azure.workload.identity/client-id)")

    def checksums(self) -> None:
        """(5) GCS's S3 API refuses boto3's default CRC uploads: storage.checksums must be when_required."""
        if where(self.s.s3_endpoint())[1] != GCS_HOST or self.s.storage.checksums == "when_required":
            return self.add("checksums", "ok", f"storage.checksums: {self.s.storage.checksums}")
        in_secret = self.secret.get("AWS_REQUEST_CHECKSUM_CALCULATION", "").strip().lower() == "when_required"
        if in_secret and backends.honours(self.contract, "optional_secret_env"):
            return self.add("checksums", "ok", f"Secret {self.secret_name} sets AWS_REQUEST_CHECKSUM_CALCULATION")
        self.add("checksums", "FAIL", "the store is GCS, whose S3 API refuses boto3's default aws-chunked uploads with "
                 "CRC trailers, and storage.checksums is when_supported" +
                 (f" (the Secret's key does not reach the steps on KFP {self.contract})" if in_secret else ""),
                 "set storage.checksums: when_required in the cluster file")
