"""In a real browser (headless Chromium): the report's figures all decode and its page logs no error, and
`mlflow ui` opens the study on its training runs with the arms at the top level."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablation.report.build import build_report
from ablation.tracking.services import free_port
from tests.conftest import SmokeStudy

pytestmark = pytest.mark.slow

PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || (e.target && (e.target.src
  || e.target.href)) || "error")), true);
const __consoleError = console.error;
console.error = (...a) => { window.__errors.push(a.join(" ")); __consoleError(...a); };
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0})),
    errors: window.__errors,
    headings: [...document.querySelectorAll("h2")].map(h => h.textContent.trim()),
  });
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    """The headless browser: Debian's `chromium` (CI installs it); elsewhere the test says it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium package)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")


def dump_dom(url: str, wait_ms: int = 10000) -> str:
    """The page's DOM after it loaded and `wait_ms` of virtual time passed."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--virtual-time-budget={wait_ms}"]
    proc = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_report_renders_every_figure_without_an_error(smoke_study: SmokeStudy, tmp_path: Path) -> None:
    shutil.copy(smoke_study.root / "mlflow.db", tmp_path / "mlflow.db")
    paths = build_report("smoke", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", out_dir=str(tmp_path / "r"))
    page = paths.html.read_text()
    probe = paths.html.with_name("probe.html")  # beside it, so the figures resolve as they do for a reader
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', dump_dom(probe.as_uri()), re.S)
    assert found, "the page never finished loading"
    check = json.loads(html.unescape(found.group(1)))
    figures = sorted(p.name for p in paths.html.parent.glob("*.png"))
    assert len(check["images"]) >= len(figures) >= 5
    assert all(image["ok"] for image in check["images"]), [i for i in check["images"] if not i["ok"]]
    assert check["errors"] == []
    assert check["headings"][0] == "Verdict"  # the answer first, as a results section opens


def test_mlflow_ui_opens_the_study_on_its_runs_with_the_arms_on_top(smoke_study: SmokeStudy, tmp_path: Path) -> None:
    shutil.copy(smoke_study.root / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = MlflowClient(uri).get_experiment_by_name("smoke").experiment_id
    port = free_port()
    ui = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", uri, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and ui.poll() is None, "mlflow ui did not start"
                time.sleep(0.5)
        dom = dump_dom(f"http://127.0.0.1:{port}/#/experiments/{exp}?workflowType=machine_learning", 20000)
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)
    text = re.sub(r"<[^>]+>", " ", dom)
    assert "Runs" in text and "Detect Issues" not in text  # the training runs, not the GenAI overview
    for name in ("smoke", "shared", "unshared"):  # the study run and both arm runs, no expanding needed
        assert re.search(rf"\b{name}\b", text), name
