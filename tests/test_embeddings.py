import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from simclr_core import embeddings as emb_mod
from simclr_core.cli.embed import main as embed_main
from simclr_core.cli.train import train
from simclr_core.embeddings import Embeddings, embed_split, extract, load_encoder
from simclr_core.errors import UserError
from simclr_core.models import Encoder

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
    code = embed_main(
        ["--run", finished_run.name, "--runs-dir", str(finished_run.path.parent), "--split", "test", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    with np.load(out) as z:
        assert set(z.files) >= {"embeddings", "labels", "indices"}
        assert z["embeddings"].shape == (360, 256) and z["labels"].dtype == np.int64
    assert Embeddings.load_npz(out).classes == [str(i) for i in range(10)]


def test_embed_cli_copies_the_cache_and_takes_the_torchrun_spelling(finished_run, tmp_path, capsys):
    out, runs = tmp_path / "e.npz", str(finished_run.path.parent)
    # --run-name: torchrun stops at --run, which it takes for an abbreviation of its --run-path
    assert embed_main(["--run-name", finished_run.name, "--runs-dir", runs, "--split", "test", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: 360 x 256 h embeddings of {finished_run.name}/test\n"
    assert out.read_bytes() == emb_mod.embedding_cache(finished_run, "test", "h").read_bytes()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_embed_cli_errors(finished_run, tmp_path, capsys):
    runs = str(finished_run.path.parent)
    assert embed_main(["--run", "missing", "--runs-dir", runs, "--out", str(tmp_path / "x.npz")]) == 2
    assert "no run named 'missing'" in capsys.readouterr().err
    assert (
        embed_main(["--run", finished_run.name, "--runs-dir", runs, "--split", "val", "--out", str(tmp_path / "x.npz")])
        == 2
    )
    assert "has no split 'val'" in capsys.readouterr().err


def test_a_damaged_cache_is_rebuilt(finished_run):
    first = embed_split(finished_run, "test", "h")
    cache = emb_mod.embedding_cache(finished_run, "test", "h")
    for damage in (cache.read_bytes()[:200], pickle.dumps({"embeddings": [1, 2]})):  # truncated; a pickle
        cache.write_bytes(damage)
        again = embed_split(finished_run, "test", "h")
        assert np.allclose(again.embeddings, first.embeddings, atol=1e-5)
        assert np.allclose(Embeddings.load_npz(cache).embeddings, first.embeddings, atol=1e-5)  # written afresh
    cache.write_bytes(b"PK\x03\x04 not a zip")
    assert emb_mod.load_cached(cache) is None and not cache.exists()  # the app's reader deletes it too


def test_read_only_run_folder_still_embeds_and_evaluates(finished_run, tmp_path, capsys, monkeypatch):
    """Writes into the run folder fail as on a read-only mount (simulated: the tests may run as root,
    who may write anywhere); the embeddings and the numbers still come out, uncached."""
    import errno

    from simclr_core.cli.evaluate import main as evaluate_main
    from simclr_core.runs.rundir import write_json_atomic

    def refuse_in_run(path):
        if finished_run.path in Path(path).resolve().parents:
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    real_json, real_npz, real_writer = write_json_atomic, Embeddings.save_npz, emb_mod._NpzWriter
    monkeypatch.setattr(
        "simclr_core.runs.rundir.write_json_atomic", lambda path, obj: refuse_in_run(path) or real_json(path, obj)
    )
    monkeypatch.setattr(Embeddings, "save_npz", lambda self, path: refuse_in_run(path) or real_npz(self, path))
    monkeypatch.setattr(emb_mod, "_NpzWriter", lambda path, images: refuse_in_run(path) or real_writer(path, images))
    shutil.rmtree(finished_run.embeddings_dir, ignore_errors=True)
    out, runs = tmp_path / "e.npz", str(finished_run.path.parent)
    assert embed_main(["--run", finished_run.name, "--runs-dir", runs, "--split", "test", "--out", str(out)]) == 0
    assert Embeddings.load_npz(out).embeddings.shape[0] == 360 and not finished_run.embeddings_dir.exists()
    assert evaluate_main(["--run", finished_run.name, "--runs-dir", runs, "--no-probe", "--k", "5"]) == 0
    captured = capsys.readouterr()
    assert "knn_top1" in captured.out and "not saved to" in captured.err and "Read-only file system" in captured.err


@pytest.mark.parametrize(
    "bad,match",
    [
        ("folder", "is a folder; give a file name"),
        ("missing/e.npz", "the folder .*missing does not exist"),
    ],
)
def test_embed_out_must_be_a_file_in_a_folder(finished_run, tmp_path, capsys, bad, match):
    (tmp_path / "folder").mkdir()
    code = embed_main(
        ["--run", finished_run.name, "--runs-dir", str(finished_run.path.parent), "--out", str(tmp_path / bad)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and re.search(match, err), err


@pytest.mark.parametrize(
    "content,match",
    [
        (lambda run: torch.zeros(3), "holds a bare tensor, not a training checkpoint"),
        (
            lambda run: torch.load(run.backbone_path, weights_only=True),
            r"holds a backbone's weights alone \(backbone.pt\)",
        ),
    ],
)
def test_a_last_pt_that_is_not_a_training_checkpoint(tmp_path, content, match):
    run = train(tiny_config(tmp_path))
    torch.save(content(run), run.last_ckpt)
    with pytest.raises(UserError, match=match):
        load_encoder(run)


def test_a_hostile_pickle_is_refused_without_unsafe_advice(tmp_path):
    run = train(tiny_config(tmp_path))

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"x": Evil()}, run.last_ckpt)
    with pytest.raises(UserError) as e:
        load_encoder(run)
    assert "safe load refuses" in str(e.value) and "weights_only" not in str(e.value)
    assert not (tmp_path / "pwned").exists()


def test_a_last_pt_of_another_architecture_is_refused(tmp_path):
    other = tiny_config(tmp_path, name="other")
    other.model.proj_out_dim = 16
    run, other_run = train(tiny_config(tmp_path)), train(other)
    shutil.copy(other_run.last_ckpt, run.last_ckpt)
    with pytest.raises(UserError, match=r"another architecture \(proj_out_dim: checkpoint 16 vs config 32\)"):
        load_encoder(run)


# ---- issue 16 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["cache-is-a-folder", "embeddings-is-a-file"])
def test_something_in_the_caches_place_still_embeds_uncached(finished_run, tmp_path, capsys, what):
    """The reader deleted a damaged cache file; a folder there (or an embeddings/ that is a file) raised."""
    first = embed_split(finished_run, "test", "h")
    cache = emb_mod.embedding_cache(finished_run, "test", "h")
    saved = tmp_path / "saved"
    shutil.move(finished_run.embeddings_dir, saved)
    try:
        if what == "cache-is-a-folder":
            cache.mkdir(parents=True)
        else:
            finished_run.embeddings_dir.write_text("mine")
        assert np.allclose(embed_split(finished_run, "test", "h").embeddings, first.embeddings, atol=1e-5)
        out = tmp_path / "e.npz"
        runs = str(finished_run.path.parent)
        code = embed_main(["--run", finished_run.name, "--runs-dir", runs, "--split", "test", "--out", str(out)])
        assert code == 0 and out.is_file(), capsys.readouterr().err
        assert cache.is_dir() if what == "cache-is-a-folder" else finished_run.embeddings_dir.read_text() == "mine"
    finally:
        if finished_run.embeddings_dir.is_dir():
            shutil.rmtree(finished_run.embeddings_dir)
        else:
            finished_run.embeddings_dir.unlink()
        shutil.move(saved, finished_run.embeddings_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
@pytest.mark.parametrize(
    "device, message",
    [
        ("cuda", "--device cuda: no CUDA GPU is visible here; use --device cpu (or auto)"),
        ("xpu", "unknown device 'xpu': use auto, cpu, cuda, cuda:N or mps"),  # torch knows it, training does not
        ("meta", "unknown device 'meta': use auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_embed_on_a_device_that_is_not_there(finished_run, tmp_path, capsys, device, message):
    embed_split(finished_run, "test", "h")  # cached: the device was never looked at before
    runs = str(finished_run.path.parent)
    argv = ["--run", finished_run.name, "--runs-dir", runs, "--split", "test", "--out", str(tmp_path / "e.npz")]
    assert embed_main([*argv, "--device", device]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


# ---- issue 19: chunked, bounded, sharded ----------------------------------------------------------------


def test_chunked_embedding_equals_one_shot_and_honours_the_chunk_size(finished_run, monkeypatch):
    one_shot = embed_split(finished_run, "test", "z", chunk_rows=10**9)
    cache = emb_mod.embedding_cache(finished_run, "test", "z")
    cache.unlink()
    real_extract, seen, ticks = emb_mod.extract, [], []

    def spy(encoder, images, **kw):
        seen.append(len(images))
        return real_extract(encoder, images, **kw)

    monkeypatch.setattr(emb_mod, "extract", spy)
    chunked = embed_split(finished_run, "test", "z", chunk_rows=100, progress=lambda d, t: ticks.append((d, t)))
    assert seen == [100, 100, 100, 60]  # never more than a chunk of rows embedded (and held) at once
    assert ticks[-1] == (360, 360) and [d for d, _ in ticks] == sorted(d for d, _ in ticks)
    assert np.allclose(chunked.embeddings, one_shot.embeddings, atol=1e-5)
    assert np.array_equal(chunked.labels, one_shot.labels) and chunked.classes == one_shot.classes
    assert emb_mod.cached_shape(cache) == (360, 32) and not [p for p in cache.parent.iterdir() if ".tmp" in p.name]
    with np.load(cache) as z:  # the same arrays save_npz writes, readable by anything that reads those
        assert set(z.files) == {"embeddings", "labels", "indices", "classes"} and z["embeddings"].dtype == np.float32


def test_a_cache_file_of_before_is_still_read(finished_run, monkeypatch):
    first = embed_split(finished_run, "test", "h")
    cache = emb_mod.embedding_cache(finished_run, "test", "h")
    first.save_npz(cache)  # np.savez's file, as every cache was written before chunks
    monkeypatch.setattr(emb_mod, "extract", lambda *a, **k: pytest.fail("recomputed"))
    assert np.array_equal(embed_split(finished_run, "test", "h").embeddings, first.embeddings)


def test_a_half_written_cache_is_detected_and_written_again(finished_run):
    first = embed_split(finished_run, "test", "h", chunk_rows=128)
    cache = emb_mod.embedding_cache(finished_run, "test", "h")
    whole = cache.read_bytes()
    for cut in (len(whole) // 2, len(whole) - 30):  # in the middle of a chunk; only the zip's directory lost
        cache.write_bytes(whole[:cut])
        assert emb_mod.cached_shape(cache) is None
        assert emb_mod.load_cached(cache) is None and not cache.exists()  # deleted: computed again, no traceback
        cache.write_bytes(whole[:cut])
        again = embed_split(finished_run, "test", "h", chunk_rows=128)
        assert np.allclose(again.embeddings, first.embeddings, atol=1e-5) and emb_mod.cached_shape(cache) == (360, 256)


def test_a_writer_killed_mid_file_leaves_only_a_temp_that_is_cleared(finished_run, monkeypatch):
    cache = emb_mod.embedding_cache(finished_run, "test", "h")
    cache.unlink(missing_ok=True)
    calls = []

    def dies(encoder, images, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill between chunks
        return torch.zeros(len(images), 256)

    monkeypatch.setattr(emb_mod, "extract", dies)
    with pytest.raises(KeyboardInterrupt):
        embed_split(finished_run, "test", "h", chunk_rows=100)
    assert not cache.exists() and not [p for p in cache.parent.iterdir() if ".tmp" in p.name]
    # a kill -9 leaves the temp file: named with the dead writer's pid, cleared by the next writer
    stale = cache.with_name(f".{cache.stem}.999999999.tmp.npz")
    stale.write_bytes(b"PK half")
    monkeypatch.undo()
    embed_split(finished_run, "test", "h")
    assert not stale.exists() and emb_mod.cached_shape(cache) == (360, 256)


def test_shard_bounds_cover_every_row_once():
    for n in (0, 1, 5, 360):
        for world in (1, 2, 3, 7):
            bounds = [emb_mod.shard_bounds(n, world, r) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1


def shard_worker(rank: int, world: int, port: int, run_path: str, out: str) -> None:
    import torch.distributed as dist

    from simclr_core.runs.rundir import RunDir

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        seen = []
        real = emb_mod.extract

        def spy(encoder, images, **kw):
            seen.append(len(images))
            return real(encoder, images, **kw)

        emb_mod.extract = spy
        emb = embed_split(RunDir(run_path), "test", "h", device="cpu", chunk_rows=64)
        np.save(f"{out}-{rank}.npy", emb.embeddings)
        Path(f"{out}-{rank}.json").write_text(str(sum(seen)))
    finally:
        dist.destroy_process_group()


def test_two_ranks_embed_shards_and_rank_0_joins_them(finished_run, tmp_path):
    import socket

    import torch.multiprocessing as mp

    one = embed_split(finished_run, "test", "h")
    cache = emb_mod.embedding_cache(finished_run, "test", "h")
    cache.unlink()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = str(tmp_path / "rank")
    mp.spawn(shard_worker, args=(2, port, str(finished_run.path), out), nprocs=2, join=True)
    assert [Path(f"{out}-{r}.json").read_text() for r in range(2)] == ["180", "180"]  # half the rows each
    for r in range(2):  # every rank gets the whole split back, equal to one process's
        assert np.allclose(np.load(f"{out}-{r}.npy"), one.embeddings, atol=1e-5)
    joined = Embeddings.load_npz(cache)
    assert np.allclose(joined.embeddings, one.embeddings, atol=1e-5) and np.array_equal(joined.labels, one.labels)
    assert not [p for p in cache.parent.iterdir() if ".tmp" in p.name]  # the shard files are gone


def test_a_missing_shard_is_said_not_a_traceback(finished_run, tmp_path):
    first = embed_split(finished_run, "test", "h")
    images = emb_mod.data.split_of(finished_run.config().data, "test")
    cache = tmp_path / "joined.npz"
    shards = [tmp_path / f".joined.shard{r}of2.1.tmp.npy" for r in range(2)]
    np.save(shards[0], first.embeddings[:180])
    with pytest.raises(UserError, match="rank 1's shard .* is missing or half written"):
        emb_mod._join_shards(shards, images, cache, 64)
    np.save(shards[1], first.embeddings[180:300])
    with pytest.raises(UserError, match=r"rank 1's shard .* holds \(120, 256\), not 180 rows"):
        emb_mod._join_shards(shards, images, cache, 64)
    assert not cache.exists() and [p.name for p in tmp_path.iterdir() if ".tmp.npz" in p.name] == []
    np.save(shards[1], first.embeddings[180:])
    emb_mod._join_shards(shards, images, cache, 64)
    assert np.array_equal(Embeddings.load_npz(cache).embeddings, first.embeddings)
