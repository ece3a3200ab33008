"""The Python API: README's example runs verbatim; the names are what the README lists; inputs in many forms."""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
import torch
from PIL import Image

import simclr_core
from simclr_core.errors import UserError

from tests.conftest import REPO, tiny_config


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs_verbatim(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SIMCLR_RUNS_DIR", raising=False)
    exec(compile(readme_example(), "README.md", "exec"), {})
    shape, knn, path = capsys.readouterr().out.strip().splitlines()[-3:]
    assert shape == "(8, 256)"
    assert 10 < float(knn) <= 100  # well above chance (10 classes) after 3 epochs
    assert path == "checkpoints/notebook-demo/export/notebook-demo.safetensors"
    assert (tmp_path / path).is_file() and (tmp_path / "checkpoints/notebook-demo/backbone.pt").is_file()


def test_the_api_names():
    assert simclr_core.__version__
    for name in (
        "TrainConfig",
        "recipe",
        "recipes",
        "pretrain",
        "load_backbone",
        "embed_images",
        "evaluate_run",
        "export_backbone",
        "UserError",
    ):
        assert callable(getattr(simclr_core, name)), name
    # no API name is also a submodule's: importing every submodule leaves each name the API's function
    for module in ("train", "cli.embed", "cli.evaluate", "cli.export", "evaluation.run", "exporters", "zoo", "api"):
        importlib.import_module(f"simclr_core.{module}")
    assert simclr_core.pretrain.__module__ == "simclr_core.api" and simclr_core.recipes.__module__ == "simclr_core.zoo"
    assert simclr_core.export_backbone.__module__ == "simclr_core.exporters"


def test_embed_images_takes_tensors_arrays_and_pil_images(tmp_path):
    run = simclr_core.pretrain(tiny_config(tmp_path, epochs=1))
    backbone = simclr_core.load_backbone(run)
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    want = simclr_core.embed_images(backbone, torch.from_numpy(hwc).permute(0, 3, 1, 2).float() / 255)
    assert want.shape == (3, backbone.feature_dim) and want.dtype == np.float32
    for form in (hwc, torch.from_numpy(hwc).permute(0, 3, 1, 2), [Image.fromarray(a) for a in hwc]):
        assert np.allclose(simclr_core.embed_images(backbone, form), want, atol=1e-5)
    assert np.allclose(simclr_core.embed_images(run, hwc), want, atol=1e-5)  # a run works as the model too
    with pytest.raises(UserError, match="3 colour channels"):
        simclr_core.embed_images(backbone, np.zeros((2, 16, 16, 4), np.uint8))


def test_pretrain_takes_overrides_and_names_a_wrong_one(tmp_path):
    run = simclr_core.pretrain(tiny_config(tmp_path), optim__epochs=1, run__name="short")
    assert run.name == "short" and run.config().optim.epochs == 1
    with pytest.raises(UserError, match="unknown setting 'epochs': write section__field"):
        simclr_core.pretrain(tiny_config(tmp_path), epochs=1)
