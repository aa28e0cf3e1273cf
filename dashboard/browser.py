"""A minimal Chrome DevTools Protocol driver for headless Chromium, and the helpers to serve the
dashboard to it (used by the browser test and benchmarks/dashboard_screenshot.py).

Chromium's own --dump-dom and --screenshot fire at page load, before a Streamlit page has
rendered over its websocket, so the browser test drives the page instead: navigate, wait until
an expression holds, then read the DOM or capture a PNG.
"""
from __future__ import annotations

import base64
import itertools
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--window-size=1500,1400"]


class HeadlessChromium:
    def __init__(self, binary: str, profile_dir: Path, port: int):
        self.port = port
        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile_dir}",
                                         f"--remote-debugging-port={port}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._connection = connect(self._page_socket(), max_size=None, open_timeout=30)
        self.ws = self._connection.__enter__()
        self._ids = itertools.count(1)

    def _page_socket(self, timeout_s: float = 30) -> str:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError("chromium's DevTools endpoint did not come up")

    def call(self, method: str, **params) -> dict:
        message_id = next(self._ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str, ready: str, timeout_s: float = 90) -> None:
        """Navigate and wait until the JavaScript expression `ready` is true."""
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.evaluate(ready):
                return
            time.sleep(0.5)
        raise AssertionError(f"page never satisfied: {ready}")

    def dom(self) -> str:
        return self.evaluate("document.documentElement.outerHTML")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._connection.__exit__(None, None, None)
        self.process.terminate()
        self.process.wait(timeout=30)


APP = str(Path(__file__).resolve().parent / "app.py")
CHARTS_READY = ("document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= 4 && "
                "document.querySelectorAll('[data-testid=stMetricValue]').length >= 5")


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 90) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"streamlit did not become healthy at {url}")
