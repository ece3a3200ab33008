"""Out of GPU memory (issue 18): the batch that fits, found by halving; the run's message; --batch-size auto.

No GPU here: the out-of-memory error is raised by hand (``torch.cuda.OutOfMemoryError`` can be made on
a CPU build), from inside a real forward pass where it matters, so the state a try leaves is the real one.
"""

import functools
import json

import pytest
import torch

from simclr_core.cli.common import config_flags, config_from_args
from simclr_core.cli.train import build_parser, train
from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.methods import build_method
from simclr_core.models import architecture, build_encoder
from simclr_core.resolve import resolve
from simclr_core.runs import checkpoints
from simclr_core.runs.rundir import RunDir
from simclr_core.training import loop, memory, session

from tests.conftest import tiny_config

CPU = torch.device("cpu")


def out_of_memory_above(module: torch.nn.Module, images: int) -> None:
    """Make ``module`` raise CUDA's out-of-memory error on inputs of more than ``images`` images."""

    def check(mod, args):
        if args[0].shape[0] > images:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    module.register_forward_pre_hook(check)


def moco(tmp_path):
    """A tiny MoCo v2: batch norm, a key encoder, a queue and random shuffles: every kind of state a try could touch."""
    cfg = tiny_config(tmp_path)
    cfg.method.name, cfg.method.queue_size = "moco_v2", 48
    cfg = resolve(cfg, 16)
    return build_method(cfg, build_encoder(architecture(cfg)))


def test_halving_finds_the_batch_that_fits_and_leaves_the_method_as_it_was(tmp_path):
    method = moco(tmp_path)
    # past the stem (its batch norm has run): a step of more than 256 images runs out there
    out_of_memory_above(method.encoder.backbone.layer1, 256)
    method.eval()
    first = next(method.parameters())
    first.grad = torch.ones_like(first)  # a gradient already there stays as it was
    before = {k: v.clone() for k, v in method.state_dict().items()}
    rng = torch.get_rng_state()
    tried = []
    real = memory.trial_step(method, 16, CPU, allow_cpu=True)
    assert real is not None

    def attempt(batch: int) -> bool:
        tried.append(batch)
        return real(batch)

    assert memory.fitting_batch(attempt, 1024) == 256
    assert tried == [1024, 512, 256]
    after = method.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights, BN statistics or the queue changed"
    assert torch.equal(first.grad, torch.ones_like(first))
    assert all(p.grad is None for p in method.parameters() if p is not first)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's views and shuffles stay reproducible
    assert not method.training


def test_the_search_gives_up_below_the_smallest_batch_and_a_cpu_is_never_tried(tmp_path):
    def never(batch: int) -> bool:
        raise torch.cuda.OutOfMemoryError("simulated")

    assert memory.fitting_batch(never, 64) is None
    assert memory.fitting_batch(lambda b: b <= 100, 1024) == 64  # False (peak over the limit) halves too
    assert memory.fitting_batch(lambda b: True, 48, smallest=64) is None
    assert memory.trial_step(moco(tmp_path), 16, CPU) is None  # a CPU that runs out is killed, not told


def raise_out_of_memory_from(epoch: int, monkeypatch) -> None:
    """Make the training step run out of GPU memory from epoch ``epoch`` (0-based) on."""
    real = loop.train_step

    def step(s, x):
        if s.epoch >= epoch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(s, x)

    monkeypatch.setattr(loop, "train_step", step)


def test_out_of_memory_names_a_batch_that_fits_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    raise_out_of_memory_from(1, monkeypatch)  # epoch 1 is saved, epoch 2 runs out
    fits = []
    monkeypatch.setattr(memory, "trial_step", lambda *a, **k: lambda b: fits.append(b) or b <= 8)
    with pytest.raises(UserError) as e:
        train(tiny_config(tmp_path))  # batch 32
    message = (
        "out of GPU memory at batch size 32; a batch of 8 fits this GPU: start a new run with --batch-size 8 "
        "(the last checkpoint, epoch 1, is kept)"
    )
    assert str(e.value) == message
    assert fits == [16, 8]  # halving from half the batch that ran out
    run = RunDir(tmp_path / "runs" / "tiny")
    status = run.status()
    assert status["state"] == "failed" and status["message"] == message
    assert checkpoints.load(run.last_ckpt)["epoch"] == 1


