import numpy as np
import pytest
import torch

from simclr_core import embeddings as emb_mod
from simclr_core.embed import main as embed_main
from simclr_core.embeddings import Embeddings, embed_split, extract, load_encoder
from simclr_core.errors import UserError
from simclr_core.models import Encoder
from simclr_core.train import train

from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return train(tiny_config(tmp_path_factory.mktemp("emb")))


def test_extract_shapes_and_eval_mode():
    enc = Encoder("resnet_mini", cifar_stem=False, proj_hidden_dim=32, proj_out_dim=8).train()
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    seen = []
    h = extract(enc, images, feature="h", batch_size=4, progress=lambda d, t: seen.append((d, t)))
    z = extract(enc, images, feature="z", size=24)
    assert h.shape == (10, 256) and z.shape == (10, 8) and h.dtype == torch.float32
    assert seen == [(4, 10), (8, 10), (10, 10)] and enc.training  # mode restored
    # eval mode: a row's embedding does not depend on the rest of the batch
    assert torch.allclose(extract(enc, images[:3]), h[:3], atol=1e-5)
    with pytest.raises(UserError, match="unknown feature"):
        extract(enc, images, feature="q")


def test_embed_split_is_cached_per_checkpoint(finished_run, monkeypatch):
    e1 = embed_split(finished_run, "test", "z")
    assert e1.embeddings.shape == (360, 32) and e1.labels.shape == (360,) and set(e1.labels) == set(range(10))
    assert np.array_equal(e1.indices, np.arange(360))

    def no_recompute(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(emb_mod, "extract", no_recompute)
    e2 = embed_split(finished_run, "test", "z")
    assert np.array_equal(e1.embeddings, e2.embeddings)
    # a newer checkpoint is a cache miss
    finished_run.last_ckpt.touch()
    with pytest.raises(AssertionError, match="recomputed"):
        embed_split(finished_run, "test", "z")


def test_random_init_differs_from_trained(finished_run):
    trained, meta = load_encoder(finished_run)
    random, rmeta = load_encoder(finished_run, random_init=True)
    assert meta["epoch"] == 2 and rmeta["epoch"] == 0
    x = torch.rand(4, 3, 16, 16)
    assert not torch.allclose(trained.features(x), random.features(x))


def test_embed_cli_writes_npz(finished_run, tmp_path, capsys):
    out = tmp_path / "e.npz"
    code = embed_main(["--run", finished_run.name, "--runs-dir", str(finished_run.path.parent), "--split", "test",
                       "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with np.load(out) as z:
        assert set(z.files) >= {"embeddings", "labels", "indices"}
        assert z["embeddings"].shape == (360, 256) and z["labels"].dtype == np.int64
    assert Embeddings.load_npz(out).classes == [str(i) for i in range(10)]


def test_embed_cli_errors(finished_run, tmp_path, capsys):
    runs = str(finished_run.path.parent)
    assert embed_main(["--run", "missing", "--runs-dir", runs, "--out", str(tmp_path / "x.npz")]) == 2
    assert "no run named 'missing'" in capsys.readouterr().err
    assert embed_main(["--run", finished_run.name, "--runs-dir", runs, "--split", "val",
                       "--out", str(tmp_path / "x.npz")]) == 2
    assert "has no split 'val'" in capsys.readouterr().err
