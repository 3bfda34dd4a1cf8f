"""``inkbooth``: one command line over the library.

Every subcommand maps its arguments onto one library function and its typed config: a config file
(``--config``, YAML) first, then one flag per config field on top. Nothing heavy is imported until a
subcommand runs, so ``inkbooth --help`` is instant. The whole command line is one file on purpose:
each handler is a few lines beside its parser, and a reader sees every command together, so it
reads better whole than split by command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from inkbooth import __version__


def _config_parser(sub: Any, name: str, help_text: str, cls_path: str, positionals: list[tuple[str, str]]) -> Any:
    """A subcommand whose flags are the fields of a config dataclass (cheap to import: no torch)."""
    import importlib

    from inkbooth.config import add_arguments

    module, attr = cls_path.split(":")
    p = sub.add_parser(name, help=help_text, description=help_text)
    for arg, arg_help in positionals:
        p.add_argument(arg, help=arg_help)
    p.add_argument("--config", help="YAML file with config fields; flags below override it")
    add_arguments(p, getattr(importlib.import_module(module), attr))
    p.set_defaults(_config_cls=cls_path)
    return p


def _load_config(args: argparse.Namespace) -> Any:
    import importlib

    from inkbooth import config

    module, attr = args._config_cls.split(":")
    cls = getattr(importlib.import_module(module), attr)
    return config.load(cls, args.config, config.overrides_from_args(args, cls))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inkbooth",
        description="Pipelines for TrOCR printed-text OCR and DreamBooth, locally or on Kubeflow Pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"inkbooth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _config_parser(sub, "export-trocr", "export a TrOCR checkpoint to ONNX (fp32/INT8/FP16) with parity checks",
                       "inkbooth.ocr.recognition.export:ExportConfig",
                       [("model", "hub id, local folder or s3:// URI of the checkpoint"),
                        ("output", "folder or s3:// prefix for the ONNX artifact")])
    p.add_argument("--parity-images-uri", help="folder or s3:// prefix of line images for the parity set")

    p = _config_parser(sub, "finetune-trocr", "fine-tune a TrOCR checkpoint on labelled line crops and/or synthetic lines",
                       "inkbooth.ocr.training.finetune:FinetuneConfig",
                       [("model", "hub id, local folder or s3:// URI of the checkpoint to start from"),
                        ("output", "folder or s3:// prefix for the fine-tuned checkpoint")])
    p.add_argument("--data", help="folder or s3:// prefix of line images with labels.jsonl or labels.tsv")
    p.add_argument("--checkpoints", help="prefix for full-state checkpoints (default: <output>-checkpoints)")
    p.add_argument("--registry", help="registry root: register the result as the next version of --name")
    p.add_argument("--name", default="trocr", help="model name in the registry (default: trocr)")

    p = _config_parser(sub, "pdf-lines", "labelled line crops from born-digital PDFs (text layer as the labels), "
                       "for finetune-trocr --data", "inkbooth.ocr.training.pdflines:PdfLinesConfig",
                       [("pdfs", "folder or s3:// prefix of PDFs with a text layer"),
                        ("output", "folder or s3:// prefix for the labelled lines (images + labels.jsonl)")])
    p.add_argument("--extra-lines", help="folder or s3:// prefix of labelled lines to add to the PDFs' lines")

    p = _config_parser(sub, "ocr", "OCR documents (one shard of them) with an exported model",
                       "inkbooth.ocr.recognition.recognizer:RecognizeConfig",
                       [("documents", "folder or s3:// prefix of PNG/JPEG/TIFF/PDF documents"),
                        ("model", "exported model (export-trocr output); with --backend torch, a checkpoint"),
                        ("output", "folder or s3:// prefix for the results")])
    p.add_argument("--shard", default="0/1", help="this worker's share, i/n (default 0/1: everything)")
    p.add_argument("--no-merge", action="store_true", help="do not merge results after this shard")
    p.add_argument("--ground-truth", default="", help="prefix with <document>.txt transcripts, for CER")

    p = _config_parser(sub, "prior", "generate class images for prior preservation (content-keyed, resumable)",
                       "inkbooth.dreambooth.prior:PriorConfig",
                       [("model", "Stable Diffusion: hub id, diffusers folder or s3:// URI"),
                        ("output", "prefix where class-image sets are kept")])
    p.add_argument("--shard", default="0/1", help="this worker's share, i/n")

    p = _config_parser(sub, "train", "DreamBooth fine-tuning (for several GPUs: accelerate launch -m inkbooth.dreambooth.train)",
                       "inkbooth.dreambooth.train:TrainConfig",
                       [("model", "Stable Diffusion: hub id, diffusers folder or s3:// URI"),
                        ("instance_images", "folder or s3:// prefix of the 3-20 subject images"),
                        ("output", "local folder for the trained model")])
    p.add_argument("--class-images", help="class-image set (output of `inkbooth prior`)")
    p.add_argument("--checkpoints", help="prefix for full-state checkpoints (default: beside the output)")

    p = _config_parser(sub, "evaluate-dreambooth", "subject fidelity (DINO, CLIP-I, CLIP-T) and class preservation "
                       "of the base model and every kept step of a DreamBooth run; the step to register",
                       "inkbooth.dreambooth.fidelity:EvaluateConfig",
                       [("trained", "output of `inkbooth train` (keep steps with snapshot_every)"),
                        ("output", "folder or s3:// prefix for the evaluation")])
    p.add_argument("--base-model", default="", help="base model to compare with (default: the run's)")
    p.add_argument("--instance-images", default="", help="real subject pictures (default: the run's)")

    p = _config_parser(sub, "export-model", "export a trained DreamBooth model and register it as a new version",
                       "inkbooth.dreambooth.export:ExportCheckpointConfig",
                       [("trained", "output of `inkbooth train`"), ("registry", "registry root (folder or s3://)")])
    p.add_argument("--evaluation", default="", help="output of `inkbooth evaluate-dreambooth`: register its selected step")

    p = _config_parser(sub, "sample", "sample images (and a grid) from a model version",
                       "inkbooth.dreambooth.sample:SampleConfig",
                       [("model", "registry version URI or diffusers folder"), ("output", "folder or s3:// prefix")])

    p = sub.add_parser("pages", help="print the line boxes found in a document (JSON)")
    p.add_argument("document", help="path or s3:// URI of a document")
    p.add_argument("--crops", help="folder to write the line crops to")

    p = sub.add_parser("run", help="run a pipeline (locally through kfp.local)",
                       description="Run a pipeline end to end. With --local it runs here through kfp.local.")
    p.add_argument("pipeline", help="pipeline name: ocr or dreambooth")
    p.add_argument("--local", action="store_true", help="run here with kfp.local (the only mode in this version)")
    p.add_argument("--config", required=False, help="YAML run config (see examples/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run config field (YAML value), e.g. --set num_shards=8")
    p.add_argument("--store", choices=["env", "embedded"], default="env",
                   help="env: S3 endpoint and credentials from the environment; embedded: start SeaweedFS here")
    p.add_argument("--workdir", default=".inkbooth", help="local pipeline root and embedded store data")
    _verbose_flag(p)

    def cluster_command(name: str, help_text: str, pipeline_arg: bool = True) -> Any:
        p = _config_parser(sub, name, help_text, "inkbooth.submit:Endpoint", [])
        if pipeline_arg:
            p.add_argument("pipeline", help="ocr or dreambooth")
        p.add_argument("--run", required=True, metavar="RUN_YAML", help="run config (see examples/*-run.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a run config field")
        return p

    cluster_command("submit", "compile a pipeline and submit one run to a KFP endpoint")
    p = cluster_command("schedule", "create a recurring run (cron) on a KFP endpoint")
    p.add_argument("--cron", required=True, help="KFP cron with seconds first, e.g. '0 0 3 * * *' (03:00 daily)")
    p.add_argument("--job-name", required=True, help="name of the recurring run")
    p.add_argument("--max-concurrency", type=int, default=1)
    p = cluster_command("retrain", "submit a training run only if its data changed since the latest version "
                        "(DreamBooth: subject images; ocr-train: labelled lines)", pipeline_arg=False)
    p.add_argument("--pipeline", choices=["dreambooth", "ocr-train"], default="dreambooth",
                   help="which training pipeline (default: dreambooth)")

    p = sub.add_parser("doctor", help="check a live cluster before the first run (exit 1 if a check fails)",
                       description="Preflight: KFP version and mode, where runs execute, the launcher settings, "
                                   "credentials, rights, Pod Security, the UI's reports, GPU drivers, the model "
                                   "registries (model_registries). Reads the "
                                   "cluster with kubectl; writes nothing.")
    p.add_argument("--cluster", required=True, metavar="FILE", help="the cluster file the runs compile with")
    p.add_argument("--host", help="KFP API endpoint (default: ml-pipeline through the API server's service proxy)")
    p.add_argument("--token", default="", help="bearer token for the KFP API (default: $INKBOOTH_KFP_TOKEN)")
    p.add_argument("--s3-secret", default="inkbooth-s3", help="the Secret the runs take S3 keys from")
    p.add_argument("--context", help="kubectl context (default: the current one)")
    p.add_argument("--check-bucket", action="store_true", help="also head_bucket the pipeline root's bucket from "
                                                               "here, with the local credentials")

    p = sub.add_parser("compile", help="compile pipelines to KFP v2 IR YAML")
    p.add_argument("pipeline", nargs="?", default="all", help="pipeline name, or all")
    p.add_argument("--out-dir", help="where to write (default: beside the pipeline modules)")
    p.add_argument("--cluster", help="YAML ClusterConfig: per-stage resources, GPUs, node selectors, tolerations")
    p.add_argument("--backend", help="KFP backend version to compile for (2.5, 2.14, 2.15, 2.16, 2.17): only what it "
                                     "honours goes in (default: kfp.backend of the cluster file, else 2.17)")

    p = sub.add_parser("manifests", help="write the Kubernetes manifests (a kustomize overlay) of a cluster file")
    p.add_argument("--cluster", required=True, help="the cluster file: namespace, store, registry, identity")
    p.add_argument("--out", required=True, help="folder for the overlay (then: kubectl apply -k OUT)")
    p.add_argument("--k8s", default="k8s", help="inkbooth's k8s/ folder (default: ./k8s)")
    p.add_argument("--trainer", action="store_true", help="add the Kubeflow Trainer runtime (multi-node training)")

    p = sub.add_parser("store", help="the embedded SeaweedFS object store")
    p.add_argument("action", choices=["start"], help="start: run in the foreground and print its environment")
    p.add_argument("--data", default=".inkbooth/s3", help="data folder")

    from inkbooth import readers  # light: the recipes' names, no torch

    p = sub.add_parser("reader", help="the committed small readers: where one is (a MODEL for ocr, export-trocr, "
                                      "finetune-trocr), or train it again from its recipe")
    p.add_argument("action", choices=["path", "train"])
    p.add_argument("name", choices=readers.NAMES)
    p.add_argument("--fonts", default=".inkbooth/fonts", help="train: the folder `make fonts` fills")
    p.add_argument("--workdir", default=".inkbooth/readers", help="train: base model, stage outputs, checkpoints")
    p.add_argument("--threads", type=int, default=0, help="train: torch threads (default: the recipe's)")
    p.add_argument("--documents", default=".inkbooth/documents",
                   help="train: where a recipe's PDFs are (DIR/NAME/; `make documents` fetches them)")

    from inkbooth import drawing  # light: the models' names, no torch

    p = sub.add_parser("drawing", help="the committed small drawing model and CLIP: where one is (a MODEL for "
                                       "train, prior, sample), or train it again from its recipe")
    p.add_argument("action", choices=["path", "train"])
    p.add_argument("name", choices=drawing.NAMES)
    p.add_argument("--workdir", default=".inkbooth/drawing", help="train: base models, pool, stage outputs, checkpoints")
    p.add_argument("--threads", type=int, default=0, help="train: torch threads (default: the recipe's)")
    p.add_argument("--stages", type=int, default=0, help="train: run and install only the first N stages (0: all)")

    p = sub.add_parser("tiny", help="build a tiny model of a real architecture (offline, seeded)")
    p.add_argument("kind", choices=["trocr", "sd"])
    p.add_argument("output", help="folder to save it to")

    p = sub.add_parser("report", help="where a run's visual reports (HTML, Markdown) are; --build makes them",
                       description="Print where the reports of RUN_OUTPUT are kept: an OCR results artifact "
                                   "(<output>/results) or a registered DreamBooth version (<registry>/<name>/vN).")
    p.add_argument("run_output", metavar="RUN_OUTPUT", help="the pipeline's output: OCR results or a model version")
    p.add_argument("--build", action="store_true", help="(re)build the report from the run's artifacts and publish it")
    p.add_argument("--samples", help="with --build, DreamBooth: the samples artifact to show")
    p.add_argument("--export-model", help="with --build, OCR: the ONNX export, for the parity table")
    p.add_argument("--pdf-dpi", type=int, help="with --build, OCR: the PDF resolution the run used (default 200)")

    p = sub.add_parser("demo", help="run both pipelines end to end on small models and the embedded store")
    p.add_argument("--workdir", default=".inkbooth", help="where the demo keeps its files")
    p.add_argument("--num-shards", type=int, default=2)
    p.add_argument("--only", choices=["ocr", "dreambooth"], help="run one pipeline only")
    p.add_argument("--fonts", default=".inkbooth/fonts",
                   help="fonts the OCR documents are set in (`make fonts`); without them, Pillow's font only")
    _verbose_flag(p)
    return parser


def _verbose_flag(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: without the flag here, `inkbooth -v run ...` keeps its value (a subparser's default
    # would overwrite it).
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="print every task's log as it comes (it always goes to <run folder>/logs/<task>.log)")


def main(argv: list[str] | None = None) -> int:
    # Tokenizers' own thread pool fights the steps' threads (and warns after a fork).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "urllib3", "s3transfer", "filelock", "kfp", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_redact_record)
    if args.command is None:
        parser.print_help()
        return 0
    from inkbooth.config import ConfigError

    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"inkbooth {args.command}: config error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"inkbooth {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure ends as one line naming what and why
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"inkbooth {args.command}: {_one_line(e)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """An error as one line, credentials in URLs redacted; the type is named where the message
    alone would not say what went wrong."""
    from inkbooth.storage import redact

    text = " ".join(str(exc).split())
    known = isinstance(exc, (ValueError, FileNotFoundError, RuntimeError)) or type(exc).__module__.startswith("inkbooth")
    if not text or not known:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return redact(text)


def _redact_record(record: logging.LogRecord) -> bool:
    """A logging filter: credentials in URLs never reach the terminal or a log file."""
    from inkbooth.storage import redact

    message = record.getMessage()
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    return True


def _export(args: argparse.Namespace) -> int:
    from inkbooth.ocr.recognition.export import export_trocr

    manifest = export_trocr(args.model, args.output, _load_config(args), parity_images=args.parity_images_uri)
    print(json.dumps({"output": args.output, "content_hash": manifest.content_hash, "metrics": manifest.metrics},
                     indent=2))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from inkbooth.ocr.training.finetune import finetune_trocr
    from inkbooth.ocr.training.register import RegisterConfig, register_trocr

    manifest = finetune_trocr(args.model, args.output, _load_config(args), data=args.data,
                              checkpoints=args.checkpoints)
    result = {"output": args.output, "metrics": manifest.metrics}
    if args.registry:
        result["version"], _ = register_trocr(args.output, args.registry, RegisterConfig(name=args.name))
    print(json.dumps(result, ensure_ascii=False))
    return 0


def _pdf_lines(args: argparse.Namespace) -> int:
    from inkbooth.ocr.training.pdflines import pdf_lines

    manifest = pdf_lines(args.pdfs, args.output, _load_config(args), extra_lines=args.extra_lines)
    print(json.dumps({"output": args.output, "metrics": manifest.metrics}, ensure_ascii=False))
    return 0


def _ocr(args: argparse.Namespace) -> int:
    from inkbooth.ocr.batch import merge_results, plan_documents, recognize_documents

    cfg = _load_config(args)
    plan = plan_documents(args.documents, 1)  # one listing for this shard and the merge
    for item in plan["skipped"]:
        logging.getLogger("inkbooth").warning("skipped %s: %s", item["key"], item["reason"])
    summary = recognize_documents(args.documents, args.model, args.output, cfg, shard=args.shard, keys=plan["keys"])
    print(json.dumps(summary))
    if not args.no_merge and args.shard.split("/")[1] == "1":
        manifest = merge_results(plan, args.output, args.ground_truth or None, [summary])
        results = f"{args.output.rstrip('/')}/results"
        print(json.dumps({"results": results, "files": manifest.location(results), "report": manifest.metrics}))
    return 0


def _pages(args: argparse.Namespace) -> int:
    from inkbooth import storage
    from inkbooth.ocr.layout.lines import document_lines

    data = storage.read_bytes(args.document)
    out = []
    for i, line in enumerate(document_lines(data, args.document)):
        out.append({"page": line.page + 1, "box": list(line.box)})
        if args.crops:
            Path(args.crops).mkdir(parents=True, exist_ok=True)
            line.image.save(Path(args.crops) / f"p{line.page + 1:03d}-l{i + 1:04d}.png")
    print(json.dumps(out))
    return 0


def _run_config(pipeline: str, path: str | None, settings: list[str]) -> Any:
    """A pipeline's run config from a YAML file with --set KEY=VALUE overrides."""
    from inkbooth import config, runs

    overrides = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise config.ConfigError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = config.yaml_load(value, f"--set {key}")
    return config.load(runs.get(pipeline).run_config, path, overrides)


