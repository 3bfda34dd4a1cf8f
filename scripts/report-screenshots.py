"""Screenshots of the demo's two reports, for the README: `python scripts/report-screenshots.py`.

Run `make demo` first. This starts the embedded object store on the demo's data (`.inkbooth/s3`),
finds each pipeline's report with `inkbooth.reports.locate` (as `inkbooth report` does), and has
headless Chromium (Debian's `chromium`; `scripts/install-chromium.sh` installs it) render the
HTML to a PNG under docs/images/. Chromium runs offline: the reports fetch nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    sys.exit("report-screenshots: no chromium here; run scripts/install-chromium.sh (Debian's chromium package)")


def screenshot(browser: str, html: Path, png: Path, width: int, height: int) -> None:
    """Render ``html`` in a headless browser with no network and no profile left behind."""
    with tempfile.TemporaryDirectory(prefix="inkbooth-chromium-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-extensions", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               "--proxy-server=127.0.0.1:9", "--force-device-scale-factor=1", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={png}", html.as_uri()]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
    if not png.is_file():
        sys.exit(f"report-screenshots: chromium wrote no {png}")


def main(argv: list[str] | None = None) -> int:
    from inkbooth import demo, objectstore, reports, storage

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".inkbooth", help="the demo's folder (make demo: .inkbooth)")
    parser.add_argument("--out", default=str(REPO / "docs" / "images"), help="where the PNGs go")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1900)
    args = parser.parse_args(argv)
    browser = chromium()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    outputs = {"ocr": f"{demo.BUCKET}/ocr/results", "dreambooth": f"{demo.BUCKET}/models/registry/{demo.DB_MODEL}/v2"}
    with objectstore.EmbeddedS3(Path(args.workdir) / "s3") as store, objectstore.environment(store.env()), \
            tempfile.TemporaryDirectory(prefix="inkbooth-shots-") as tmp:
        for name, run_output in outputs.items():
            found = reports.locate(run_output)
            if not found["published"]:
                sys.exit(f"report-screenshots: no report for {run_output}; run `make demo` first")
            page = Path(tmp) / f"{name}.html"
            storage.download(found["html"], page)
            png = out / f"report-{name}.png"
            screenshot(browser, page, png, args.width, args.height)
            print(f"{png}  ({found['html']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
