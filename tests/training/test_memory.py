"""Whether a training step fits in memory (training/memory.py): measured, scaled, and refused with a fix."""

import pytest
import torch

from simclr_core.methods import build_method
from simclr_core.models import architecture, build_encoder
from simclr_core.resolve import resolve
from simclr_core.runs.rundir import RunDir
from simclr_core.training import memory

from tests.conftest import tiny_args, tiny_config
from tests.training.common import one_line_error, run_main


def test_what_a_forward_keeps_scales_with_the_area_and_leaves_the_encoder_alone(tmp_path):
    cfg = resolve(tiny_config(tmp_path), 16)
    encoder = build_encoder(architecture(cfg))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    rng = torch.get_rng_state()
    small, large = memory.saved_bytes_per_image(encoder, 32), memory.saved_bytes_per_image(encoder, 64)
    assert 3.5 < large / small < 4.5  # activations grow with the pixels
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # BN statistics untouched
    assert torch.equal(torch.get_rng_state(), rng)  # and no random number drawn: the run stays reproducible


def test_a_step_that_cannot_fit_names_a_crop_size_and_a_batch_size_that_would(tmp_path, monkeypatch):
    cfg = resolve(tiny_config(tmp_path), 16)
    method = build_method(cfg, build_encoder(architecture(cfg)))
    scaled, fixed = memory.step_memory(cfg, method, 512)
    monkeypatch.setattr(memory, "available_memory", lambda: fixed + scaled // 4 + 2**16)  # a quarter of it
    with pytest.raises(Exception) as e:
        memory.check_step_memory(cfg, method, 512, torch.device("cpu"))
    message = str(e.value)
    assert message.startswith("one training step at --batch-size 32 with 512-px views needs about ")
    assert message.endswith(
        "(it would be killed without a message); start the run with --crop-size 256 or --batch-size 8"
    )
    for side, batch in ((256, 32), (512, 8)):  # either advice fits
        cfg.optim.batch_size = batch
        memory.check_step_memory(cfg, method, side, torch.device("cpu"))
    memory.check_step_memory(cfg, method, 4096, torch.device("cuda"))  # a GPU says so itself (the runner's message)


def test_the_cli_refuses_a_run_that_would_be_killed(tmp_path, monkeypatch, capsys):
    """--crop-size 4096 was killed by the OOM killer without a word; 2048 is allowed and checked (issue 16)."""
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * 2**30)  # 8 GB free, whatever this machine has
    code, err = run_main([*tiny_args(tmp_path), "--crop-size", "2048"], capsys)
    line = one_line_error(code, err)
    assert line.startswith("error: one training step at --batch-size 32 with 2048-px views needs about ")
    assert (
        "GB of memory and 8.0 GB are free (it would be killed without a message); start the run with --crop-size "
        in line
    )
    run = RunDir(tmp_path / "runs" / "tiny")
    assert run.status()["state"] == "failed" and run.status()["message"] == line.removeprefix("error: ")
