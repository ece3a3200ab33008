"""Presets are valid configs with the documented values; run-name suggestions avoid taken names."""

from __future__ import annotations

from datetime import datetime

import pytest

from simclr_core.config import ViewConfig, check_run_name
from simclr_core.presets import PRESETS, VIEW_PRESETS, preset, suggest_run_name


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates(name):
    preset(name).validate()


def test_quick_cpu_demo_values():
    cfg = preset("Quick CPU demo (digits, 50 epochs)")
    assert (cfg.data.dataset, cfg.model.backbone, cfg.model.cifar_stem) == ("digits", "resnet_mini", False)
    assert (cfg.optim.epochs, cfg.optim.batch_size, cfg.run.knn_every) == (50, 256, 1)


def test_cifar_preset_values():
    cfg = preset("CIFAR-10 ResNet-18 (paper-style)")
    assert (cfg.data.dataset, cfg.model.backbone, cfg.optim.optimizer) == ("cifar10", "resnet18", "lars")
    assert (cfg.optim.epochs, cfg.optim.batch_size, cfg.method.temperature) == (500, 512, 0.5)
    assert (cfg.views.jitter_strength, cfg.views.blur_prob) == (0.5, 0.0)


def test_view_presets_are_the_papers_settings_on_the_dataclass_defaults():
    imagenet, cifar = VIEW_PRESETS["Paper ImageNet defaults"](), VIEW_PRESETS["Paper CIFAR (s=0.5, no blur)"]()
    # the paper's colour strength and blur (appendix A and B.9); every other knob the dataclass's own default
    assert imagenet == ViewConfig(jitter_strength=1.0, blur_prob=0.5)
    assert cifar == ViewConfig(jitter_strength=0.5, blur_prob=0.0)


def test_presets_are_fresh_objects():
    a = preset("Quick CPU demo (digits, 50 epochs)")
    a.optim.epochs = 1
    assert preset("Quick CPU demo (digits, 50 epochs)").optim.epochs == 50


def test_suggest_run_name_format_and_uniqueness():
    now = datetime(2024, 11, 22, 23, 15)
    assert suggest_run_name("digits", "resnet_mini", now=now) == "digits-resnet_mini-1122-2315"
    taken = ["digits-resnet_mini-1122-2315", "digits-resnet_mini-1122-2315-2"]
    name = suggest_run_name("digits", "resnet_mini", taken, now=now)
    assert name == "digits-resnet_mini-1122-2315-3"
    assert check_run_name(name) == name
