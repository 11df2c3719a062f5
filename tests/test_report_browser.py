"""The report in a real browser (headless Chromium): every image loads, nothing scrolls sideways
at 1280 px, and the answer (selected configuration, its interval, the forest plot of the main
rows) is on the first screen.  Skipped where Chromium is not installed, except in CI
(LUS_BROWSER=1, set by .ci/run after installing Debian's chromium + chromium-driver)."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest
from browser_helpers import (
    HEIGHT,
    WIDTH,
    broken_images,
    browser_available,
    build_tiny_report,
    chromium,
    first_screen,
    open_page,
    overflow,
)

pytestmark = pytest.mark.skipif(not browser_available() and os.environ.get("LUS_BROWSER") != "1",
                                reason="needs Debian's chromium and chromium-driver")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    html = build_tiny_report(root)
    summary = json.loads(open(json.loads((root / "args.json").read_text())["summary"]).read())
    with chromium() as driver:
        open_page(driver, html)
        yield driver, html, summary


def test_every_image_loads(page):
    driver, _, _ = page
    n = driver.execute_script("return document.images.length")
    assert n >= 8  # forest plot, figures, galleries and their Grad-CAM maps
    assert broken_images(driver) == []
    assert driver.execute_script("return document.querySelectorAll('.pair figure').length") >= 2


def test_nothing_scrolls_sideways_at_1280_px(page):
    driver, _, _ = page
    scroll_width, client_width = overflow(driver)
    assert client_width <= WIDTH
    assert scroll_width <= client_width, f"the page scrolls sideways: {scroll_width} > {client_width}"


def test_the_answer_is_on_the_first_screen(page):
    driver, _, summary = page
    selected = summary["selected"]
    head = first_screen(driver, ".headline")
    assert head is not None and head["height"] <= HEIGHT
    assert head["bottom"] <= head["height"], head
    assert selected["config_id"] in head["text"]
    acc = selected["test"]["accuracy"]
    interval = f"[{acc['lo']:.2f}, {acc['hi']:.2f}]"
    assert interval in head["text"] and re.search(r"accuracy \d\.\d\d \[", head["text"])
    forest = first_screen(driver, ".top figure img")
    assert forest is not None and forest["width"] > 200
    assert forest["bottom"] <= forest["height"], f"the forest plot ends below the first screen: {forest}"
    assert forest["right"] <= WIDTH


def test_a_broken_image_is_caught(page, tmp_path):
    driver, html, _ = page
    text = html.read_text(encoding="utf-8")
    first = re.search(r'src="data:image/png;base64,([^"]{64})', text)
    bad = base64.b64encode(b"not a png at all").decode()
    broken = tmp_path / "broken.html"
    broken.write_text(text[: first.start(1)] + bad + text[first.end(1):], encoding="utf-8")
    open_page(driver, broken)
    try:
        assert len(broken_images(driver)) >= 1
    finally:
        open_page(driver, html)
