"""The dashboard in a real headless Chromium: served by `streamlit run`, rendered, checked in the DOM."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autospec.entrypoints.cli import main as cli
from autospec.runs import read_steps
from dashboard.browser import APP, CHARTS_READY, HeadlessChromium, find_chromium, free_port, wait_healthy


def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium for this test")
        pytest.skip("chromium not installed here (CI installs it)")
    return path


@pytest.fixture
def served_run(tmp_path):
    assert cli(["simulate", "--batch-size", "24", "--acceptance", "0.7", "--steps", "600",
                "--runs-dir", str(tmp_path), "--name", "browser-run"]) == 0
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true",
                               "--server.address", "127.0.0.1", "--server.port", str(port),
                               "--browser.gatherUsageStats", "false", "--", "--runs", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield url, tmp_path / "browser-run"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_page_renders_charts_and_the_headline_metric(served_run, tmp_path):
    url, run_dir = served_run
    browser = HeadlessChromium(chromium(), tmp_path / "chromium-profile", free_port())
    try:
        browser.open(url, CHARTS_READY)
        dom = browser.dom()
        shot = browser.screenshot(tmp_path / "dashboard.png")
    finally:
        browser.close()
    records = read_steps(run_dir / "steps.jsonl")
    goodput = sum(r.num_emitted_tokens for r in records) / sum(r.step_time_s for r in records)
    assert f"{goodput:,.1f}" in dom                                     # the headline metric's value
    assert dom.count("vega-embed") >= 4                                  # goodput, spec_len, acceptance, tokens/pass
    assert "browser-run" in dom
    assert shot.stat().st_size > 50_000


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, from /proc/net/tcp and tcp6 (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket tables")
def test_streamlit_run_listens_on_loopback_only_by_default(tmp_path):
    """`streamlit run dashboard/app.py` with no address flag, from another working directory."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true",
                               "--server.port", str(port), "--", "--runs", str(tmp_path)],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        assert listening_addresses(port) == {"0100007F"}                 # 127.0.0.1, and nothing else
    finally:
        server.terminate()
        server.wait(timeout=30)
