"""What the KFP UI shows of a run, read from the compiled IR: metrics, reports and an unbroken lineage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inkbooth import runs

# Component (as named in the IR) -> what it must output for the UI.
METRICS = {"ocr": {"export-trocr", "merge-ocr"}, "dreambooth": {"generate-prior", "train", "sample-model"},
           "ocr-train": {"finetune", "export-trocr", "evaluate"}}
REPORTS = {"ocr": {"export-trocr", "merge-ocr"}, "dreambooth": {"train", "sample-model"}, "ocr-train": {"export-trocr"}}
VISUAL = {"system.HTML", "system.Markdown"}
# The one string a stage takes from another on purpose: the model's fingerprint is the export's
# cache key (an artifact is keyed by its name, not its content; see inkbooth.cluster.CACHE_KEYS).
CACHE_KEY_PARAMETERS = {("export-trocr", "model_key")}


def load_ir(name):
    ir, *_ = yaml.safe_load_all(runs.packaged_yaml(name).read_text())
    return ir


def output_types(ir, component):
    artifacts = ir["components"][f"comp-{component}"].get("outputDefinitions", {}).get("artifacts", {})
    return {name: spec["artifactType"]["schemaTitle"] for name, spec in artifacts.items()}


def input_types(ir, component):
    artifacts = ir["components"][f"comp-{component}"].get("inputDefinitions", {}).get("artifacts", {})
    return {name: spec["artifactType"]["schemaTitle"] for name, spec in artifacts.items()}


def tasks(ir):
    """Every task of every DAG (root, loops, exit handlers): (DAG, task name, task spec)."""
    dags = [("root", ir["root"])] + [(k, v) for k, v in ir["components"].items() if "dag" in v]
    for dag_name, comp in dags:
        for task_name, task in comp["dag"]["tasks"].items():
            yield dag_name, task_name, task


@pytest.mark.parametrize("name", sorted(runs.PIPELINES))
def test_every_measuring_stage_has_metrics_and_a_report(name):
    ir = load_ir(name)
    for component in METRICS[name]:
        assert "system.Metrics" in output_types(ir, component).values(), f"{component}: no Metrics output"
    for component in REPORTS[name]:
        assert VISUAL & set(output_types(ir, component).values()), f"{component}: no HTML or Markdown output"


@pytest.mark.parametrize("name", sorted(runs.PIPELINES))
def test_no_stage_passes_a_result_as_a_string(name):
    ir = load_ir(name)
    for dag, task_name, task in tasks(ir):
        if "parameterIterator" in task:  # a ParallelFor's items: the shard plan, not a result
            continue
        component = task["componentRef"]["name"].removeprefix("comp-")
        for param, spec in task.get("inputs", {}).get("parameters", {}).items():
            if (component, param) in CACHE_KEY_PARAMETERS:
                continue
            assert "taskOutputParameter" not in spec, (
                f"{dag}/{task_name}.{param} takes {spec['taskOutputParameter']} as a string: make it an artifact")


def test_dreambooth_lineage_is_artifacts_from_base_model_to_samples():
    ir = load_ir("dreambooth")
    assert input_types(ir, "generate-prior") == {"base_model": "system.Model"}
    assert output_types(ir, "generate-prior")["class_images"] == "system.Dataset"
    assert input_types(ir, "train") == {"base_model": "system.Model", "instance_images": "system.Dataset",
                                        "class_sets": "system.Dataset"}
    assert output_types(ir, "export-model")["model"] == "system.Model"
    assert input_types(ir, "sample-model") == {"model": "system.Model"}, "sample takes the registered version"
    importers = [e["importer"] for e in ir["deploymentSpec"]["executors"].values() if "importer" in e]
    assert [i["typeSchema"]["schemaTitle"] for i in importers] == ["system.Dataset"], "the subject images"
    [subject] = [t for _, _, t in tasks(ir) if t["taskInfo"]["name"] == "subject-images"]
    assert subject["inputs"]["parameters"]["uri"]["componentInputParameter"].endswith("instance_images")


def test_ocr_results_are_an_output_artifact():
    ir = load_ir("ocr")
    merge = output_types(ir, "merge-ocr")
    assert merge["results"] == "system.Dataset" and merge["report"] == "system.HTML"
    assert merge["report_md"] == "system.Markdown" and merge["metrics"] == "system.Metrics"
    assert output_types(ir, "export-trocr")["parity"] == "system.Markdown"


# ---- the KFP UI's access to the reports on the s3:// pipeline root (inkbooth manifests: ui/) -------

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("cluster-*.yaml"))


def _ui(path, tmp_path):
    from inkbooth import cluster, manifests

    settings = cluster.load(str(path))
    out = tmp_path / path.stem
    manifests.overlay(settings, out, k8s=REPO / "k8s")
    launcher = yaml.safe_load((out / "launcher.yaml").read_text())
    provider = yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]
    return settings, out / "ui", provider


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_kfp_ui_may_read_exactly_the_secret_the_launcher_names(path, tmp_path):
    import shutil
    import subprocess

    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed")
    settings, ui, provider = _ui(path, tmp_path)
    rendered = subprocess.run(["kubectl", "kustomize", str(ui)], capture_output=True, text=True, check=True,
                              timeout=120).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(rendered) if d}
    if settings.credentials != "secret":
        assert docs == {}, "keyless: no Secret to read"
        return
    assert set(docs) == {"Role", "RoleBinding"}, "no Secret, nothing else"
    [rule] = docs["Role"]["rules"]
    assert rule == {"apiGroups": [""], "resources": ["secrets"],
                    "resourceNames": [provider["credentials"]["secretRef"]["secretName"]], "verbs": ["get"]}
    binding = docs["RoleBinding"]
    assert binding["metadata"]["namespace"] == docs["Role"]["metadata"]["namespace"] == settings.kfp.namespace
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ml-pipeline-ui",
                                    "namespace": settings.kfp.system_namespace}]
    assert binding["roleRef"]["name"] == docs["Role"]["metadata"]["name"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_kfp_ui_patches_give_the_artifact_servers_the_store(path, tmp_path):
    from tests.test_manifests import restricted_violations

    settings, ui, provider = _ui(path, tmp_path)
    patches = {"ml-pipeline-ui": "inkbooth-s3-read"}
    if settings.kfp.mode == "multi-user":
        patches["ml-pipeline-ui-artifact"] = provider["credentials"]["secretRef"]["secretName"]
    assert {p.name for p in ui.glob("*.patch.yaml")} == {f"{n}.patch.yaml" for n in patches}
    for container, secret in patches.items():
        doc = yaml.safe_load((ui / f"{container}.patch.yaml").read_text())
        spec = doc["spec"]["template"]["spec"]
        [c] = spec["containers"]
        assert c["name"] == container
        env = {e["name"]: e for e in c["env"]}
        if settings.credentials == "secret":
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": name}, "keys only from a Secret"
        else:
            assert "AWS_ACCESS_KEY_ID" not in env
        # The UI's S3 settings are the store's (a host name: the UI has no port setting; with a port the
        # launcher's provider info, recorded with each artifact, is what it reads with).
        if ":" not in provider["endpoint"] and provider["endpoint"] != "s3.amazonaws.com":
            assert env["AWS_S3_ENDPOINT"]["value"] == provider["endpoint"]
            assert env["AWS_SSL"]["value"] == str(not provider["disableSSL"]).lower()
        assert env.get("AWS_REGION", {}).get("value", "") == provider.get("region", "")
        if container == "ml-pipeline-ui-artifact":
            assert restricted_violations(spec) == [], "the profile namespace may enforce restricted"
