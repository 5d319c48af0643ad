"""``DistillationReport.to_html``: one self-contained page, its content, and its images visible in Chromium.

The browser part is skipped (with the reason) where Chromium or Playwright is missing; CI sets
CSKD_VIZ_REQUIRE_BROWSER=1, which turns that skip into a failure. Its screenshot goes to
``test-artifacts/analysis/report.png``.
"""

from __future__ import annotations

import re

import pytest
import torch

from cskd_viz.analysis import compare
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, ROOT, _skip_or_fail

ARTIFACTS = ROOT / "test-artifacts" / "analysis"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    g = torch.Generator().manual_seed(4)
    teacher = 3.0 * torch.randn(400, 6, generator=g)
    students = {
        "kd <b>&": teacher + torch.randn(400, 6, generator=g),
        "cskd": teacher + 0.5 * torch.randn(400, 6, generator=g),
    }
    targets = torch.randint(0, 6, (400,), generator=g)
    names = ["ant", "bee", "<script>cat</script>", "dog", "eel", "fox"]
    report = compare(teacher, students, targets, class_names=names, batch_size=16)
    path = report.to_html(tmp_path_factory.mktemp("html") / "nested" / "report.html", k=3)
    return report, path


def test_page_is_self_contained_and_complete(page):
    report, path = page
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)  # nothing to fetch
    assert len(sources) == len(report.figures(k=3)) == 5
    assert text.count("What to look at") == 6  # the summary and each figure
    for heading in ("Summary", "The 3 classes each student tracks worst", "Most frequent top-1 disagreements"):
        assert heading in text
    assert "<script>" not in text and "&lt;script&gt;cat&lt;/script&gt;" in text  # user names are escaped
    assert "kd &lt;b&gt;&amp;" in text
    assert not list(path.parent.glob(".*partial"))


def test_page_shows_its_images_in_chromium(page):
    _, path = page
    if not CHROMIUM.exists():
        _skip_or_fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package to run the browser test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed: pip install -e .[dev]")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            tab.goto(path.as_uri(), timeout=60_000)
            tab.wait_for_load_state("load")
            images = tab.evaluate(
                """() => Array.from(document.images).map(img => {
                    const box = img.getBoundingClientRect();
                    return {ok: img.complete && img.naturalWidth > 100 && img.naturalHeight > 100,
                            shown: box.width > 100 && box.height > 100};
                })"""
            )
            title = tab.title()
            tab.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(images) == 5 and all(i["ok"] and i["shown"] for i in images), images
    assert title == "CSKD distillation report"
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