def _endpoint(args: argparse.Namespace) -> Any:
    """The KFP endpoint config; the token may come from INKBOOTH_KFP_TOKEN rather than the command line."""
    endpoint = _load_config(args)
    if not endpoint.token:
        endpoint.token = os.environ.get("INKBOOTH_KFP_TOKEN", "")
    return endpoint


def _submit(args: argparse.Namespace) -> int:
    from inkbooth import submit

    run_id = submit.submit(args.pipeline, _run_config(args.pipeline, args.run, args.set), _endpoint(args))
    print(json.dumps({"pipeline": args.pipeline, "run_id": run_id}))
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from inkbooth import submit

    rid = submit.schedule(args.pipeline, _run_config(args.pipeline, args.run, args.set), _endpoint(args),
                          job_name=args.job_name, cron=args.cron, max_concurrency=args.max_concurrency)
    print(json.dumps({"pipeline": args.pipeline, "recurring_run_id": rid}))
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from inkbooth import submit

    print(json.dumps(submit.retrain_if_changed(_run_config(args.pipeline, args.run, args.set), _endpoint(args))))
    return 0


def _run(args: argparse.Namespace) -> int:
    from inkbooth import objectstore, runs, storage

    if not args.local:
        print("inkbooth run: runs here need --local; for a cluster use `inkbooth submit`", file=sys.stderr)
        return 2
    run = _run_config(args.pipeline, args.config, args.set)
    workdir = Path(args.workdir)
    if args.store == "embedded":
        with objectstore.EmbeddedS3(workdir / "s3") as store, objectstore.environment(store.env()):
            for uri in (run.documents, run.output):
                if storage.is_s3(uri):
                    storage.ensure_bucket(uri)
            result = runs.run_local(args.pipeline, run, workdir / "kfp-local", verbose=args.verbose)
    else:
        result = runs.run_local(args.pipeline, run, workdir / "kfp-local", verbose=args.verbose)
    print(json.dumps({"pipeline": args.pipeline, "output": result}))
    return 0


