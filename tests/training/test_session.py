"""The session (training/session.py): which images it trains on, and what it warns about."""

import json

import pytest

from simclr_core.training import train

from tests.conftest import tiny_config


def _single_split_folder(root, n_per_class=20):
    from PIL import Image

    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.new("RGB", (16, 16), (i * 12, 80 if c == "cat" else 200, 0)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("transductive", [False, True])
def test_a_single_split_folder_keeps_its_held_out_fifth_unseen(tmp_path, transductive):
    from simclr_core.data import datasets as data
    from simclr_core.evaluation.run import evaluate_run

    cfg = tiny_config(tmp_path, epochs=1, batch_size=8)
    cfg.data.dataset, cfg.data.data_path, cfg.data.subset = "folder", str(_single_split_folder(tmp_path / "pets")), None
    cfg.data.transductive = transductive
    run = train(cfg)
    rest, fifth = data.held_out(cfg.data, "all")
    assert (len(rest), len(fifth)) == (32, 8)
    seen = data.pretrain_split(run.config().data, "all")
    assert len(seen) == (40 if transductive else 32) and (set(fifth.paths) <= set(seen.paths)) == transductive
    assert f"{len(seen)} images" in run.log_path.read_text()
    result = evaluate_run(run, probe=False, k=5)
    assert result["n_query"] == 8 and result["n_bank"] == 32
    assert result["query_split"] == ("all (held-out fifth, transductive)" if transductive else "all (held-out fifth)")
    quick = evaluate_run(run, probe=False, k=5, max_bank=10)  # the same queries with a smaller bank
    assert quick["n_query"] == 8 and quick["n_bank"] == 10


def test_runs_from_before_the_option_stay_transductive(tmp_path):
    run = train(tiny_config(tmp_path))
    saved = json.loads(run.config_path.read_text())
    assert saved["data"]["transductive"] is False
    del saved["data"]["transductive"]  # as written by earlier versions, which pre-trained on everything
    run.config_path.write_text(json.dumps(saved))
    assert run.config().data.transductive is True


def test_moco_queue_larger_than_the_dataset_is_warned_about(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    cfg.method.name, cfg.method.queue_size = "moco_v2", 100
    run = train(cfg)
    assert "the MoCo queue (--queue-size 100) is larger than the 64 training images" in run.log_path.read_text()
