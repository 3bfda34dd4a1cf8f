"""What a local run prints: a line per task and each warning once; every task's full log in a file.

kfp.local streams each task's whole output (its executor input as JSON, every library's INFO lines)
to stdout between lines of its own: the demo printed over 2,000 lines, its summaries at the very
end. ``capture`` sends each task's output to ``<run folder>/logs/<task>.log`` instead, and a
``Display`` prints (on stderr, as progress is, so that stdout keeps only results):

* a line per task (a ParallelFor iteration's named with its index, ``recognize-shard-0``): its name
  as it starts, then its status and seconds as it ends; on a terminal the line counts the seconds
  meanwhile and shows the task's progress bar where it has one. A line that another task's line
  interrupts (parallel shards) ends with "started", and the task gets a second line when it ends;
* each warning a task logs (``WARNING``/``ERROR`` lines, Python warnings), once per run;
* for a task that fails, its last ``TAIL_LINES`` log lines and the path of its full log (with
  ``verbose``, the path: its lines are out already);
* with ``verbose``, every log line of every task as it comes, after the task's name.

kfp.local has no hook for any of this, so ``capture`` swaps a few of its functions (where it runs a
task, starts the task's subprocess, and prints) for the length of one run, one run at a time.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

TAIL_LINES = 40  # a failed task's last log lines printed
NAME_WIDTH = 20  # "generate-prior-0" fits

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# What a task's log says that the user should see once: the KFP executor's log format, and
# Python's warnings ("path:line: SomeWarning: text").
# Searched anywhere in a line: a progress bar's last draw has no newline, so the next log line of the
# task may follow it on the same line.
_LOGGED_WARNING = re.compile(r"\[KFP Executor [^\]]* (?:WARNING|ERROR|CRITICAL)\]: (?P<message>.+)")
_PYTHON_WARNING = re.compile(r"^\S+:\d+: (?P<message>\w*Warning: .+)")
# A tqdm bar ("train:  50%|█████     | 3/6 [00:02<00:02, 1.2step/s]"): the task's progress.
_ITERATION = re.compile(r"-iteration-(\d+)$")
# kfp.local's own line for a task that failed: our line for the task says so.
_TASK_ENDED = re.compile(r"^Task \S+ finished with status")
_PROGRESS = re.compile(r"^(?:(?P<what>[^|]*?): *)?\d+%\|[^|]*\| *(?P<done>\d+)/(?P<total>\d+)")


class Task:
    """One task of a run: its log file and what its terminal line shows."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.started = time.monotonic()
        self.progress = ""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = log_path.open("w", encoding="utf-8", errors="replace", buffering=1)

    @property
    def seconds(self) -> float:
        """Seconds since the task started."""
        return time.monotonic() - self.started

    def write(self, text: str) -> None:
        """Append to the task's log."""
        self._file.write(text)

    def close(self) -> None:
        """Close the task's log (it has ended)."""
        self._file.close()

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        """The task's last ``n`` log lines."""
        self._file.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]


