"""``inkbooth doctor`` against recorded clusters: each problem of issue 17 it must flag, and a healthy install.

A scenario is a folder under ``tests/data/doctor/``: the API server's answers, one JSON file per path
(``/api/v1/namespaces/kubeflow`` -> ``api/v1/namespaces/kubeflow.json``, a query after ``@``), shaped
like the real ones; KFP's healthz (``healthz.json``); what ``kubectl auth can-i`` says (``can-i.json``,
keyed by its arguments); and the cluster file it runs with (``cluster.yaml``). A scenario names only
what differs from the ones it is laid over (``RecordedApi("gcs", "healthy")``); a path no layer has is
a 404.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest

from inkbooth import cli, cluster, doctor

DATA = Path(__file__).parent / "data" / "doctor"
HOST = "https://kfp.example.com/pipeline"


class RecordedApi:
    """``doctor.Api`` with recorded answers, the first layer that has one winning."""

    def __init__(self, *scenarios: str):
        self.layers = [DATA / s for s in scenarios]
        self.asked: list[str] = []

    def _file(self, name: str) -> Path | None:
        return next((layer / name for layer in self.layers if (layer / name).is_file()), None)

    def get(self, path: str):
        self.asked.append(path)
        found = self._file(unquote(path.lstrip("/").replace("?", "@")) + ".json")
        return json.loads(found.read_text()) if found else None

    def can_i(self, verb: str, resource: str, namespace: str, user: str):
        answers: dict[str, str] = {}
        for layer in reversed(self.layers):
            if (layer / "can-i.json").is_file():
                answers.update(json.loads((layer / "can-i.json").read_text()))
        return {"yes": True, "no": False}.get(answers.get(f"{verb} {resource} -n {namespace} --as={user}", ""))

    def healthz(self, host: str, token: str | None = None):
        found = self._file("healthz.json")
        if not found:
            raise doctor.ApiError(f"GET {host}/apis/v2beta1/healthz: connection refused")
        return json.loads(found.read_text())


def settings_of(*scenarios: str) -> cluster.ClusterConfig:
    return cluster.load(str(RecordedApi(*scenarios)._file("cluster.yaml")))


def run(*scenarios: str, **kw) -> list[doctor.Finding]:
    kw.setdefault("kfp_host", HOST)
    return doctor.diagnose(settings_of(*scenarios), RecordedApi(*scenarios), **kw)


def by_check(findings: list[doctor.Finding], check: str) -> list[doctor.Finding]:
    found = [f for f in findings if f.check == check]
    assert found, f"no {check} finding in:\n{doctor.render(findings)}"
    return found


def one(findings: list[doctor.Finding], check: str) -> doctor.Finding:
    (found,) = by_check(findings, check)
    return found


def problems(findings: list[doctor.Finding]) -> list[str]:
    return [f.line() for f in findings if f.status != "ok"]


def test_a_healthy_standalone_eks_install_is_all_ok():
    findings = run("healthy")
    assert problems(findings) == []
    checks = {f.check for f in findings}
    assert {"kubernetes", "kfp-version", "kfp-mode", "namespace", "launcher-root", "launcher", "launcher-store",
            "credentials", "checksums", "runner-rights", "pod-security", "ui-store", "gpu-nodes",
            "gpu-driver"} <= checks
    assert "KFP 2.17.0" in one(findings, "kfp-version").message
    assert "eks.amazonaws.com/role-arn" in one(findings, "credentials").message
    assert "R580+" in one(findings, "gpu-driver").message
    assert all(not f.fix for f in findings)
    assert doctor.render(findings).endswith("0 FAIL, 0 warn, 14 ok")


def test_without_a_host_it_asks_healthz_through_the_api_servers_service_proxy():
    api = RecordedApi("healthy")
    findings = doctor.diagnose(settings_of("healthy"), api)
    assert one(findings, "kfp-version").status == "ok"
    assert "/api/v1/namespaces/kubeflow/services/ml-pipeline:8888/proxy/apis/v2beta1/healthz" in api.asked
    # ml-pipeline was found by a cluster-wide list, not by guessing namespaces
    assert "/apis/apps/v1/deployments?fieldSelector=metadata.name%3Dml-pipeline" in api.asked


def test_1_standalone_runs_execute_in_the_api_servers_namespace_not_the_files():
    f = one(run("wrong-namespace", "healthy"), "namespace")
    assert f.status == "FAIL"
    assert "runs every workflow in kubeflow" in f.message and "kfp.namespace is inkbooth" in f.message
    assert "set kfp.namespace: kubeflow" in f.fix


def test_1_multi_user_runs_need_a_profile_namespace():
    settings = settings_of("multi-user", "healthy")
    ok = doctor.diagnose(settings, RecordedApi("multi-user", "healthy"), kfp_host=HOST)
    assert one(ok, "namespace").status == "ok"
    wrong = dataclasses.replace(settings, kfp=dataclasses.replace(settings.kfp, namespace="kubeflow"))
    f = one(doctor.diagnose(wrong, RecordedApi("multi-user", "healthy"), kfp_host=HOST), "namespace")
    assert f.status == "FAIL" and "not a Kubeflow profile namespace" in f.message
    assert "kubectl get profiles" in f.fix


def test_2_an_older_server_is_compiled_for_and_what_is_left_out_is_named():
    f = one(run("backend-older", "healthy"), "kfp-version")
    assert f.status == "warn"
    assert "KFP 2.16.1" in f.message and "compiles for 2.16" in f.message
    assert backends_what("pipeline_config") in f.message
    assert "set kfp.backend: 2.16" in f.fix


def backends_what(feature: str) -> str:
    from inkbooth import backends

    return backends.FEATURES[feature].what


def test_2_a_server_older_than_2_5_fails():
    f = one(run("backend-too-old", "healthy"), "kfp-version")
    assert f.status == "FAIL" and "older than 2.5" in f.message
    assert "upgrade the KFP backend to 2.5 or newer" in f.fix


def test_2_a_mode_other_than_the_files_fails():
    findings = run("mode-mismatch", "healthy")
    f = one(findings, "kfp-mode")
    assert f.status == "FAIL" and "runs multi-user KFP" in f.message and "kfp.mode: standalone" in f.message
    assert "set kfp.mode: multi-user" in f.fix


def test_2_an_unreachable_host_fails_with_what_to_pass():
    findings = doctor.diagnose(settings_of("healthy"), RecordedApi("wrong-namespace"), kfp_host=HOST)
    f = one(findings, "kfp-version")
    assert f.status == "FAIL" and "--host" in f.fix


def test_4_a_launcher_signing_for_another_region_fails():
    findings = run("region", "healthy")
    f = one(findings, "launcher-region")
    assert f.status == "FAIL"
    assert "signs for region eu-central-1" in f.message and "steps for us-east-1" in f.message
    assert "region: us-east-1 in providers.s3.default" in f.fix
    assert one(findings, "credentials").status == "ok"  # the Secret itself is fine
    assert one(findings, "runner-rights").status == "ok"


def test_4_no_region_anywhere_for_a_non_aws_store_fails():
    f = one(run("region-missing", "region", "healthy"), "launcher-region")
    assert f.status == "FAIL" and "A region must be set" in f.message
    assert "storage.region: us-east-1" in f.fix


def test_4_a_region_the_secret_carries_is_used_but_never_shown():
    api = RecordedApi("region-missing", "region", "healthy")
    answer = api.get("/api/v1/namespaces/kubeflow/secrets/inkbooth-s3")
    answer["data"]["AWS_DEFAULT_REGION"] = base64.b64encode(b"zz-secret-region-1").decode()
    api.get = lambda path, real=api.get: answer if path.endswith("/secrets/inkbooth-s3") else real(path)
    findings = doctor.diagnose(settings_of("region-missing", "region", "healthy"), api, kfp_host=HOST)
    f = one(findings, "launcher-region")
    assert f.status == "warn" and "the Secret's AWS_DEFAULT_REGION" in f.message
    assert "zz-secret-region-1" not in doctor.render(findings)


def test_5_gcs_with_boto3s_default_checksums_fails():
    findings = run("gcs", "healthy")
    f = one(findings, "checksums")
    assert f.status == "FAIL" and "GCS" in f.message
    assert f.fix == "set storage.checksums: when_required in the cluster file"
    assert one(findings, "launcher-store").status == "ok"  # region auto, path style: the launcher agrees


def test_5_the_secrets_checksum_setting_counts_where_the_backend_passes_it_on():
    f = one(run("gcs-secret-checksums", "gcs", "healthy"), "checksums")
    assert f.status == "ok" and "AWS_REQUEST_CHECKSUM_CALCULATION" in f.message
    # KFP 2.14 has no optional Secret env: the key never reaches the steps
    settings = settings_of("gcs", "healthy")
    old = dataclasses.replace(settings, kfp=dataclasses.replace(settings.kfp, backend="2.14"))
    api = RecordedApi("gcs-secret-checksums", "backend-older", "gcs", "healthy")
    api.healthz = lambda host, token=None: {"tag_name": "2.14.4", "multi_user": False}
    f = one(doctor.diagnose(old, api, kfp_host=HOST), "checksums")
    assert f.status == "FAIL" and "does not reach the steps on KFP 2.14" in f.message


def test_6_a_profile_as_the_controller_made_it_fails_with_the_fixes():
    findings = run("profile-defaults", "multi-user", "healthy")
    launcher = one(findings, "launcher")
    assert launcher.status == "FAIL" and "no providers (as KFP's profile controller creates it)" in launcher.message
    assert "inkbooth manifests --cluster FILE --out DIR" in launcher.fix and "OnDelete" in launcher.fix
    root = one(findings, "launcher-root")
    assert root.status == "warn" and "minio://mlpipeline/private-artifacts/team-ml" in root.message
    security = one(findings, "pod-security")
    assert security.status == "FAIL" and "KFP 2.15 cannot set a pod securityContext" in security.message
    assert "pod-security.kubernetes.io/enforce=baseline" in security.fix
    artifacts = one(findings, "ui-artifact-server")
    assert artifacts.status == "warn" and "runAsNonRoot" in artifacts.message
    assert "ml-pipeline-ui-artifact.patch.yaml" in artifacts.fix


def test_9_a_2_17_ui_ignores_secret_backed_provider_info_in_another_namespace():
    findings = run("multi-user", "healthy")
    reports = one(findings, "ui-reports")
    assert reports.status == "warn"
    assert "2.17.0 (namespace kubeflow) ignores Secret-backed provider info" in reports.message
    assert "team-ml" in reports.message
    for fix in ("ml-pipeline-ui.patch.yaml", "ARTIFACTS_PROXY_ENABLED", "inkbooth report RUN_OUTPUT"):
        assert fix in reports.fix
    # and the UI's own settings would not reach the in-cluster store (a port its env cannot say)
    store = one(findings, "ui-store")
    assert store.status == "warn" and "inkbooth-store.team-ml.svc.cluster.local:8333" in store.message
    assert "takes no port" in store.fix
    assert [f.check for f in findings if f.status == "FAIL"] == []


def test_9_with_the_per_namespace_artifact_server_the_ui_reads_through_it():
    findings = run("multi-user-proxy", "multi-user", "healthy")
    assert one(findings, "ui-reports").status == "ok"
    assert not [f for f in findings if f.check in ("ui-store", "ui-artifact-server")]


def test_10_every_gpu_node_on_an_old_driver_fails():
    f = one(run("gpu-old-driver", "healthy"), "gpu-driver")
    assert f.status == "FAIL" and "(R550)" in f.message and "CUDA 13" in f.message and "R580+" in f.message
    assert "R580 or newer" in f.fix


def test_10_some_old_and_some_unlabelled_gpu_nodes_warn():
    found = by_check(run("gpu-mixed", "healthy"), "gpu-driver")
    assert [f.status for f in found] == ["warn", "warn"]
    old, unlabelled = found
    assert "ip-10-0-40-8.eu-west-1.compute.internal (R535)" in old.message and "40-7" not in old.message
    assert "node_selector" in old.fix
    assert "nvidia.com/cuda.driver-version.full" in unlabelled.message and "40-9" in unlabelled.message
    assert "GPU Feature Discovery" in unlabelled.fix


def test_10_no_gpu_node_fails_unless_an_autoscaler_can_add_one():
    f = one(run("gpu-none", "healthy"), "gpu-nodes")
    assert f.status == "FAIL" and "prior, train, evaluate_dreambooth, sample" in f.message and "no autoscaler" in f.message
    assert "gpus: 0" in f.fix
    f = one(run("gpu-none-karpenter", "gpu-none", "healthy"), "gpu-nodes")
    assert f.status == "warn" and "Karpenter NodePools" in f.message


def test_secret_values_never_reach_the_output(capsys, monkeypatch):
    values = []
    for path in DATA.rglob("secrets/*.json"):
        for encoded in json.loads(path.read_text())["data"].values():
            values += [encoded, base64.b64decode(encoded).decode()]
    assert len(values) >= 12
    out = []
    for chain in (("region", "healthy"), ("gcs", "healthy"), ("gcs-secret-checksums", "gcs", "healthy"),
                  ("multi-user", "healthy"), ("profile-defaults", "multi-user", "healthy")):
        out.append(doctor.render(run(*chain)))
        monkeypatch.setattr(doctor, "Api", lambda context=None, chain=chain: RecordedApi(*chain))
        cli.main(["doctor", "--cluster", str(RecordedApi(*chain)._file("cluster.yaml")), "--host", HOST])
    out.append(capsys.readouterr().out)
    text = "\n".join(out)
    assert "AWS_ACCESS_KEY_ID" in text  # key names are reported...
    assert [v for v in values if v in text and v not in ("when_required",)] == []  # ...values never


def test_a_secret_missing_a_key_fails_naming_the_keys_only():
    api = RecordedApi("region", "healthy")
    answer = api.get("/api/v1/namespaces/kubeflow/secrets/inkbooth-s3")
    del answer["data"]["AWS_SECRET_ACCESS_KEY"]
    api.get = lambda path, real=api.get: answer if path.endswith("/secrets/inkbooth-s3") else real(path)
    f = one(doctor.diagnose(settings_of("region", "healthy"), api, kfp_host=HOST), "credentials")
    assert f.status == "FAIL" and "lacks AWS_SECRET_ACCESS_KEY (it has AWS_ACCESS_KEY_ID)" in f.message
    patch = json.dumps({"stringData": {"AWS_SECRET_ACCESS_KEY": "..."}})
    assert f.fix == f"kubectl -n kubeflow patch secret inkbooth-s3 --type merge -p '{patch}'"


def test_cli_doctor_prints_a_line_per_check_and_exits_1_on_a_failure(monkeypatch, capsys):
    chain = ("profile-defaults", "multi-user", "healthy")
    monkeypatch.setattr(doctor, "Api", lambda context=None: RecordedApi(*chain))
    code = cli.main(["doctor", "--cluster", str(DATA / "profile-defaults" / "cluster.yaml"), "--host", HOST])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert any(line.startswith("FAIL launcher: kfp-launcher in team-ml has no providers") for line in lines)
    assert any(line.startswith("FAIL pod-security: ") and " -- fix: kubectl label namespace team-ml" in line
               for line in lines)
    assert any(line.startswith("ok   kfp-version: KFP 2.15.0") for line in lines)
    assert lines[-1].startswith("inkbooth doctor: 2 FAIL, ")
    monkeypatch.setattr(doctor, "Api", lambda context=None: RecordedApi("healthy"))
    assert cli.main(["doctor", "--cluster", str(DATA / "healthy" / "cluster.yaml"), "--host", HOST]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "inkbooth doctor: 0 FAIL, 0 warn, 14 ok"


def test_cli_doctor_wants_a_cluster_file():
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["doctor"])
    assert exit_.value.code == 2


def test_an_unreachable_cluster_is_one_failure_not_a_traceback():
    class Down(RecordedApi):
        def get(self, path):
            raise doctor.ApiError("Unable to connect to the server: dial tcp 10.0.0.1:443: i/o timeout")

    findings = doctor.diagnose(settings_of("healthy"), Down("healthy"), kfp_host=HOST)
    assert [(f.check, f.status) for f in findings] == [("kubernetes", "FAIL"), ("kfp-mode", "ok"),
                                                       ("kfp-version", "ok")]
    assert "--context" in findings[0].fix


def test_a_refused_read_is_a_warning_of_that_check():
    class Forbidden(RecordedApi):
        def get(self, path):
            if "/configmaps/kfp-launcher" in path:
                raise doctor.ApiError('Error from server (Forbidden): configmaps "kfp-launcher" is forbidden')
            return super().get(path)

    findings = doctor.diagnose(settings_of("healthy"), Forbidden("healthy"), kfp_host=HOST)
    f = one(findings, "launcher")
    assert f.status == "warn" and "Forbidden" in f.message
    assert one(findings, "gpu-driver").status == "ok"  # the other checks still ran


def test_doctor_loads_neither_torch_nor_boto3():
    code = ("import sys, inkbooth.doctor; "
            "print([m for m in ('torch', 'transformers', 'numpy', 'boto3') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


# --- the transport ---------------------------------------------------------------------------------------

def test_api_runs_kubectl_with_a_timeout_and_reads_its_answers(monkeypatch):
    calls = []

    def fake_run(cmd, **kw):
        calls.append((cmd, kw))
        if cmd[-1] == "/missing":
            return subprocess.CompletedProcess(cmd, 1, "", 'Error from server (NotFound): the server could not find '
                                                          "the requested resource\n")
        if cmd[-1] == "/forbidden":
            return subprocess.CompletedProcess(cmd, 1, "", 'Error from server (Forbidden): nodes is forbidden: '
                                                          'User "dev" cannot list resource "nodes"\n')
        if "can-i" in cmd:
            answer = {"configmaps/kfp-launcher": ("yes\n", 0), "secrets/x": ("no\n", 1)}.get(cmd[6], ("", 1))
            return subprocess.CompletedProcess(cmd, answer[1], answer[0], "")
        return subprocess.CompletedProcess(cmd, 0, '{"gitVersion": "v1.32.3"}', "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    api = doctor.Api(context="prod", timeout=7)
    assert api.get("/version") == {"gitVersion": "v1.32.3"}
    assert calls[0][0] == ["kubectl", "--context", "prod", "get", "--raw", "/version"]
    assert all(kw["timeout"] == 7 for _, kw in calls)
    assert api.get("/missing") is None
    with pytest.raises(doctor.ApiError, match="Forbidden"):
        api.get("/forbidden")
    user = "system:serviceaccount:kubeflow:pipeline-runner"
    assert api.can_i("get", "configmaps/kfp-launcher", "kubeflow", user) is True
    assert calls[-1][0] == ["kubectl", "--context", "prod", "auth", "can-i", "get", "configmaps/kfp-launcher",
                            "-n", "kubeflow", f"--as={user}"]
    assert api.can_i("get", "secrets/x", "kubeflow", user) is False
    assert api.can_i("create", "workflowtaskresults.argoproj.io", "kubeflow", user) is None


def test_api_says_when_kubectl_is_missing_or_silent(monkeypatch):
    def missing(cmd, **kw):
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(subprocess, "run", missing)
    with pytest.raises(doctor.ApiError, match="kubectl not found"):
        doctor.Api().get("/version")

    def silent(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(subprocess, "run", silent)
    with pytest.raises(doctor.ApiError, match="no answer in 20s"):
        doctor.Api().get("/version")


def test_api_healthz_is_a_plain_get_with_the_bearer_token():
    seen = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the base class's name
            seen["path"], seen["auth"] = self.path, self.headers.get("Authorization")
            body = json.dumps({"commit_sha": "abc", "tag_name": "2.16.1", "multi_user": False}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        answer = doctor.Api(timeout=5).healthz(f"http://127.0.0.1:{server.server_port}/pipeline/", "tok")
    finally:
        server.shutdown()
    assert answer["tag_name"] == "2.16.1"
    assert seen == {"path": "/pipeline/apis/v2beta1/healthz", "auth": "Bearer tok"}
    with pytest.raises(doctor.ApiError, match="http"):
        doctor.Api().healthz("kfp.example.com")


def test_check_bucket_uses_the_storage_settings_and_reports_the_error_code(monkeypatch):
    from botocore.exceptions import ClientError

    from inkbooth import storage

    seen = {}

    class Client:
        def head_bucket(self, Bucket):  # noqa: N803 - boto3's name
            import os

            seen.update(bucket=Bucket, endpoint=os.environ.get("AWS_ENDPOINT_URL_S3"),
                        region=os.environ.get("AWS_DEFAULT_REGION"))
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadBucket")

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://elsewhere:9000")
    monkeypatch.setattr(storage, "s3_client", lambda: Client())
    findings = doctor.diagnose(settings_of("region", "healthy"), RecordedApi("region", "healthy"), kfp_host=HOST,
                               check_bucket=True)
    f = findings[-1]
    assert (f.check, f.status) == ("bucket", "FAIL") and f.message == "head_bucket s3://inkbooth-pipelines: 403"
    assert "bucket policy" in f.fix
    assert seen == {"bucket": "inkbooth-pipelines", "endpoint": "http://minio.storage.svc.cluster.local:9000",
                    "region": "us-east-1"}
    import os

    assert os.environ["AWS_ENDPOINT_URL_S3"] == "http://elsewhere:9000"  # put back

    from botocore.exceptions import EndpointConnectionError

    class Unreachable:
        def head_bucket(self, Bucket):  # noqa: N803 - boto3's name
            raise EndpointConnectionError(endpoint_url="http://minio.storage.svc.cluster.local:9000/inkbooth-pipelines")

    monkeypatch.setattr(storage, "s3_client", lambda: Unreachable())
    f = doctor.head_bucket(settings_of("region", "healthy"))
    assert f.status == "FAIL" and f.message.startswith("head_bucket s3://inkbooth-pipelines: EndpointConnectionError: ")
    assert "storage.endpoint" in f.fix
