"""Write tests/data/kfp_platform_schema.json: the fields each KFP backend release knows in a platform spec.

The KFP API server and its Argo compiler parse the Kubernetes part of a compiled pipeline strictly
(inkbooth.backends says where), so the fields a backend's protos define are the contract the tests
check every compiled pipeline against. For each tag this reads the two protos from a
kubeflow/pipelines checkout, compiles them with grpcio-tools and records, for every message reachable
from ``PlatformSpec`` and ``KubernetesExecutorConfig``, its fields by JSON name.

    python -m venv /tmp/protovenv && /tmp/protovenv/bin/pip install grpcio-tools
    /tmp/protovenv/bin/python scripts/kfp-platform-schema.py --repo PATH/TO/kubeflow/pipelines \\
        --tags 2.5.0,2.14.0,2.15.0,2.16.0,2.17.0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PROTOS = {"pipeline_spec": "api/v2alpha1/pipeline_spec.proto",
          "kubernetes_executor_config": "kubernetes_platform/proto/kubernetes_executor_config.proto"}
ROOTS = {"pipeline_spec": "ml_pipelines.PlatformSpec",
         "kubernetes_executor_config": "kfp_kubernetes.KubernetesExecutorConfig"}
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "kfp_platform_schema.json"


def compile_protos(repo: Path, tag: str, work: Path) -> dict[str, object]:
    """The generated modules of the two protos at ``tag``."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    src = work / "src"
    src.mkdir(parents=True)
    for name, path in PROTOS.items():
        text = subprocess.run(["git", "-C", str(repo), "show", f"{tag}:{path}"], check=True, capture_output=True,
                              text=True).stdout
        (src / f"{name}.proto").write_text(text)
    stub = src / "google" / "rpc"  # pipeline_spec.proto imports google/rpc/status.proto, which grpc_tools lacks
    stub.mkdir(parents=True)
    (stub / "status.proto").write_text('syntax = "proto3";\npackage google.rpc;\nimport "google/protobuf/any.proto";\n'
                                       "message Status { int32 code = 1; string message = 2; "
                                       "repeated google.protobuf.Any details = 3; }\n")
    out = work / "out"
    out.mkdir()
    files = [str(src / f"{n}.proto") for n in PROTOS] + [str(stub / "status.proto")]
    if protoc.main(["protoc", f"-I{src}", f"-I{include}", f"--python_out={out}", *files]) != 0:
        raise SystemExit(f"{tag}: protoc failed")
    sys.path.insert(0, str(out))
    modules = {}
    for name in PROTOS:
        spec = importlib.util.spec_from_file_location(f"{name}_{tag.replace('.', '_')}", out / f"{name}_pb2.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
    sys.path.remove(str(out))
    return modules


def describe(root: object) -> dict[str, dict[str, dict[str, object]]]:
    """Every message reachable from ``root``: field JSON name -> kind, message, repeated, map value."""
    from google.protobuf.descriptor import FieldDescriptor

    messages: dict[str, dict[str, dict[str, object]]] = {}
    todo = [root]
    while todo:
        desc = todo.pop()
        if desc.full_name in messages or desc.full_name.startswith("google.protobuf."):
            continue
        fields = {}
        for f in desc.fields:
            repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == FieldDescriptor.LABEL_REPEATED
            entry: dict[str, object] = {"repeated": repeated}
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                target = f.message_type
                if target.GetOptions().map_entry:
                    value = target.fields_by_name["value"]
                    entry = {"map": True}
                    if value.type == FieldDescriptor.TYPE_MESSAGE:
                        entry["message"] = value.message_type.full_name
                        todo.append(value.message_type)
                else:
                    entry["message"] = target.full_name
                    todo.append(target)
            fields[f.json_name] = entry
            if f.json_name != f.name:
                fields[f.name] = entry  # protojson accepts the proto name too
        messages[desc.full_name] = fields
    return messages


def one(repo: Path, tag: str) -> dict[str, object]:
    """The schema of one tag (in a process of its own: protobuf's descriptor pool takes one file of a name)."""
    with tempfile.TemporaryDirectory() as tmp:
        modules = compile_protos(repo, tag, Path(tmp))
        commit = subprocess.run(["git", "-C", str(repo), "rev-list", "-n1", tag], check=True,
                                capture_output=True, text=True).stdout.strip()
        found: dict[str, object] = {"commit": commit, "roots": ROOTS, "messages": {}}
        for name, root in ROOTS.items():
            desc = modules[name].DESCRIPTOR.message_types_by_name[root.split(".")[-1]]
            found["messages"].update(describe(desc))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, required=True, help="a kubeflow/pipelines git checkout (with tags)")
    ap.add_argument("--tags", default="2.5.0,2.14.0,2.15.0,2.16.0,2.17.0")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.repo, args.one)))
        return 0
    schema = {}
    for tag in args.tags.split(","):
        out = subprocess.run([sys.executable, __file__, "--repo", str(args.repo), "--one", tag], check=True,
                             capture_output=True, text=True).stdout
        schema[tag] = json.loads(out)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"{OUT}: {', '.join(schema)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