class Display:
    """The run's terminal output. Every method may be called from any of kfp.local's threads."""

    def __init__(self, stream: TextIO | None = None, verbose: bool = False, live: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.verbose = verbose
        # live: redraw the open line (seconds, progress); only where the stream is a terminal.
        self.live = _isatty(self.stream) if live is None else live
        self.title = "run"
        self.failed: list[Task] = []
        self._lock = threading.RLock()
        self._open: Task | None = None  # the task whose line is the unfinished last line
        self._seen: set[str] = set()
        self._folders: set[Path] = set()

    # -- what the run reports

    def run_folder(self, folder: Path) -> None:
        """Name the run's log folder, once per run."""
        with self._lock:
            if folder not in self._folders:
                self._folders.add(folder)
                self._line(f"{self.title}: each task's log in {folder / 'logs'}/")

    def start(self, task: Task) -> None:
        """The task's line, open until it ends or another line comes."""
        with self._lock:
            self._end_open()
            self._write(self._head(task))
            self._open = task
            self.redraw()

    def output(self, task: Task, line: str) -> None:
        """A line of the task's output: to its log, and to the terminal where it is a warning (or
        with ``verbose``)."""
        task.write(line if line.endswith("\n") else line + "\n")
        line = line.rstrip("\r\n")
        found = _LOGGED_WARNING.search(line) or _PYTHON_WARNING.match(line)
        if found:
            self.warn(found["message"], task.name)
        progress = _PROGRESS.match(line.rsplit("\r", 1)[-1])  # a bar redraws itself after a carriage return
        if progress:
            what = (progress["what"] or "").strip()
            task.progress = f"{what} {progress['done']}/{progress['total']}".strip()
        if self.verbose:
            self._line(f"  {task.name}| {line}")

    def warn(self, message: str, where: str) -> None:
        """A warning, printed the first time it comes."""
        message = _ANSI.sub("", message).strip()
        with self._lock:
            if message in self._seen:
                return
            self._seen.add(message)
            self._line(f"  warning ({where}): {message}")

    def end(self, task: Task, ok: bool, outputs: dict[str, Any] | None = None) -> None:
        """The task's status and seconds; if it failed, its last log lines and where its log is.
        Its log gets the status and kfp.local's outputs, and is closed."""
        with self._lock:
            status = f"{'ok' if ok else 'FAILED':<6} {task.seconds:6.1f} s"
            tail = [] if ok or self.verbose else task.tail()
            if self._open is task:
                self._write(("\r" + self._head(task) if self.live else "") + status + _CLEAR_EOL * self.live + "\n")
                self._open = None
            else:
                self._line(self._head(task) + status)
            if not ok:
                self.failed.append(task)
                for line in tail:
                    self._line(f"    {line}")
                self._line(f"  {task.name}'s full log: {task.log_path}")
        task.write(f"# {task.name}: {'SUCCESS' if ok else 'FAILURE'} after {task.seconds:.1f} s\n")
        if outputs:
            from kfp.local import logging_utils

            task.write("# outputs:\n" + "\n".join(_ANSI.sub("", line) for line in
                                                  logging_utils.make_log_lines_for_outputs(outputs)) + "\n")
        task.close()

    def redraw(self) -> None:
        """On a terminal, redraw the open line with the task's seconds and progress so far."""
        with self._lock:
            task = self._open
            if not self.live or task is None:
                return
            text = f"{self._head(task)}{task.seconds:5.0f} s  {task.progress}".rstrip()
            width = shutil.get_terminal_size((80, 24)).columns - 1
            self._write("\r" + text[:width] + _CLEAR_EOL)

    # -- writing

    def _head(self, task: Task) -> str:
        return f"  {task.name:<{NAME_WIDTH}} "

    def _line(self, text: str) -> None:
        with self._lock:
            self._end_open()
            self._write(text + "\n")

    def _end_open(self) -> None:
        """End the open line as a start line: another line comes before its task ends."""
        task, self._open = self._open, None
        if task is not None:
            self._write(("\r" + self._head(task) if self.live else "") + "started" + _CLEAR_EOL * self.live + "\n")

    def _write(self, text: str) -> None:
        if self.stream is not sys.stdout:
            sys.stdout.flush()  # what the caller printed before comes first
        self.stream.write(text)
        self.stream.flush()


_CLEAR_EOL = "\x1b[K"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


_one_run = threading.Lock()

# kfp.local's warnings about its own limits, in the main process: not the user's to fix here.
_KFP_NOTES = [
    (r"Task '.*': settings \[.*\] have no effect in the current local runner", UserWarning),  # resources: cluster only
    (r".*non-Python base image", RuntimeWarning),  # our images are not named "python"; locally none is used
    (r"It looks like you're using the remote file", UserWarning),  # our steps read s3:// themselves
]


@contextlib.contextmanager
def capture(display: Display, title: str = "run") -> Iterator[Display]:
    """Run kfp.local (``local.init`` done, SubprocessRunner) with its output going through ``display``."""
    from kfp.local import logging_utils, status, subprocess_task_handler
    from kfp.local.orchestrator import task_executor

    if not _one_run.acquire(blocking=False):
        raise RuntimeError("a local run is already going on in this process")
    display.title = title
    current = threading.local()  # the task each of kfp.local's threads runs
    execute_single_task = task_executor.execute_single_task
    run_local_subprocess = subprocess_task_handler.run_local_subprocess
    signature = inspect.signature(execute_single_task)

    def execute(*args: Any, **kwargs: Any) -> Any:
        given = signature.bind(*args, **kwargs).arguments
        # A ParallelFor iteration runs as <run>/for-loop-2-iteration-0; its tasks take its index.
        run, *loops = given["pipeline_resource_name"].split("/")
        name = "-".join([given["task_name"], *(m[1] for m in map(_ITERATION.search, loops) if m)])
        folder = Path(given["pipeline_root"]) / run
        display.run_folder(folder)
        task = Task(name, _log_path(folder / "logs", name))
        task.write(f"# {task.name} in {folder}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        current.task = task
        display.start(task)
        try:
            outputs, task_status = execute_single_task(*args, **kwargs)
        except BaseException as e:
            task.write(f"{type(e).__name__}: {e}\n")
            display.end(task, ok=False)
            raise
        finally:
            current.task = None
        display.end(task, ok=task_status == status.Status.SUCCESS, outputs=outputs)
        return outputs, task_status

    def run_subprocess(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        task = getattr(current, "task", None)
        if task is None:
            return run_local_subprocess(full_command=full_command, env_vars=env_vars)
        env = {**os.environ, **env_vars} if env_vars else None
        # Text mode reads tqdm's "\r" redraws as lines: the log keeps each, the display the last.
        with subprocess.Popen(full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", bufsize=1, env=env) as process:
            assert process.stdout is not None
            for line in process.stdout:
                display.output(task, line)
            return process.wait()

    kfp_dir = str(Path(logging_utils.__file__).parent)

    def kfp_records(record: logging.LogRecord) -> bool:
        """kfp.local logs on the root logger: what a task did is in our lines and its log; its
        warnings and errors are shown once."""
        if not record.pathname.startswith(kfp_dir):
            return True
        if record.levelno >= logging.WARNING and not _TASK_ENDED.match(_ANSI.sub("", record.getMessage())):
            display.warn(record.getMessage(), "kfp.local")
        return False

    swaps = [
        (task_executor, "execute_single_task", execute),
        (subprocess_task_handler, "run_local_subprocess", run_subprocess),
        # kfp.local's own printing: swapping builtins.print (racy across parallel tasks) and the
        # root logger's handlers, horizontal rules.
        (logging_utils, "local_logger_context", contextlib.nullcontext),
        (logging_utils, "indented_print", contextlib.nullcontext),
        (logging_utils, "print_horizontal_line", lambda: None),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in swaps]
    root = logging.getLogger()
    # logging.info() with no handler on the root configures one (basicConfig); lastResort is what
    # would print a warning then anyway.
    fallback = logging.lastResort if not root.handlers and logging.lastResort else None
    ticker_stop = threading.Event()
    ticker = threading.Thread(target=_tick, args=(display, ticker_stop), daemon=True, name="inkbooth-runlog")
    try:
        for module, name, value in swaps:
            setattr(module, name, value)
        root.addFilter(kfp_records)
        if fallback is not None:
            root.addHandler(fallback)
        if display.live:
            ticker.start()
        with warnings.catch_warnings():
            for message, category in _KFP_NOTES:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield display
    finally:
        ticker_stop.set()
        if ticker.is_alive():
            ticker.join()
        with display._lock:
            display._end_open()
        if fallback is not None:
            root.removeHandler(fallback)
        root.removeFilter(kfp_records)
        for module, name, value in saved:
            setattr(module, name, value)
        _one_run.release()


def _tick(display: Display, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        display.redraw()


def _log_path(folder: Path, task_name: str) -> Path:
    """``<folder>/<task>.log``; a name a run has logged already (a task in two sub-DAGs) gets a number."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", task_name) or "task"
    path, n = folder / f"{safe}.log", 1
    while path.exists():
        n += 1
        path = folder / f"{safe}-{n}.log"
    return path


def failure_message(display: Display, error: BaseException) -> str:
    """One line for a failed run: the task that failed and where its log is (else kfp.local's
    message, without its colours)."""
    if display.failed:
        first = display.failed[0]
        others = [t.name for t in display.failed[1:]]
        also = f" (then {', '.join(others)})" if others else ""
        return f"{display.title} failed at task {first.name}{also}; its log: {first.log_path}"
    return _ANSI.sub("", str(error))
