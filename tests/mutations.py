"""Does the suite still bite? Break the code on purpose, one mutation at a time, and see the tests fail.

Run on demand (not collected by pytest: the file name has no ``test_`` prefix)::

    .venv/bin/python tests/mutations.py            # every mutation
    .venv/bin/python tests/mutations.py prior-weight md-escape   # some of them, by name

Each mutation replaces one snippet of one file in a copy of the working tree (src/, components/,
pipelines/, tests/, bench/, examples/, k8s/, the Makefile; the package is imported from the copy,
``inkbooth.components`` and ``inkbooth.pipelines`` included), runs the tests named for it in the copy,
and says whether at least one of them failed. The tests are first run once unmutated in the copy, so
a failure is the mutation's, not a test that fails anyway. The table at the end lists, per mutation,
the tests expected to fail, those that failed and whether it was caught. Exit status 1 when a
mutation was not caught (or a snippet to replace is no longer in the code: the list needs updating).

The mutations are the ones issue 23 found the suite missed, and one or more per thing it asked
the tests to prove. Add one when a test is written to catch a bug: the snippet it breaks and the
tests that must fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ["src", "components", "pipelines", "tests", "bench", "examples", "k8s", "Makefile", "pyproject.toml",
          "README.md"]
# Read-only data the tests use (PDFs of the evaluation set, fonts, readers), linked rather than copied.
LINKED_DATA = ["testdata", "fonts", "readers", "documents"]


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    why: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    # The two that issue 23 found uncaught.
    Mutation("prior-weight", "the trainer ignores the configured prior-preservation weight",
             "src/inkbooth/dreambooth/train.py",
             "prior_weight=config.prior_loss_weight", "prior_weight=0.0",
             ("tests/test_dreambooth.py::test_the_configured_prior_weight_reaches_the_loss_and_changes_what_is_learned",)),
    Mutation("md-escape", "Markdown cells are not escaped", "src/inkbooth/reports/page.py",
             '    out = "".join(_MD_ENTITIES.get(c) or (f"\\\\{c}" if c in _MD_BACKSLASHED else c) for c in text)',
             "    out = text",
             ("tests/test_report_injection.py::test_every_hostile_string_is_one_line_of_plain_text",
              "tests/test_report_injection.py::test_ocr_report_from_hostile_names_and_text_is_escaped",
              "tests/test_report_injection.py::test_dreambooth_report_from_hostile_prompts_and_names_is_escaped")),
    # Item 4: pickles in checkpoints, identity bound to content.
    Mutation("no-pickle-check", "resume loads a checkpoint's pickles without checking them",
             "src/inkbooth/checkpoints.py", "            pickles.check_folder(path)\n", "            pass\n",
             ("tests/test_security.py::test_a_pickle_payload_in_a_dreambooth_checkpoint_is_refused_and_never_runs",)),
    Mutation("identity-from-manifest-only", "the checkpoint's content is not compared with the run's identity",
             "src/inkbooth/checkpoints.py",
             'if theirs != self.identity or bound.get("run") != self.key:', "if False:",
             ("tests/test_checkpoints.py::test_a_forged_manifest_that_claims_this_run_is_refused_by_the_content",
              "tests/test_security.py::test_a_forged_dreambooth_checkpoint_that_claims_the_run_is_refused")),
    Mutation("content-hash-unchecked", "files swapped under a rehashed manifest are resumed",
             "src/inkbooth/checkpoints.py",
             "if artifacts.content_hash([f for f in manifest.files if f.path != BINDING]) != content:",
             "if False:",
             ("tests/test_checkpoints.py::test_files_swapped_under_a_manifest_made_to_match_are_refused",)),
    # Item 5: the fault lands mid-upload, one outcome; the reader/publisher overlap is forced.
    Mutation("upload-without-retries", "an upload that meets a dead store gives up at once",
             "src/inkbooth/storage/__init__.py",
             '    retrying(put, f"uploading {local_path} to {uri}")', "    put()",
             ("tests/test_faults.py::test_object_store_killed_and_restarted_during_an_upload",)),
    Mutation("reader-does-not-follow", "a reader whose version is collected under it gives up",
             "src/inkbooth/artifacts/reading.py",
             "                    or attempt == _READ_ATTEMPTS - 1:", "                    or True:",
             ("tests/test_artifacts.py::test_a_reader_whose_version_is_collected_under_it_reads_the_new_one_whole",)),
    # Item 6: make manifests validates; the KFP stand-in refuses what the API refuses.
    Mutation("manifests-unvalidated", "`make manifests` stops validating k8s/cluster/*", "Makefile",
             "\t  $(BIN)/kubernetes-validate --strict --quiet -k 1.32.0 $$out || exit 1; \\\n", "\t  true; \\\n",
             ("tests/test_manifests.py::test_make_manifests_renders_and_validates",)),
    Mutation("experiment-name-as-id", "runs are scheduled into the experiment's name, not its id",
             "src/inkbooth/submit.py",
             "def _experiment_id(client: Any, endpoint: Endpoint, settings: cluster.ClusterConfig) -> str:\n",
             "def _experiment_id(client: Any, endpoint: Endpoint, settings: cluster.ClusterConfig) -> str:\n"
             "    return endpoint.experiment\n",
             ("tests/test_submit.py::test_schedule_creates_a_recurring_run_in_one_experiment",)),
    # Item 7: thresholds from measurements.
    Mutation("int8-parity-against-itself", "INT8 text is compared with itself, not with fp32's",
             "src/inkbooth/ocr/recognition/export.py",
             "sum(cer(h, r) * len(r) for h, r in zip(text, ref_text)) / total_ref",
             "sum(cer(h, r) * len(r) for h, r in zip(text, text)) / total_ref",
             ("tests/test_ocr_model.py::test_export_parity_on_50_images",)),
    Mutation("heldout-from-training-lines", "the held-out CER is measured on training lines",
             "src/inkbooth/ocr/training/finetune.py",
             "enumerate(lineset.heldout[:config.eval_lines])", "enumerate(lineset.train[:config.eval_lines])",
             ("tests/test_finetune.py::test_finetune_cli_on_200_labelled_lines",)),
    # Item 8: ocr-train end to end in the default run.
    Mutation("evaluate-reads-the-pointer", "the evaluate step reads the ONNX model's pointer, not the model",
             "components/ocr_evaluate/component.py",
             "evaluate_trocr(lineage.target(onnx_model), ", "evaluate_trocr(onnx_model.path, ",
             ("tests/test_finetune.py::test_ocr_train_pipeline_end_to_end_on_s3",)),
    # Issue 20: DreamBooth that visibly personalises.
    Mutation("unet-not-stepped", "DreamBooth training computes its loss but never steps the optimizer",
             "src/inkbooth/dreambooth/train.py", "            optimizer.step()\n", "            pass\n",
             ("tests/test_db_fidelity.py::test_a_few_dozen_steps_raise_subject_fidelity_on_every_seed",)),
    Mutation("prior-term-dropped", "the prior-preservation term weighs nothing in the loss",
             "src/inkbooth/dreambooth/train.py", "prior_weight=config.prior_loss_weight", "prior_weight=0.0",
             ("tests/test_db_fidelity.py::test_without_the_prior_term_the_class_drifts_to_the_subject",)),
    Mutation("export-ignores-selection", "the export registers the last step whatever the evaluation selected",
             "src/inkbooth/dreambooth/export.py",
             'pipe = load_candidate(source, row["source"], base, "cpu", torch.float32)',
             'pipe = load_candidate(source, "model", base, "cpu", torch.float32)',
             ("tests/test_db_evaluate.py::test_export_registers_the_selected_step_and_says_why",)),
]


def make_copy(root: Path) -> Path:
    """The working tree's code in ``root``, importable as the ``inkbooth`` package from there."""
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, root / name)
    # The package maps components/ and pipelines/ to inkbooth.components / inkbooth.pipelines
    # (package-dir); in the copy they are found inside the package, ahead of the editable install.
    for sub in ("components", "pipelines"):
        (root / "src" / "inkbooth" / sub).symlink_to(root / sub, target_is_directory=True)
    (root / ".inkbooth").mkdir()
    for name in LINKED_DATA:
        if (REPO / ".inkbooth" / name).exists():
            (root / ".inkbooth" / name).symlink_to(REPO / ".inkbooth" / name)
    return root


