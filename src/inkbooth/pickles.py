"""What a pickle would import, read without running it: tensor data passes, anything else is refused.

A checkpoint that a trainer resumes from holds pickles (accelerate's ``optimizer.bin``,
``scheduler.bin``, ``random_states_N.pkl``...), and unpickling can call any function the file
names. ``torch.load(weights_only=True)`` (accelerate 1.16's default) refuses such files, but that
is a default of two libraries, and accelerate swallows every error loading the RNG states (a
refused ``random_states_0.pkl`` is skipped silently and the run goes on with other random numbers).
So a checkpoint is read here first, opcode by opcode (``pickletools``, nothing is executed), and
refused when a pickle in it names a global outside the few that tensor data needs.

Only torch's zip archives (what ``torch.save`` writes) are accepted: the legacy format is several
pickles back to back, raw storage bytes after them, which a scan cannot tell apart reliably.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

# What torch.save of state dicts, optimizer and scheduler states and accelerate's RNG states refer to.
SAFE_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "Size"),
    ("torch", "device"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),  # how protocol 2 pickles bytes (numpy's RNG state)
    *(("torch", f"{t}Storage") for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                          "Byte", "Bool", "ComplexFloat", "ComplexDouble", "Untyped")),
})
# The suffixes of the files that torch.load / accelerate.load_state may unpickle.
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}


class UnsafePickleError(ValueError):
    """A file that could run code, or do something other than rebuild tensors, when unpickled."""


def imported_globals(data: bytes, where: str = "pickle") -> list[tuple[str, str]]:
    """Every (module, name) the pickle ``data`` would import, read without unpickling it.

    Raises UnsafePickleError for what the scan cannot vouch for: a malformed pickle, bytes after its
    end, the copyreg extension registry, or a STACK_GLOBAL whose names are not plain strings.
    """
    found: list[tuple[str, str]] = []
    memo: dict[int, object] = {}
    pushed: list[object] = []  # the values pushed by the latest push ops (strings, else None)
    end = -1
    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.append((module, attr))
            elif name == "STACK_GLOBAL":
                if len(pushed) < 2 or not all(isinstance(v, str) for v in pushed[-2:]):
                    raise UnsafePickleError(f"{where}: imports a global whose name is computed; refused")
                found.append((str(pushed[-2]), str(pushed[-1])))
            elif name in ("EXT1", "EXT2", "EXT4"):
                raise UnsafePickleError(f"{where}: imports through the copyreg extension registry; refused")
            elif name == "STOP":
                end = pos + 1
            # Keep track of which strings sit on top of the stack, through the memo (MEMOIZE, PUT, GET).
            if name in _STRINGS:
                pushed.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
            elif name in _GETS:
                pushed.append(memo.get(arg))
            elif name in _PUTS:
                memo[arg] = pushed[-1] if pushed else None
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name not in ("PROTO", "FRAME"):
                pushed.append(None)
    except UnsafePickleError:
        raise
    except Exception as e:  # genops raises ValueError and friends on malformed input
        raise UnsafePickleError(f"{where}: not a readable pickle ({e}); refused") from None
    if end != len(data):
        raise UnsafePickleError(f"{where}: bytes after the end of the pickle; refused")
    return found


def check_pickle(data: bytes, where: str = "pickle") -> None:
    """Refuse (UnsafePickleError) a pickle that names any global but those tensor data needs."""
    for module, attr in imported_globals(data, where):
        if (module, attr) not in SAFE_GLOBALS:
            raise UnsafePickleError(f"{where}: unpickling it would call {module}.{attr}, which is not tensor data "
                                    "(a pickle can run any code when loaded); refused")


def check_torch_file(path: str | Path) -> None:
    """Refuse a file that ``torch.load`` would unpickle unless it is a torch zip archive of tensor data."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UnsafePickleError(f"{path.name}: not a torch zip archive (a raw or legacy pickle); refused")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if len(names) != len(set(names)):
            # zipfile reads the last of two same-named members, torch's reader may take the first.
            raise UnsafePickleError(f"{path.name}: the archive names a member twice; refused")
        pickles = [n for n in names if n.endswith(".pkl")]
        if not pickles:
            raise UnsafePickleError(f"{path.name}: a zip archive without a pickle is not a torch file; refused")
        for member in pickles:
            check_pickle(archive.read(member), f"{path.name} ({member})")


def check_folder(folder: str | Path) -> list[str]:
    """Check every file under ``folder`` that a torch loader may unpickle; the names checked.

    Raises UnsafePickleError naming the first file refused.
    """
    root = Path(folder)
    checked = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix in PICKLE_SUFFIXES:
            rel = path.relative_to(root).as_posix()
            try:
                check_torch_file(path)
            except UnsafePickleError as e:
                raise UnsafePickleError(f"{rel}: {str(e).removeprefix(path.name + ': ')}") from None
            checked.append(rel)
    return checked
