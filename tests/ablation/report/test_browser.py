"""In a real browser (headless Chromium): the report's figures all decode and its page logs no error, and
the link `make ui` prints opens the study's comparison in `mlflow ui`."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from mlflow.tracking import MlflowClient

from ablation.cli.main import main
from ablation.report.build import build_report
from ablation.report.publish import VIEW_COLUMNS, VIEW_CURVES
from ablation.tracking.services import free_port
from ablation.tracking.view import arm_colors
from tests.conftest import SmokeStudy, missing

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
    missing("chromium is not installed (apt-get install chromium); CI installs it")


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


class Browser:
    """Headless Chromium driven over its DevTools protocol, so that a test waits for what a page renders
    (MLflow draws a chart card only after fetching its metric histories) instead of a fixed delay."""

    def __init__(self, profile: Path, width: int = 1600, height: int = 1000) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={self.port}",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    self.ws = pages[0]["webSocketDebuggerUrl"]
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and self.proc.poll() is None, "chromium did not start"
            time.sleep(0.3)

    def call(self, method: str, **params: object) -> dict:
        """One DevTools command; its result."""

        async def send() -> dict:
            async with aiohttp.ClientSession() as session, session.ws_connect(self.ws, max_msg_size=0) as ws:
                await ws.send_json({"id": 1, "method": method, "params": params})
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == 1:
                        assert "error" not in data, data
                        return data["result"]
            raise AssertionError(f"{method}: no answer")

        return asyncio.run(send())

    def text_when(self, url: str, ready: Callable[[str], bool], timeout_s: float = 120) -> str:
        """Open `url` and return the page's visible text once `ready(text)` holds (fails after `timeout_s`)."""
        self.call("Page.navigate", url=url)
        deadline, text = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
            text = result["result"].get("value", "")
            if ready(text):
                return text
            time.sleep(1)
        raise AssertionError(f"{url} never got ready; it shows: {text[:3000]}")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_make_ui_prints_one_link_that_opens_the_comparison(
    smoke_study: SmokeStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(smoke_study.root / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    port = free_port()
    assert main(["ui", "--tracking-uri", uri, "--study", "smoke", "--port", str(port), "--print-only"]) == 0
    before = capsys.readouterr().out.splitlines()[0]
    assert "viewStateShareKey" not in before  # no report yet: the study's runs page, no view to open
    build_report("smoke", tracking_uri=uri, out_dir=str(tmp_path / "r"))  # publishes the view
    assert main(["ui", "--tracking-uri", uri, "--study", "smoke", "--port", str(port), "--print-only"]) == 0
    link = capsys.readouterr().out.splitlines()[0].removeprefix("open ")
    exp = MlflowClient(uri).get_experiment_by_name("smoke").experiment_id
    view = "workflowType=machine_learning&viewStateShareKey=compare-smoke"
    assert link == f"http://127.0.0.1:{port}/#/experiments/{exp}/runs?{view}"
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
        browser = Browser(tmp_path / "profile", width=3200)  # wide: the table renders only columns in view
        try:
            table = browser.text_when(
                link, lambda text: ("unshared" in text and VIEW_COLUMNS[0] in text) or "share key" in text
            )
            browser.screenshot(tmp_path / "table.png")
            curves = [f"shared ({key})" for key in VIEW_CURVES]
            charts = browser.text_when(
                f"{link}&compareRunsMode=CHART", lambda text: all(c in text for c in curves) or "share key" in text
            )
            browser.screenshot(tmp_path / "charts.png")
            drawn = browser.call("Runtime.evaluate", expression="document.body.innerHTML")["result"]["value"]
        finally:
            browser.close()
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)
    assert "shared view" in table and "share key" not in table  # the view loaded, not its error
    assert "Detect Issues" not in table  # the training runs, not the GenAI overview
    lines = {line.strip() for line in table.splitlines()}
    assert {"shared", "unshared"} <= lines  # one row per arm run, carrying its finals' means and _std
    for column in VIEW_COLUMNS:  # the headline columns and their seed std are visible, not behind "Columns"
        assert column in table and f"{column}_std" in table, column
    assert "seed1" not in table and "trial0" not in table  # the arms, not their finals or tuning trials
    # every arm is drawn in its own colour, the one its mlflow.runColor tag and the report's figures give it
    colors = arm_colors(["shared", "unshared"])
    rgb = {arm: "rgb({}, {}, {})".format(*(int(c[i : i + 2], 16) for i in (1, 3, 5))) for arm, c in colors.items()}
    assert rgb["shared"] in drawn and rgb["unshared"] in drawn and rgb["shared"] != rgb["unshared"]
    assert (tmp_path / "charts.png").read_bytes()[:4] == b"\x89PNG"
    # the chart tab opens on the per-epoch curves, one line per arm, then the headline bars
    flat = re.sub(r"\s+", " ", charts)
    curves, bars = f"Per epoch, mean over seeds ({len(VIEW_CURVES)})", f"Test (headline) ({len(VIEW_COLUMNS)})"
    assert -1 < flat.find(curves) < flat.find(bars), flat[:3000]
    first = flat[flat.find(curves) : flat.find(bars)]
    for key in VIEW_CURVES:
        assert f"shared ({key})" in first and f"unshared ({key})" in first, key
