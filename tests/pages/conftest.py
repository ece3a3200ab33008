"""Fixtures for the app's page tests: an empty runs folder, or one holding a tiny finished run."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from simclr_core.cli.train import train
from simclr_core.runs.rundir import RunDir

from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _inline_jobs(monkeypatch):
    """Background jobs run inside the page's script here, so one AppTest run shows their result
    (tests/test_jobs.py runs the real worker process, and the browser test uses it)."""
    monkeypatch.setenv("SIMCLR_JOBS", "inline")


@pytest.fixture(scope="session")
def _trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    train(tiny_config(root))  # a 2-epoch run on 64 digits at 16 px: a few seconds
    return root / "runs"


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """An empty runs folder the app reads (through $SIMCLR_RUNS_DIR); cwd is a temp folder."""
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("SIMCLR_RUNS_DIR", str(runs))
    monkeypatch.chdir(tmp_path)
    return runs


@pytest.fixture
def finished_run(runs_dir, _trained) -> RunDir:
    """A copy of a tiny finished run (2 epochs, digits) in the app's runs folder, picked in the sidebar."""
    shutil.copytree(_trained / "tiny", runs_dir / "tiny")
    return RunDir(runs_dir / "tiny")


def app(page: str | None = None, static_serving: bool = True, **session) -> AppTest:
    """The whole app (router + sidebar) switched to ``pages/<page>.py``, run once.

    ``static_serving`` is the server option that .streamlit/config.toml sets (AppTest reads no config file).
    """
    from streamlit import config

    config.set_option("server.enableStaticServing", static_serving)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    for k, v in session.items():
        at.session_state[k] = v
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py")
        at.run()
    return at


def _decode(obj):
    """Plotly JSON with its base64 typed arrays ({"dtype", "bdata", "shape"}) turned back into lists."""
    if isinstance(obj, dict) and "bdata" in obj and "dtype" in obj:
        a = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
        if "shape" in obj:
            a = a.reshape([int(s) for s in str(obj["shape"]).split(",")])
        return a.tolist()
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def deck_specs(at: AppTest) -> list[tuple[str | None, dict]]:
    """The page's deck.gl charts as (key, spec dict)."""
    return [(c.key, json.loads(c.proto.json)) for c in at.get("deck_gl_json_chart")]


def layer(spec: dict, layer_id: str) -> list[dict]:
    """The data rows of one layer of a deck spec ([] when the layer is absent)."""
    return next((lay["data"] for lay in spec["layers"] if lay["id"] == layer_id), [])


def plotly_specs(at: AppTest) -> list[tuple[str | None, dict]]:
    """The page's plotly figures as (key, spec dict), typed arrays decoded to lists."""
    return [(c.key, _decode(json.loads(c.proto.spec))) for c in at.get("plotly_chart")]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No dataset server answers, on every machine (the form checks CIFAR-10 / STL-10 downloads)."""
    from simclr_core.training import precheck
    from ui.cached import host_reachable

    monkeypatch.setattr(precheck, "reachable", lambda host, port=443, timeout=3.0: False)
    host_reachable.clear()


class Queue:
    """Background jobs held in the queue: after :meth:`hold`, a page that needs a new result shows its
    "waiting" state (as in a browser while the worker computes) until :meth:`work` runs them all."""

    def __init__(self, runs: Path, monkeypatch):
        self.runs, self.monkeypatch = runs, monkeypatch

    def hold(self) -> None:
        from simclr_core.explorer import jobs

        self.monkeypatch.setenv("SIMCLR_JOBS", "worker")
        self.monkeypatch.setattr(jobs, "ensure_worker", lambda directory: 0)

    def work(self) -> None:
        from simclr_core.explorer import jobs

        jobs.worker(jobs.jobs_dir(self.runs), parent=None, warm_up=False, idle_exit_s=0)


@pytest.fixture
def queue(runs_dir, monkeypatch) -> Queue:
    return Queue(runs_dir, monkeypatch)
