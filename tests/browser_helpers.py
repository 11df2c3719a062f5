"""A tiny report, and headless Chromium (Debian's `chromium` + `chromium-driver`) driven by selenium.

Used by tests/test_report_browser.py and docs/report_screenshot.py (the README's screenshot).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 800  # a laptop's first screen


def browser_available() -> bool:
    return Path(CHROMEDRIVER).exists() and Path(CHROMIUM).exists()


@contextlib.contextmanager
def chromium(width: int = WIDTH, height: int = HEIGHT):
    """A headless Chromium with a fresh profile and no network chatter; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lus-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(120)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, html: Path) -> None:
    driver.get(Path(html).resolve().as_uri())
    # data: URIs decode asynchronously; wait until every image has finished (loaded or failed)
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return [...document.images].every(i => i.complete)"))


def broken_images(driver) -> list[str]:
    """alt texts of the images that did not load (complete but no pixels)."""
    return driver.execute_script(
        "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)")


def overflow(driver) -> tuple[int, int]:
    """(scrollWidth, clientWidth) of the page: scrollWidth > clientWidth means it scrolls sideways."""
    return tuple(driver.execute_script(
        "const e = document.scrollingElement; return [e.scrollWidth, e.clientWidth]"))


def first_screen(driver, selector: str) -> dict:
    """Where an element lies: its rectangle, the viewport height, its text."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); if (!e) return null;"
        "const r = e.getBoundingClientRect();"
        "return {top: r.top, bottom: r.bottom, right: r.right, width: r.width, height: window.innerHeight,"
        " text: e.innerText}", selector)


def build_tiny_report(root: Path) -> Path:
    """A small results folder (tests' fixture files), its evaluation, Grad-CAM tiles and report."""
    import torch
    from test_evaluation import build_results, report_config  # tests/ on sys.path

    from lus_core.cnn.backbones import build_model
    from lus_core.cnn.gradcam import gradcam_maps, gradcam_overlay, write_png
    from lus_core.evaluation.step import run_evaluate
    from lus_core.frames.store import frames_by_id, read_frame_index
    from lus_core.io_utils import read_json, write_json
    from lus_core.report import html as R

    root = Path(root)
    args = build_results(root, n_patients=6, frames_per_video=5, n_boot=100)
    run_evaluate(**args, figures=True)
    summary = read_json(args["out_summary_json"])
    gals = [g for g in summary["galleries"] if "frame_id" in g]
    # Grad-CAM tiles of an untrained scratch CNN (the fixture run has no model files)
    torch.manual_seed(0)
    frames = np.stack(frames_by_id(read_frame_index(args["frame_index_csv"]), [g["frame_id"] for g in gals]))
    maps = gradcam_maps(build_model("scratch", 4, weights="none"), frames, frames.shape[1])
    cam_dir = root / "gradcam"
    entries = []
    for j, (g, f, m) in enumerate(zip(gals, frames, maps, strict=True)):
        png = write_png(cam_dir / f"gradcam_{j:02d}.png", gradcam_overlay(f, m))
        entries.append({"gallery": g["file"], "frame_id": g["frame_id"], "file": png.name,
                        "title": f"Grad-CAM, test frame {g['frame_id']}", "caption": "untrained CNN"})
    write_json(cam_dir / "index.json", entries)
    out = root / "report" / "index.html"
    # a wide csv among the extra tables, as the workflow's confidence metrics are: the page must not widen
    extra = {"gradcam": cam_dir / "index.json", "tables": {"Every column of the matrix": args["out_matrix_csv"]}}
    R.run_report(root / "eval", args["split_json"], report_config(args), out, extra)
    (root / "args.json").write_text(json.dumps({"summary": str(args["out_summary_json"])}))
    return out
