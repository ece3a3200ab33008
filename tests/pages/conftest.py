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


def map_data(at: AppTest) -> list[tuple[str | None, dict]]:
    """The page's WebGL maps (ui/scatter.py) as (key, data the browser gets)."""
    maps = [c for c in at.get("bidi_component") if c.proto.component_name == "simclr_studio.scatter"]
    return [(c.key, json.loads(c.proto.json)) for c in maps]


def read_column(url: str, dtype: str | None) -> np.ndarray | str:
    """A map column as the browser reads it (from the app's static/maps folder)."""
    from ui.shell import MAPS_DIR

    raw = (MAPS_DIR / url.rsplit("/", 1)[1]).read_bytes()
    return raw.decode() if dtype is None else np.frombuffer(raw, dtype=dtype)


def as_layers(d: dict) -> dict:
    """A WebGL map's columns as deck.gl-like layers of point dicts ("points", "neighbours", "query"), so
    tests read both maps alike: x, y, r, g, b, a, row, label (class name or "unlabelled"), path, and the
    tooltip's other columns by name (pred, conf, score) as numbers. With ``neighbours`` the rings are what
    the browser finds: the picked row of the graph's columns, where those points are plotted."""
    xy = read_column(d["xy"], "<f4").reshape(-1, 2)
    rgba = read_column(d["rgba"], "u1").reshape(-1, 4)
    rows = read_column(d["rows"], "<i4") if d["rows"] else np.arange(len(xy))
    label = d["columns"].get("label")
    ids = read_column(label["url"], "<i2") if label else np.full(len(xy), -1)
    names = label["names"] if label else []
    paths = read_column(d["paths"], None).split("\n") if d["paths"] else None
    dtypes = {"int16": "<i2", "uint8": "u1", "float32": "<f4"}
    more = {k: read_column(c["url"], dtypes[c["dtype"]]) for k, c in d["columns"].items() if k != "label"}
    points = [
        {
            "x": float(xy[i, 0]),
            "y": float(xy[i, 1]),
            "r": int(rgba[i, 0]),
            "g": int(rgba[i, 1]),
            "b": int(rgba[i, 2]),
            "a": int(rgba[i, 3]),
            "row": int(rows[i]),
            "label": names[ids[i]] if 0 <= ids[i] < len(names) else "unlabelled",
            **({"path": paths[i]} if paths else {}),
            **{k: v[i].item() for k, v in more.items()},
        }
        for i in range(len(xy))
    ]
    m, focus = d["marked"], d["focus"]
    if d.get("neighbours") and d.get("focus_row") is not None:  # the map reads the pick's row of the graph itself
        nb, row, at = d["neighbours"], d["focus_row"], {int(r): i for i, r in enumerate(rows)}
        graph_row = read_column(nb["rows"], "<i4").reshape(-1, nb["k"])[row]
        m = [float(v) for r in graph_row if r >= 0 and r != row and int(r) in at for v in xy[at[int(r)]]]
        focus = xy[at[row]].tolist() if row in at else None
    marked = [{"x": m[i], "y": m[i + 1]} for i in range(0, len(m), 2)]
    query = [{"x": focus[0], "y": focus[1]}] if focus else []
    layers = [{"id": "points", "data": points}, {"id": "neighbours", "data": marked}, {"id": "query", "data": query}]
    return {"layers": layers, "map": d}


def deck_specs(at: AppTest) -> list[tuple[str | None, dict]]:
    """The page's maps as (key, spec dict): deck.gl charts (3-D) and the WebGL maps (2-D, see as_layers)."""
    decks = [(c.key, json.loads(c.proto.json)) for c in at.get("deck_gl_json_chart")]
    return decks + [(key, as_layers(d)) for key, d in map_data(at)]


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
