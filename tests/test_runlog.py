"""What a local run prints (``inkbooth.runlog``): a line per task, warnings once, a failed task's
last log lines; every task's full log in a file. And the library messages silenced at their source."""

import io
import logging
import re

import pytest
from PIL import Image

from inkbooth import quiet, runlog, runs


def _display(**kw) -> tuple[runlog.Display, io.StringIO]:
    out = io.StringIO()
    return runlog.Display(stream=out, **kw), out


def _task(tmp_path, name: str) -> runlog.Task:
    return runlog.Task(name, tmp_path / "logs" / f"{name}.log")


def test_a_task_is_one_line_unless_another_starts_meanwhile(tmp_path):
    display, out = _display(live=False)
    plan = _task(tmp_path, "plan")
    display.start(plan)
    display.output(plan, "[KFP Executor 2026-01-01 10:00:00,000 INFO]: planned 2 shards\n")
    display.end(plan, ok=True)
    a, b = _task(tmp_path, "shard-0"), _task(tmp_path, "shard-1")
    display.start(a)
    display.start(b)
    display.end(b, ok=True)
    display.end(a, ok=True)
    lines = out.getvalue().splitlines()
    assert [re.sub(r"\d+\.\d s$", "N s", line).split() for line in lines] == [
        ["plan", "ok", "N", "s"], ["shard-0", "started"], ["shard-1", "ok", "N", "s"], ["shard-0", "ok", "N", "s"]]
    assert "planned 2 shards" not in out.getvalue(), "a task's INFO lines go to its log only"
    log = (tmp_path / "logs" / "plan.log").read_text()
    assert "planned 2 shards" in log and "# plan: SUCCESS after" in log


def test_each_warning_is_printed_once_with_the_task_that_logged_it_first(tmp_path):
    display, out = _display(live=False)
    a, b = _task(tmp_path, "shard-0"), _task(tmp_path, "shard-1")
    display.start(a)
    display.start(b)
    for task in (a, b, a):
        display.output(task, "[KFP Executor 2026-01-01 10:00:00,000 WARNING]: scan.pdf: page 3 is empty\n")
    display.output(b, "/x/y.py:12: UserWarning: the font has no glyph for U+2028\n")
    display.output(b, "  warnings.warn(\n")
    printed = out.getvalue().splitlines()
    assert [line for line in printed if "warning" in line] == [
        "  warning (shard-0): scan.pdf: page 3 is empty",
        "  warning (shard-1): UserWarning: the font has no glyph for U+2028"]
    assert (tmp_path / "logs" / "shard-1.log").read_text().count("page 3 is empty") == 1


def test_verbose_prints_every_log_line_after_its_task(tmp_path):
    display, out = _display(live=False, verbose=True)
    task = _task(tmp_path, "train")
    display.start(task)
    display.output(task, "step 1\n")
    display.end(task, ok=True)
    assert out.getvalue().splitlines()[:2] == ["  train                started", "  train| step 1"]


def test_on_a_terminal_the_open_line_shows_seconds_and_the_progress_bar(tmp_path):
    display, out = _display(live=True)
    task = _task(tmp_path, "train")
    display.start(task)
    display.output(task, "train:  50%|█████     | 3/6 [00:02<00:02, 1.2step/s]\n")
    display.redraw()
    assert out.getvalue().endswith("\r  train                    0 s  train 3/6\x1b[K")
    display.end(task, ok=True)
    assert re.search(r"\r  train +ok +\d+\.\d s\x1b\[K\n$", out.getvalue())


def _one_document(folder) -> None:
    folder.mkdir()
    Image.new("L", (64, 32), 255).save(folder / "page.png")


def test_a_failing_task_prints_its_last_40_log_lines_and_the_path_of_its_log(tmp_path, capfd):
    """A real run through kfp.local: the model is a hub id neither reachable (tests are offline) nor
    cached, so pin-model fails; plan-ocr succeeds beside it and the exit task runs."""
    _one_document(tmp_path / "documents")
    run = runs.OCRRun(model="inkbooth-tests/not-cached", documents=str(tmp_path / "documents"),
                      output=str(tmp_path / "out"))
    with pytest.raises(RuntimeError) as failed:
        runs.run_local("ocr", run, tmp_path / "root")
    (log,) = (tmp_path / "root").glob("inkbooth-ocr-*/logs/pin-model.log")
    assert str(failed.value) == f"ocr pipeline failed at task pin-model; its log: {log}"
    printed = capfd.readouterr()
    lines = (printed.out + printed.err).splitlines()
    logged = log.read_text().splitlines()
    assert len(logged) > 50, "the log is longer than what is printed of it"
    at = next(i for i, line in enumerate(lines) if re.fullmatch(r"  pin-model +FAILED +\d+\.\d s", line))
    assert lines[at + 1:at + 41] == [f"    {line}" for line in logged[-41:-1]], "its last 40 lines (before our footer)"
    assert lines[at + 41] == f"  pin-model's full log: {log}"
    assert "cannot pin the hub revision" in lines[at + 40]
    assert logged[-1].startswith("# pin-model: FAILURE after")
    # The other tasks: a line each, their output in their logs only.
    assert any(re.fullmatch(r"  plan-ocr +ok +\d+\.\d s", line) for line in lines)
    assert any(re.fullmatch(r"  finish-run +ok +\d+\.\d s", line) for line in lines)
    assert len(lines) == 41 + 6, "\n".join(lines)  # the header, 3 task lines, a warning of the exit task
    assert "plan_ocr" not in printed.out + printed.err and "plan_ocr" in (log.parent / "plan-ocr.log").read_text()