def _compile(args: argparse.Namespace) -> int:
    from inkbooth import cluster, runs

    names = sorted(runs.PIPELINES) if args.pipeline == "all" else [args.pipeline]
    if (args.cluster or args.backend) and not args.out_dir:
        raise ValueError("--cluster and --backend need --out-dir: the YAML kept in the repository uses the defaults")
    settings = cluster.load(args.cluster)
    if args.backend:
        settings = settings.for_backend(args.backend)
    settings.validate()
    for name in names:
        target = Path(args.out_dir) / runs.get(name).yaml if args.out_dir else runs.packaged_yaml(name)
        runs.compile_pipeline(name, target, settings)
        print(target)
    return 0


def _manifests(args: argparse.Namespace) -> int:
    from inkbooth import cluster, manifests

    print(manifests.overlay(cluster.load(args.cluster), args.out, k8s=args.k8s, trainer=args.trainer,
                            source=args.cluster))
    return 0


def _store(args: argparse.Namespace) -> int:
    import signal
    import threading

    from inkbooth import objectstore

    with objectstore.EmbeddedS3(args.data) as store:
        for key, value in store.env().items():
            print(f"export {key}={value}")
        sys.stdout.flush()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            store.supervise(stop)  # restarts a server that dies (same ports); gives up after a few
        except KeyboardInterrupt:
            pass
    return 0


