"""The live dashboard in a real browser during a real 16-node simulation.

`scatterbrained simulate CONFIG --dashboard` runs 16 nodes (memory backend, digits) with a
kill, a policy mode switch and a pause; headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium with explicit paths: nothing downloads a browser)
opens the printed URL while the run goes. The page must show 16 nodes, the killed and the
paused node marked, the switched node's new mode and an accuracy curve that grows while the
run goes.
A screenshot is saved to the test's folder (and to ``$SB_ARTIFACTS`` when set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
EPOCHS = 12
KILLED, SWITCHED, PAUSED = "n005", "n003", "n007"
CONFIG = f"""
nodes = 16
epochs = {EPOCHS}
dataset = "digits"
topology = "random-regular:k=4"
policies = {{"3" = "after-epochs:epochs=3,then=seeding"}}
faults = [{{epoch = 4, node = 5, action = "kill"}}, {{epoch = 8, node = 7, action = "pause"}}]
"""
#: What the test reads from the page (DOM attributes the page keeps for scripts and tests).
PAGE_STATE = """
const q = (s) => [...document.querySelectorAll(s)];
const mean = document.querySelector('#accuracy polyline.mean');
return {
  status: document.body.dataset.status,
  epoch: Number(document.body.dataset.epoch),
  accuracy: document.getElementById('stat-acc').textContent,
  nodes: q('#topology g.node').map((g) => ({
    id: g.dataset.node, mode: g.dataset.mode, state: g.dataset.state,
    badge: g.querySelector('text.badge') ? g.querySelector('text.badge').textContent : null,
  })),
  curves: q('#accuracy polyline.curve:not(.mean)').length,
  points: mean ? Number(mean.dataset.points) : 0,
  log: q('#log li').map((li) => li.textContent),
};
"""

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (dev extra)")
pytest.importorskip("aiohttp", reason="needs aiohttp (the dashboard extra)")


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Chromium from explicit paths (Selenium Manager stays offline)."""
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Simulation:
    """``scatterbrained simulate ... --dashboard`` as a process; its output is drained."""

    def __init__(self, config: Path, out: Path) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", SCATTERBRAINED_DISCOVERY="loopback")
        env["PYTHONPATH"] = str(ROOT / "src")
        argv = ["simulate", str(config), "--out", str(out), "--dashboard"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scatterbrained.cli.main", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            # Ctrl-C must reach it even when this test runs where SIGINT is ignored (a
            # background job): Python only turns SIGINT into KeyboardInterrupt from SIG_DFL.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.lines: list[str] = []
        self.url_found = threading.Event()
        self.run_over = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", line)
            if match and not self.url:
                self.url = match.group(1)
                self.url_found.set()
            if "the run is over" in line:
                self.run_over.set()

    def stop(self) -> int:
        """Ctrl-C once the run is over (the dashboard stays up until then); the exit status."""
        self.run_over.wait(120)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
        finally:
            self._reader.join(timeout=5)


def watch(driver: Any, sim: Simulation, timeout: float) -> list[dict[str, Any]]:
    """Read the page every 0.1 s until it says the run finished; every reading, in order."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = driver.execute_script(PAGE_STATE)
        seen.append(state)
        if state["status"] == "finished":
            return seen
        assert sim.proc.poll() is None, "".join(sim.lines[-30:])
        time.sleep(0.1)
    raise AssertionError(f"the page did not show the end of the run within {timeout} s: {seen[-1]}")


def save_screenshot(driver: Any, target: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(1000, int(height) + 40))
    assert driver.save_screenshot(str(target))
    artifacts = os.environ.get("SB_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(target, Path(artifacts) / target.name)


@pytest.mark.timeout(400)
def test_dashboard_shows_a_live_16_node_run_with_a_kill_and_a_mode_switch(
    tmp_path: Path, browser: Any
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    sim = Simulation(config, tmp_path / "run")
    try:
        assert sim.url_found.wait(120), "".join(sim.lines)
        browser.get(sim.url)
        seen = watch(browser, sim, timeout=300)
        final = seen[-1]
        save_screenshot(browser, tmp_path / "dashboard.png")
    finally:
        status = sim.stop()

    nodes = {n["id"]: n for n in final["nodes"]}
    assert len(nodes) == 16 and final["curves"] == 16
    assert nodes[KILLED]["state"] == "killed" and nodes[KILLED]["badge"] == "killed"
    assert sum(n["state"] == "killed" for n in nodes.values()) == 1
    assert nodes[PAUSED]["state"] == "paused" and nodes[PAUSED]["badge"] == "paused"
    assert nodes[PAUSED]["mode"] == "offline"
    assert nodes[SWITCHED]["mode"] == "seeding"
    assert any(f"{SWITCHED} mode peer \u2192 seeding" in line for line in final["log"])
    assert any(f"{KILLED} killed" in line for line in final["log"])
    live = [s["points"] for s in seen if s["status"] != "finished" and s["points"] > 0]
    assert live and max(live) > min(live), f"the curve did not grow while the run went: {live}"
    assert final["points"] == EPOCHS and final["epoch"] == EPOCHS
    summary = json.loads((tmp_path / "run" / "summary.json").read_text("utf-8"))
    assert final["accuracy"] == f"{summary['mean_accuracy']:.3f}"  # not the paused node's
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    assert status == 0, "".join(sim.lines[-30:])
