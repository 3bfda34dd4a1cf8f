"""What the KFP UI shows of a run, read from the compiled IR: metrics, reports and an unbroken lineage."""

from __future__ import annotations

import pytest
import yaml

from inkbooth import runs

# Component (as named in the IR) -> what it must output for the UI.
METRICS = {"ocr": {"export-trocr", "merge-ocr"}, "dreambooth": {"generate-prior", "train", "sample-model"}}
REPORTS = {"ocr": {"export-trocr", "merge-ocr"}, "dreambooth": {"train", "sample-model"}}
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
