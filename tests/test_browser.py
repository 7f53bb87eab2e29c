"""audit.html and the sweep's report.html in a real browser (headless Chromium).

Each page is opened from a copy with a probe script prepended: it records script
errors, failed resource loads and console.error calls, and on load writes the state
of every image (a broken one has naturalWidth 0) into the DOM, which ``--dump-dom``
prints. Chromium's own console log (``--enable-logging=stderr``) must be silent too. A
screenshot of each page is kept under pytest's temporary ``artifacts`` folder (and in
``$MIA_TEST_ARTIFACTS`` when set). A page with a broken image and a throwing script
proves the probe catches both. Without Chromium every test here is skipped, saying so:
install it with ``.ci/system_packages.sh`` (Debian's ``chromium`` package).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="headless Chromium not installed: run .ci/system_packages.sh "
                            "(apt-get install -y chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000"]

PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__errors.push(t && t !== window && t.tagName ? "failed to load " + t.tagName + " "
    + String(t.src || t.href).slice(-80) : String(e.message));  // the end holds the name
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments);
};
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var probe = document.createElement("pre");
  probe.id = "__probe";
  probe.textContent = JSON.stringify({
    images: images.map(function (i) { return {alt: i.alt, width: i.naturalWidth,
                                              complete: i.complete}; }),
    errors: window.__errors, title: document.title,
    textLength: document.body.innerText.length});
  document.body.appendChild(probe);
});
</script>
"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def open_in_browser(page: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    """(what the probe saw, Chromium's console lines) for ``page``."""
    probed = page.with_name(f"probed_{page.name}")
    text = page.read_text()
    probed.write_text(re.sub(r"<head>", "<head>" + PROBE, text, count=1))
    run = _chromium(["--dump-dom", probed.as_uri()], tmp_path / "profile_dom")
    found = re.search(r'<pre id="__probe">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the page never fired load; stderr: {run.stderr[-2000:]}"
    # Chromium logs every console message as "...:INFO:CONSOLE:<line>] ..." (older
    # releases "CONSOLE(<line>)"); the pages under test log nothing at all.
    console = [line for line in run.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]
    return json.loads(html.unescape(found.group(1))), console


def screenshot(page: Path, artifacts: Path) -> Path:
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / f"{page.stem}.png"
    _chromium([f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
              artifacts / "profile_shot")
    shutil.rmtree(artifacts / "profile_shot", ignore_errors=True)
    keep = os.environ.get("MIA_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    return shot


def assert_renders_clean(page: Path, tmp_path: Path, min_images: int) -> None:
    probe, console = open_in_browser(page, tmp_path)
    assert probe["errors"] == [] and console == [], (probe["errors"], console)
    assert len(probe["images"]) >= min_images
    broken = [i["alt"] for i in probe["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == []
    assert probe["textLength"] > 200
    shot = screenshot(page, tmp_path / "artifacts")
    assert shot.stat().st_size > 20_000  # a blank 1200x1600 PNG is far smaller


def test_the_probe_catches_a_broken_image_and_a_script_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><title>bad</title></head><body>"
                    '<img src="missing.png" alt="gone"><script>undefinedFunction();</script>'
                    "</body></html>")
    probe, console = open_in_browser(page, tmp_path)
    assert [i["width"] for i in probe["images"]] == [0]
    assert any("missing.png" in e for e in probe["errors"])
    assert any("undefinedFunction" in e for e in probe["errors"])
    assert any("undefinedFunction" in line for line in console)


def test_audit_page_renders_with_its_figure(tmp_path):
    from analysis.audit_page import write_audit_page

    summary = pd.DataFrame({
        "method": ["none", "l1_unstructured", "l1_unstructured", "slimming"],
        "sparsity": [0.0, 0.5, 0.9, 0.5], "defense": "none", "strength": 0.0,
        "test_acc": [0.95, 0.94, 0.81, 0.93], "attack": ["lira", "rmia", "conf", "lira"],
        "auc": [0.70, 0.58, 0.52, 0.66], "auc_lo": [0.66, 0.54, 0.49, 0.62],
        "auc_hi": [0.74, 0.62, 0.55, 0.70], "tpr": [0.05, 0.03, 0.01, 0.04],
        "tpr_lo": [0.02, 0.01, 0.0, 0.01], "tpr_hi": [0.08, 0.05, 0.02, 0.07],
        "delta_auc": [0.0, -0.12, -0.18, -0.04], "delta_auc_lo": [0.0, -0.16, -0.22, -0.08],
        "delta_auc_hi": [0.0, -0.08, -0.14, 0.0], "delta_tpr_at_1pct_fpr": float("nan"),
        "delta_tpr_at_1pct_fpr_lo": float("nan"), "delta_tpr_at_1pct_fpr_hi": float("nan")})
    page = write_audit_page(summary, tmp_path / "audit", title="Audit of model.pt on digits")
    assert_renders_clean(page, tmp_path, min_images=1)


def test_sweep_report_renders_with_every_figure(tmp_path):
    from analysis.report import generate_report
    from tests.fixtures_results import write_synthetic_results

    root = write_synthetic_results(tmp_path / "results", sparsities=(0.5, 0.9),
                                   strengths=(0.0, 4.0))
    generate_report(root)
    assert_renders_clean(root / "report.html", tmp_path, min_images=3)
