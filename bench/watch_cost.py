"""What an open Train tab costs the app's server while a run trains: CPU seconds per second of the server.

    python bench/watch_cost.py      # about 5 minutes on 2 CPU cores; needs Chromium (apt-get install chromium)

A real run (the Quick CPU demo's model on the bundled digits, trained for a few epochs first) is watched
by headless Chromium on the Train page, while a stand-in training process holds the run's writer lock and
writes a log step (a metrics line and a status) every P seconds, so the figure is the app's alone:

- P = none: a run alive between log steps (the poll only);
- P = 2 s and 0.5 s: a run that logs often (the page redraws for new metrics, at most every 5 s);
- the same with Streamlit's default ``runner.postScriptGC = true`` (a full garbage collection after each
  script run), which the app's ``.streamlit/config.toml`` turns off.

Results go to BENCHMARKS.md ("an open tab watching a run").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from explorer import start_streamlit  # noqa: E402
from simclr_core.cli.studio import CHROMIUM, CHROMIUM_FLAGS, server_flags  # noqa: E402
from simclr_core.runs.rundir import RunDir  # noqa: E402

# A stand-in for the training process: the run's writer lock, and a log step every PERIOD s (0: none).
TRAINER = """
import sys, time
from simclr_core.runs.rundir import RunDir
run, period = RunDir(sys.argv[1]), float(sys.argv[2])
with run.writer("bench"):
    step = 0
    while True:
        step += 1
        if period:
            run.append_metrics({"step": step, "epoch": 0, "loss": 5.0 - step / 1000, "lr": 0.1, "kind": "step"})
        run.write_status("running", epoch=0, step=step, total_steps=10**6, images_per_s=100.0)
        time.sleep(period or 3600)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(runs: Path, gc: bool) -> tuple[subprocess.Popen, str]:
    """The app with the repository's settings, but ``runner.postScriptGC`` as given."""
    own = ("--runner.postScriptGC", "--server.address")  # these two are set here / by start_streamlit
    flags = [f for f in server_flags(REPO / ".streamlit" / "config.toml") if not f.startswith(own)]
    env = {"SIMCLR_RUNS_DIR": str(runs), "SIMCLR_UMAP_WARM_UP": "0"}
    return start_streamlit(REPO / "app.py", runs.parent, env, [*flags, f"--runner.postScriptGC={str(gc).lower()}"])


def watch(url: str, pid: int, run: RunDir, period: float, seconds: float) -> float:
    """Server CPU-s per s while the Train tab shows ``run`` and a stand-in trainer logs every ``period`` s."""
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER, str(run.path), str(period)], env=env)
    try:
        time.sleep(3)  # alive before the page is drawn, as a run the user watches
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/train?run={run.name}")
            page.get_by_role("button", name="Launch").wait_for(timeout=120_000)
            page.wait_for_timeout(5000)
            before, t0 = cpu_seconds(pid), time.monotonic()
            page.wait_for_timeout(seconds * 1000)
            used = (cpu_seconds(pid) - before) / (time.monotonic() - t0)
            browser.close()
    finally:
        trainer.kill()
        trainer.wait()
    return used


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="how long each case is watched [default: 30]")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        cmd = [sys.executable, "-m", "simclr_core.train", "--config", str(REPO / "configs" / "cpu-demo.yaml")]
        cmd += ["--epochs", "3", "--name", "watched", "--runs-dir", str(runs), "--data-dir", str(Path(tmp) / "data")]
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
        run = RunDir(runs / "watched")
        for gc in (False, True):
            proc, url = serve(runs, gc)
            try:
                for period in (0.0, 2.0, 0.5):
                    share = watch(url, proc.pid, run, period, args.seconds)
                    what = f"postScriptGC={gc}, log step every {period or 'never'} s"
                    results[what] = round(share, 4)
                    print(f"{what:<45} server {share:6.1%} of a core")
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