def test_kfp_local_is_itself_again_after_a_run(tmp_path):
    from kfp.local import logging_utils, subprocess_task_handler
    from kfp.local.orchestrator import task_executor

    before = (task_executor.execute_single_task, subprocess_task_handler.run_local_subprocess,
              logging_utils.local_logger_context, logging_utils.indented_print, logging.getLogger().filters[:])
    display, _ = _display(live=False)
    with pytest.raises(KeyError, match="the run broke"), runlog.capture(display):
        assert task_executor.execute_single_task is not before[0]
        raise KeyError("the run broke")
    assert (task_executor.execute_single_task, subprocess_task_handler.run_local_subprocess,
            logging_utils.local_logger_context, logging_utils.indented_print,
            logging.getLogger().filters) == before
    with runlog.capture(display):  # and the next run may start
        pass


def test_diffusers_false_alarms_are_silenced_and_its_other_warnings_are_not():
    """Casting a model warns that "modules ... should be kept in float32: []" (none should); and
    optimum-onnx beside optimum makes diffusers warn at import. Filters on those two messages only.
    What the loggers let through is collected by a handler of the test's own on each logger (the
    libraries' stderr handler may hold a stream an earlier test captured)."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    quiet.library_notes()
    unet = UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=1, norm_num_groups=4, sample_size=8,
                                cross_attention_dim=8, attention_head_dim=2,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    logger = logging.getLogger("diffusers.models.modeling_utils")
    imports = logging.getLogger("diffusers.utils.import_utils")
    seen = Collect()
    levels = (logger.level, imports.level)
    for lg in (logger, imports):
        lg.addHandler(seen)
        lg.setLevel(logging.WARNING)
    (ours,) = [f for f in logger.filters if isinstance(f, quiet._Drop)]
    try:
        unet.to(torch.float16)
        assert not [m for m in seen.messages if "should be kept in float32" in m]
        logger.removeFilter(ours)
        try:
            unet.to(torch.float32)
            assert [m for m in seen.messages if "should be kept in float32: []" in m], \
                "diffusers still warns: the filter does the work"
        finally:
            logger.addFilter(ours)
        seen.messages.clear()
        diffusers_logging.get_logger("diffusers.models.modeling_utils").warning(
            "There are modules in UNet2DConditionModel that should be kept in float32: ['norm']. Casting ...")
        diffusers_logging.get_logger("diffusers.utils.import_utils").warning(
            "Multiple distributions found for package optimum. Picked distribution: optimum-onnx")
        assert any("['norm']" in m for m in seen.messages), "a real list of modules is still reported"
        assert not [m for m in seen.messages if "Multiple distributions" in m]
    finally:
        for lg, level in zip((logger, imports), levels):
            lg.removeHandler(seen)
            lg.setLevel(level)
    quiet.library_notes()
    assert len([f for f in logger.filters if isinstance(f, quiet._Drop)]) == 1, "installed once"


def test_the_onnx_export_does_not_pass_on_optimums_deprecation_warning(tiny_trocr, tmp_path):
    """optimum loads TrOCR through transformers' AutoModelForVision2Seq, which warns that it is
    deprecated; the user cannot act on that, so the export filters that one warning."""
    import warnings

    from inkbooth.ocr.recognition import onnxfiles

    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        onnxfiles.export_optimum(tiny_trocr, tmp_path / "fp32", 17)
    assert (tmp_path / "fp32" / "encoder_model.onnx").is_file()
    assert not [w for w in got if "AutoModelForVision2Seq" in str(w.message)]
    # What optimum calls does warn, here, outside the export's filter.
    from transformers import AutoModelForVision2Seq

    with pytest.warns(FutureWarning, match="AutoModelForVision2Seq` is deprecated"):
        AutoModelForVision2Seq.from_pretrained(tiny_trocr)


def test_a_warning_logged_after_a_progress_bar_on_its_line_is_still_a_warning(tmp_path):
    """tqdm's last draw has no newline: the task's next log line follows it on the same line."""
    display, out = _display(live=False)
    task = _task(tmp_path, "recognize-shard-0")
    display.output(task, "ocr shard 0/3:   0%|          | 0/2 [00:00<?, ?doc/s][KFP Executor 2026-12-05 15:44:21,771 "
                         "WARNING]: corrupt.png: page 1 cannot be decoded\n")
    assert "  warning (recognize-shard-0): corrupt.png: page 1 cannot be decoded" in out.getvalue().splitlines()