def _prior(args: argparse.Namespace) -> int:
    from inkbooth.dreambooth.prior import generate_prior_images

    print(json.dumps(generate_prior_images(args.model, args.output, _load_config(args), shard=args.shard)))
    return 0


def _train(args: argparse.Namespace) -> int:
    from inkbooth.dreambooth.train import train_dreambooth

    manifest = train_dreambooth(args.model, args.instance_images, args.output, _load_config(args),
                                class_images=args.class_images, checkpoints=args.checkpoints)
    if manifest is not None:
        print(json.dumps({"output": args.output, "metrics": manifest.metrics}))
    return 0


def _evaluate_dreambooth(args: argparse.Namespace) -> int:
    from inkbooth.dreambooth.evaluate import evaluate_dreambooth, read_evaluation

    evaluate_dreambooth(args.trained, args.output, _load_config(args), base_model=args.base_model,
                        instance_images=args.instance_images)
    record = read_evaluation(args.output)
    print(json.dumps({"output": args.output, "selected": record["selected"], "rows": record["rows"]}))
    return 0


def _export_model(args: argparse.Namespace) -> int:
    from inkbooth.dreambooth.export import export_checkpoint

    uri, manifest = export_checkpoint(args.trained, args.registry, _load_config(args), evaluation=args.evaluation)
    print(json.dumps({"version": uri, "content_hash": manifest.content_hash,
                      **{k: manifest.lineage[k] for k in ("selected_step", "selection") if k in manifest.lineage}}))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from inkbooth import artifacts
    from inkbooth.dreambooth.sample import sample

    manifest = sample(args.model, args.output, _load_config(args))
    print(json.dumps({"output": args.output, "grid": artifacts.file_uri(args.output, "grid.png", manifest),
                      **manifest.metrics}))
    return 0


