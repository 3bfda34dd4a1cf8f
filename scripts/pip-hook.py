#!/usr/bin/env python3
"""Build-time pip settings for one image, from this host's pip configuration (``pip config list``).

    python scripts/pip-hook.py VARIANT OUT_DIR [--wheels]

writes into OUT_DIR what ``make images`` hands to the build, and nothing else:

* ``pip.conf``: the index and extra indexes (those that exist), trusted hosts, the certificate
  as ``/run/pip/ca.pem`` and, with ``--wheels``, ``find-links = /run/pip-wheels``;
* ``ca.pem``: a copy of the configured CA bundle;
* ``wheels/``: links to the configured find-links wheels that the variant's lock pins (exactly
  those: a ``torch+cpu`` wheel offered to a CUDA image would be taken over the locked file).

The Dockerfiles mount pip.conf and ca.pem as build secrets and wheels/ as a build volume, for the
one step that runs pip, so none of it reaches a layer of the image. Prints the files it wrote.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent


def pip_config() -> dict[str, str]:
    """`pip config list` as {key: value}, later scopes winning (site over user over global, env last)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                         check=True).stdout
    order = {"global": 0, "user": 1, "site": 2, ":env:": 3}
    found: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        m = re.match(r"^([^.]*)\.([\w-]+)='(.*)'$", line.strip())
        if not m:
            continue
        scope, key, value = m.groups()
        rank = order.get(scope, 0)
        if key not in found or rank >= found[key][0]:
            found[key] = (rank, value)
    for key in ("index-url", "extra-index-url", "find-links", "cert", "trusted-host"):
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env is not None:
            found[key] = (9, env)
    return {k: v for k, (_, v) in found.items()}


def usable_index(url: str) -> bool:
    """Remote indexes always; file:// ones only if they exist (they are not mounted into the build)."""
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https")


def locked_files(variant: str) -> set[tuple[str, str]]:
    lock = REPO / "docker" / variant / "requirements.lock"
    pins = set()
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            pins.add((re.sub(r"[-_.]+", "-", m.group(1)).lower(), m.group(2)))
    return pins


def wheel_pin(path: Path) -> tuple[str, str] | None:
    parts = path.name.split("-")
    if path.suffix != ".whl" or len(parts) < 5:
        return None
    return re.sub(r"[-_.]+", "-", parts[0]).lower(), parts[1]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    variant, out = argv[0], Path(argv[1])
    with_wheels = "--wheels" in argv[2:]
    cfg = pip_config()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    lines = ["[global]"]
    if cfg.get("index-url") and usable_index(cfg["index-url"]):
        lines.append(f"index-url = {cfg['index-url']}")
    extra = [u for u in cfg.get("extra-index-url", "").split() if usable_index(u)]
    if extra:
        lines.append("extra-index-url = " + " ".join(extra))
    if cfg.get("trusted-host"):
        lines.append(f"trusted-host = {cfg['trusted-host']}")
    if cfg.get("cert") and Path(cfg["cert"]).is_file():
        shutil.copyfile(cfg["cert"], out / "ca.pem")
        lines.append("cert = /run/pip/ca.pem")
    if with_wheels:
        wanted = locked_files(variant)
        (out / "wheels").mkdir()
        for folder in cfg.get("find-links", "").split():
            folder = folder.removeprefix("file://")
            for wheel in sorted(Path(folder).glob("*.whl")) if Path(folder).is_dir() else []:
                if wheel_pin(wheel) in wanted:
                    os.link(wheel, out / "wheels" / wheel.name) if os.stat(wheel).st_dev == os.stat(out).st_dev \
                        else shutil.copyfile(wheel, out / "wheels" / wheel.name)
        if any((out / "wheels").iterdir()):
            lines.append("find-links = /run/pip-wheels")
    (out / "pip.conf").write_text("\n".join(lines) + "\n")
    for path in sorted(out.rglob("*")):
        if path.is_file():
            print(path.relative_to(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
