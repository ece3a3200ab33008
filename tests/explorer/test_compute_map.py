"""map_products at scale: the graph feeds UMAP, and a first map is on disk before the final projection."""

import shutil

import numpy as np
import pytest

from simclr_core.cli.train import train
from simclr_core.explorer import compute as explore
from simclr_core.explorer.projection import cache_path
from simclr_core.explorer.specs import MapSpec
from simclr_core.runs.rundir import RunDir

from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train(tiny_config(tmp_path_factory.mktemp("explore_map"))).path


@pytest.fixture
def run(trained, tmp_path) -> RunDir:
    shutil.copytree(trained, tmp_path / "tiny")
    return RunDir(tmp_path / "tiny")


def umap_spec(run, **kw):
    spec = MapSpec(run=str(run.path), split="test", feature="h", method="umap", dims=2, params={"n_neighbors": 10})
    return {**spec.to_dict(), **kw}


def test_umap_map_reads_the_graph_and_writes_a_first_map_first(run):
    stages: list[tuple[str, int, int]] = []
    spec = umap_spec(run)
    first = explore.first_coords_path(spec)  # known before the job runs
    assert not first.exists()

    def progress(stage, done, total):
        if "projecting" in stage:  # the first map is on disk before the final projection starts
            assert first.is_file()
        stages.append((stage, done, total))

    out = explore.map_products(spec, progress)
    assert out["first"] == str(first)
    rows, coords = explore.load_first_map(first)
    assert np.array_equal(rows, np.arange(360)) and coords.shape == (360, 2) and np.isfinite(coords).all()
    assert np.load(out["coords"]).shape == (360, 2)
    emb_key = explore.Embeddings.load_npz(out["embeddings"]).key
    assert out["coords"] == str(cache_path(run.embeddings_dir, emb_key, "umap", 2, 0, graph=True, n_neighbors=10))
    graph_stages = [s for s in stages if s[0] == "finding every image's neighbours"]
    assert graph_stages[-1][1:] == (360, 360)  # the graph reports rows done
    names = [s[0] for s in stages]
    assert names.index("drawing a first map") < next(i for i, n in enumerate(names) if "projecting" in n)


def test_a_sample_too_thin_for_the_graph_still_maps(run):
    out = explore.map_products(umap_spec(run, max_points=40))  # 40 of 360: ~5 of 50 neighbours in the sample
    assert np.load(out["coords"]).shape == (40, 2)
    rows, coords = explore.load_first_map(out["first"])
    assert rows.tolist() == out["rows"] and coords.shape == (40, 2)
