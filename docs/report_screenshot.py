"""Screenshot of the report's first screen (1280 x 800, headless Chromium) -> docs/img/report_first_screen.png.

Run from the repository root (needs Debian's chromium + chromium-driver and selenium):
    PYTHONPATH=$PWD .venv/bin/python docs/report_screenshot.py [OUT_PNG]
The report is the tests' tiny one (fixture results files, the real evaluation and report code,
Grad-CAM of an untrained CNN); a full run's report/index.html can be passed with --html.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from browser_helpers import broken_images, build_tiny_report, chromium, open_page  # noqa: E402

from lus_core.io_utils import atomic_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path, default=REPO / "docs" / "img" / "report_first_screen.png")
    ap.add_argument("--html", type=Path, help="a report to photograph (default: build the tiny one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lus-shot-") as tmp:
        html = args.html or build_tiny_report(Path(tmp))
        with chromium() as driver:
            open_page(driver, html)
            if broken_images(driver):
                raise SystemExit(f"{html}: broken images {broken_images(driver)}")
            with atomic_path(args.out) as part:
                part.write_bytes(driver.get_screenshot_as_png())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