def _reader(args: argparse.Namespace) -> int:
    from inkbooth import readers

    if args.action == "train":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        print(readers.train(args.name, args.fonts, args.workdir, args.threads, args.documents))
    else:
        print(readers.path(args.name))
    return 0


def _drawing(args: argparse.Namespace) -> int:
    from inkbooth import drawing

    if args.action == "train":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        print(drawing.train(args.name, args.workdir, args.threads, args.stages))
    else:
        print(drawing.path(args.name))
    return 0


def _tiny(args: argparse.Namespace) -> int:
    from inkbooth import tiny

    print(tiny.build_tiny_trocr(args.output) if args.kind == "trocr" else tiny.build_tiny_sd(args.output))
    return 0


def _report(args: argparse.Namespace) -> int:
    from inkbooth import reports

    if args.build:
        from inkbooth.ocr.documents.pages import PagesConfig

        pages_config = PagesConfig(pdf_dpi=args.pdf_dpi) if args.pdf_dpi else None
        page = reports.build(args.run_output, samples=args.samples, export_model=args.export_model,
                             pages_config=pages_config)
        reports.publish(page, args.run_output)
    found = reports.locate(args.run_output)
    print(json.dumps(found, indent=2))
    if not found["published"]:
        print(f"inkbooth report: no report published for {args.run_output} yet; `inkbooth report --build "
              f"{args.run_output}` makes one", file=sys.stderr)
        return 1
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from inkbooth import cluster, doctor

    findings = doctor.diagnose(cluster.load(args.cluster), doctor.Api(context=args.context), s3_secret=args.s3_secret,
                               kfp_host=args.host, token=args.token or os.environ.get("INKBOOTH_KFP_TOKEN", ""),
                               check_bucket=args.check_bucket)
    print(doctor.render(findings))
    return 1 if any(f.status == "FAIL" for f in findings) else 0


def _demo(args: argparse.Namespace) -> int:
    from inkbooth.demo import run_demo

    run_demo(args.workdir, num_shards=args.num_shards,
             pipelines=(args.only,) if args.only else ("ocr", "dreambooth"), verbose=args.verbose,
             fonts_dir=args.fonts)
    return 0


COMMANDS = {"submit": _submit, "schedule": _schedule, "retrain": _retrain, "export-trocr": _export,
            "finetune-trocr": _finetune, "pdf-lines": _pdf_lines, "ocr": _ocr, "prior": _prior, "train": _train,
            "export-model": _export_model, "evaluate-dreambooth": _evaluate_dreambooth, "sample": _sample,
            "pages": _pages, "run": _run, "compile": _compile, "manifests": _manifests, "store": _store, "reader": _reader,
            "drawing": _drawing, "tiny": _tiny, "demo": _demo, "report": _report, "doctor": _doctor}

if __name__ == "__main__":
    sys.exit(main())