def environment(root: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)]),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    probe = subprocess.run([sys.executable, "-c", "import inkbooth, inkbooth.components as c; "
                            "print(inkbooth.__file__); print(c.__file__)"],
                           capture_output=True, text=True, env=env, cwd=root, check=True)
    for line in probe.stdout.split():
        if not Path(line).resolve().is_relative_to(root.resolve()):
            raise SystemExit(f"the copy does not shadow the installed package: {line}")
    return env


def run_tests(root: Path, env: dict[str, str], tests: list[str], timeout: float) -> tuple[set[str], str]:
    """The tests (node ids as given, parameters folded) that failed or errored, and pytest's summary."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *tests]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=timeout)
        out = done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        return {f"(timed out after {timeout:.0f} s)"}, str(e)
    if done.returncode not in (0, 1):  # 2-5: interrupted, internal error, usage error (a test not found)
        raise SystemExit(f"pytest could not run {tests} (exit {done.returncode}):\n{out[-3000:]}")
    failed = set()
    for match in re.finditer(r"^(?:FAILED|ERROR) (\S+)", out, re.M):
        failed.add(match.group(1).split("[")[0])
    summary = next((line for line in reversed(out.splitlines()) if re.search(r"\d+ (passed|failed|error)", line)), "")
    if done.returncode == 1 and not failed:
        raise SystemExit(f"pytest failed but named no failed test:\n{out[-3000:]}")
    return failed, summary.strip("= ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for one pytest run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"no mutation named {sorted(unknown)}; known: {[m.name for m in MUTATIONS]}")
    rows, bad = [], False
    with tempfile.TemporaryDirectory(prefix="inkbooth-mutations-") as tmp:
        root = make_copy(Path(tmp) / "tree")
        env = environment(root)
        all_tests = sorted({t for m in chosen for t in m.tests})
        began = time.monotonic()
        failing, summary = run_tests(root, env, all_tests, args.timeout)
        print(f"unmutated: {summary} ({time.monotonic() - began:.0f} s)", flush=True)
        if failing:
            print(f"these fail without any mutation, fix them first: {sorted(failing)}")
            return 1
        for m in chosen:
            target = root / m.file
            original = target.read_text()
            if original.count(m.old) != 1:
                rows.append((m, [], "snippet not found" if m.old not in original else "snippet not unique", 0.0))
                bad = True
                continue
            target.write_text(original.replace(m.old, m.new))
            began = time.monotonic()
            try:
                failed, summary = run_tests(root, env, list(m.tests), args.timeout)
            finally:
                target.write_text(original)
            took = time.monotonic() - began
            caught = bool(failed)
            bad |= not caught
            rows.append((m, sorted(failed), "yes" if caught else "NO", took))
            print(f"{m.name}: {'caught' if caught else 'NOT caught'} ({summary}, {took:.0f} s)", flush=True)
    print()
    print("| mutation | what it breaks | tests expected to fail | tests that failed | caught | s |")
    print("|---|---|---|---|---|---|")
    for m, failed, caught, took in rows:
        expected = "<br>".join(t.split("::")[-1] for t in m.tests)
        got = "<br>".join(t.split("::")[-1] for t in failed) or "-"
        print(f"| {m.name} | {m.why} ({m.file}) | {expected} | {got} | {caught} | {took:.0f} |")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
