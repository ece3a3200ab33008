"""The explorer's products: a map's files, the probe's trajectory, and what a user can get wrong."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from simclr_core.cli.train import train
from simclr_core.embeddings import Embeddings
from simclr_core.errors import UserError
from simclr_core.explorer import compute as explore
from simclr_core.explorer import probe, projection
from simclr_core.explorer.specs import MapSpec
from simclr_core.runs.rundir import RunDir

from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    return train(tiny_config(root)).path


@pytest.fixture
def run(trained, tmp_path) -> RunDir:
    shutil.copytree(trained, tmp_path / "tiny")
    return RunDir(tmp_path / "tiny")


def map_spec(run, **kw):
    """A PCA map of the test split, as the page asks for it (a job file's JSON)."""
    return {**MapSpec(run=str(run.path), split="test", feature="h", method="pca", dims=2).to_dict(), **kw}


def test_map_products(run, tmp_path):
    stages = []
    out = explore.map_products(
        map_spec(run, max_points=100, thumbs=str(tmp_path / "thumbs")), lambda s, d, t: stages.append(s)
    )
    emb = Embeddings.load_npz(out["embeddings"])
    g = explore.load_graph(out["graph"])
    assert emb.embeddings.shape[0] == 360 and g.rows.shape == (360, explore.GRAPH_K)
    assert not (g.rows == np.arange(360)[:, None]).any()
    assert len(out["rows"]) == 100 and np.load(out["coords"]).shape == (100, 2)
    thumbs = tmp_path / "thumbs" / out["thumbs"]
    assert out["atlas"] == {"tile": 16, "cols": 64, "count": 360, "files": 1, "ext": "png"}  # 16 px digits
    assert out["thumbs_dir"] == str(thumbs)
    assert sorted(p.name for p in thumbs.iterdir()) == ["atlas-0.png", "atlas.json"]
    assert any("embedding" in s for s in stages) and any("thumbnails" in s for s in stages)
    assert not Path(out["first"]).exists() and "drawing a first map" not in stages  # PCA: the map itself
    # a second call reads every file back: nothing is computed again
    again = explore.map_products(
        map_spec(run, max_points=100, thumbs=str(tmp_path / "thumbs")), lambda s, d, t: stages.append(("again", s))
    )
    assert again == out and not [s for s in stages if isinstance(s, tuple) and "neighbours" in s[1]]


def test_a_damaged_graph_is_built_again(run):
    out = explore.map_products(map_spec(run))
    Path(out["graph"]).write_bytes(b"junk")
    out2 = explore.map_products(map_spec(run))
    assert explore.load_graph(out2["graph"]).rows.shape == (360, explore.GRAPH_K)


def test_trajectory_is_extended_frame_by_frame(run, monkeypatch):
    spec = {"run": str(run.path), "method": "pca", "dims": 2, "params": {}, "thumbs": None}
    out = explore.trajectory_products(spec)
    epochs, coords, _ = explore.load_trajectory(out["trajectory"])
    assert epochs.tolist() == [1, 2] and coords.shape == (2, 360, 2) and out["split"] == "test"
    # a new frame (as a run still training writes it): only that one is projected
    frames = probe.read_frames(run.path)
    np.save(probe.frame_path(run.path, 3), (frames[-1][1] * 1.01).astype(np.float16))
    calls = []
    real = projection.trajectory
    monkeypatch.setattr(explore, "trajectory", lambda fr, *a, **k: calls.append(len(fr)) or real(fr, *a, **k))
    out = explore.trajectory_products(spec)
    epochs, coords, _ = explore.load_trajectory(out["trajectory"])
    assert epochs.tolist() == [1, 2, 3] and calls == [1]
    # the new frame was aligned to the one before: it barely moves
    assert np.abs(coords[2] - coords[1]).mean() < 0.1 * np.abs(coords[1]).mean()


def test_a_half_written_last_frame_is_never_shown(run):
    path = probe.frame_path(run.path, 3)
    raw = probe.frame_path(run.path, 2).read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    out = explore.trajectory_products({"run": str(run.path), "method": "pca", "dims": 2, "params": {}})
    assert explore.load_trajectory(out["trajectory"])[0].tolist() == [1, 2]


def test_runs_without_frames_say_why(run):
    shutil.rmtree(run.path / "probe")
    with pytest.raises(UserError, match="recorded no probe"):
        explore.trajectory_products({"run": str(run.path), "method": "pca", "dims": 2})
    probe.write_subset(run.path, probe.Probe("test", np.arange(10), np.zeros(10, np.int64), ["0"]))
    with pytest.raises(UserError, match="no complete probe frame yet"):  # stopped before its first monitor epoch
        explore.trajectory_products({"run": str(run.path), "method": "pca", "dims": 2})


@pytest.mark.parametrize("n,match", [(2, "at least 4 points"), (3, "at least 4 points")])  # a step needs 2 images
def test_tiny_splits_get_a_clear_message(tmp_path, n, match):
    from PIL import Image

    folder = tmp_path / "few" / "cls"
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
    cfg = tiny_config(tmp_path)
    cfg.data.dataset, cfg.data.data_path, cfg.data.subset = "folder", str(tmp_path / "few"), None
    cfg.data.transductive = True  # train on all n images: the held-out fifth would leave fewer than a batch
    cfg.optim.batch_size, cfg.optim.epochs, cfg.run.knn_every = 2, 1, 0
    run = train(cfg)
    with pytest.raises(UserError, match=match):
        explore.map_products({**map_spec(run, split="all"), "method": "pca"})


def test_unknown_job_kind():
    with pytest.raises(UserError, match="unknown job kind"):
        explore.run_job("nope", {})


def test_images_decoded_for_the_thumbnails_report_their_progress(run, tmp_path, monkeypatch):
    """Embeddings made elsewhere leave a split undecoded: the thumbnails then decode it (minutes at 1M), and the
    page says so instead of the previous stage."""
    real = explore.data.split_of

    def decoding(cfg, split, *, progress=None, **kw):
        if progress is not None:
            progress(5, 10)  # what decode_folder reports for a folder split
        return real(cfg, split, **kw)

    monkeypatch.setattr(explore.data, "split_of", decoding)
    stages = []
    explore.map_products(map_spec(run, thumbs=str(tmp_path / "thumbs")), lambda s, d, t: stages.append((s, d, t)))
    assert ("reading the images", 5, 10) in stages
    assert stages.index(("reading the images", 5, 10)) < [s for s, _, _ in stages].index("writing thumbnails")
