"""Screenshot of the dashboard on a run, for the docs (issue 5).

    python benchmarks/dashboard_screenshot.py --runs runs --run demo-auto --out docs/dashboard.png

Serves `dashboard/app.py` with `streamlit run` on 127.0.0.1, opens it in Debian's headless Chromium
(the same driver the browser test uses), waits until the charts and metrics have rendered and
writes the PNG. The app opens on the newest run, so --run makes the named run the newest first.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dashboard.browser import APP, CHARTS_READY, HeadlessChromium, find_chromium, free_port, wait_healthy  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--run", default=None, help="the run to show (made the newest); default: the newest")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    args = parser.parse_args()
    binary = find_chromium()
    if binary is None:
        parser.error("needs chromium (apt-get install chromium)")
    if args.run:
        os.utime(args.runs / args.run / "steps.jsonl")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true",
                               "--server.address", "127.0.0.1", "--server.port", str(port),
                               "--browser.gatherUsageStats", "false", "--", "--runs", str(args.runs)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        with tempfile.TemporaryDirectory() as profile:
            browser = HeadlessChromium(binary, Path(profile), free_port())
            try:
                browser.open(url, CHARTS_READY)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                browser.screenshot(args.out)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