def test_out_of_memory_at_the_first_step_tries_real_steps_and_says_so(tmp_path, monkeypatch):
    """The failed step's memory is let go, then real forward and backward passes of smaller batches are tried."""
    real_build = session.build_method

    def build(cfg, encoder):
        method = real_build(cfg, encoder)
        out_of_memory_above(method.encoder.head, 16)  # SimCLR encodes both views at once: a batch of 8 fits
        return method

    monkeypatch.setattr(session, "build_method", build)
    monkeypatch.setattr(memory, "trial_step", functools.partial(memory.trial_step, allow_cpu=True))
    with pytest.raises(UserError, match=r"^out of GPU memory at batch size 32; a batch of 8 fits this GPU: start a "):
        train(tiny_config(tmp_path))
    status = RunDir(tmp_path / "runs" / "tiny").status()
    assert status["state"] == "failed"
    assert status["message"].endswith("--batch-size 8")  # no checkpoint yet to speak of


def test_when_no_batch_fits_the_message_is_the_general_one(tmp_path, monkeypatch):
    raise_out_of_memory_from(0, monkeypatch)  # and on this CPU the search does not run at all
    with pytest.raises(UserError) as e:
        train(tiny_config(tmp_path))
    assert str(e.value) == (
        "out of GPU memory at batch size 32; start a new run with a lower --batch-size (or --precision bf16)"
    )


def test_batch_size_auto_from_flags_and_files(tmp_path, capsys):
    cfg, given = config_from_args(build_parser().parse_args(["--batch-size", "auto"]))
    assert cfg.optim.batch_size is None and "batch_size" in given
    assert config_flags(cfg) == ["--batch-size", "auto"]  # the command that repeats it
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--batch-size", "big"])
    assert "argument --batch-size: must be an integer or auto, got 'big'" in capsys.readouterr().err
    (tmp_path / "a.yaml").write_text("optim:\n  batch_size: auto\n")
    assert TrainConfig.load(tmp_path / "a.yaml").optim.batch_size is None
    (tmp_path / "b.yaml").write_text("optim:\n  batch_size: huge\n")
    with pytest.raises(UserError, match=r"^--batch-size must be an integer or auto, got 'huge', a str \(config key"):
        TrainConfig.load(tmp_path / "b.yaml")
    cfg = TrainConfig()
    cfg.optim.batch_size = None
    assert resolve(cfg, 32).optim.lr is None  # it scales with a batch only the trainer can decide


def test_batch_size_auto_on_a_cpu_trains_and_records_the_number(tmp_path):
    cfg = tiny_config(tmp_path, batch_size=None)  # 64 images: fewer than the 256 a CPU would take
    run = train(cfg)
    saved = json.loads(run.config_path.read_text())["optim"]
    assert saved["batch_size"] == 64 and saved["lr"] == pytest.approx(0.06 * 64 / 256)
    assert run.status()["step"] == 2  # one step an epoch
    assert "--batch-size auto: 64 on CPU" in run.log_path.read_text()


def test_batch_size_auto_halves_to_what_memory_holds_and_tries_steps_on_a_gpu(tmp_path, monkeypatch):
    cfg = resolve(tiny_config(tmp_path), 16)
    method = build_method(cfg, build_encoder(architecture(cfg)))
    scaled, fixed = memory.step_memory(cfg, method, 16, batch=256)
    room = fixed + scaled / 4 + 2**16  # a quarter of a step of 256, once AUTO_BATCH_FREE is kept free
    monkeypatch.setattr(memory, "available_memory", lambda: int(room / (1 - memory.AUTO_BATCH_FREE)))
    assert memory.auto_batch(cfg, method, 16, CPU, images=1000)[0] == 64
    assert memory.auto_batch(cfg, method, 16, CPU, images=40)[0] == 32  # at most the training images
    # per process, as check_step_memory counts: 64 a process, a global batch of 128
    assert memory.auto_batch(cfg, method, 16, CPU, images=1000, world=2)[0] == 128
    # a GPU is tried: the largest power of two at most the images (or 65536) whose step fits
    tried = []
    monkeypatch.setattr(memory, "trial_step", lambda *a, **k: lambda b: tried.append(b) or b <= 300)
    monkeypatch.setattr(memory, "describe", lambda device: "a GPU")
    batch, note = memory.auto_batch(cfg, method, 16, torch.device("cuda"), images=5000)
    assert (batch, tried) == (256, [4096, 2048, 1024, 512, 256])
    assert note == "--batch-size auto: 256, the largest power of two whose step fits a GPU with 15% of its memory free"
    monkeypatch.setattr(memory, "trial_step", lambda *a, **k: lambda b: False)
    with pytest.raises(UserError, match="a step of 2 16-px images does not fit on a GPU; choose a smaller"):
        memory.auto_batch(cfg, method, 16, torch.device("cuda"), images=5000)
