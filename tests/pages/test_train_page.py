"""The Train page: the new-run form and its checks, presets, the run list, live curves, stop/resume.

Launching is monkeypatched in the page tests (no process starts); the slow tests at the end start
real training processes through simclr_core.runs.launch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simclr_core.config import TrainConfig
from simclr_core.runs import launch
from simclr_core.runs.rundir import RunDir, new_run

from tests.conftest import tiny_config
from tests.pages.conftest import app, plotly_specs


@pytest.fixture
def roots(tmp_path, monkeypatch) -> Path:
    """A folder the app may read images from ($SIMCLR_STUDIO_ROOTS), and nothing else."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv("SIMCLR_STUDIO_ROOTS", str(allowed))
    return allowed


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    """An image folder: ``{"train/cat": 3}`` writes three small PNGs into root/train/cat/."""
    from PIL import Image

    for sub, n in counts.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (40 * i % 255, 90, 160)).save(root / sub / f"{i}.png")
    return root


@pytest.fixture
def launches(monkeypatch) -> list[TrainConfig]:
    """Record launch() calls instead of starting processes; a recorded run is listed at once."""
    calls: list[TrainConfig] = []

    def fake(cfg: TrainConfig, nproc: int = 1) -> RunDir:
        run = new_run(cfg.run.runs_dir, cfg.run.name)  # raises for a taken name, as the real launch does
        cfg.nproc = nproc  # recorded for the GPU-count test
        calls.append(cfg)
        cfg.save(run.config_path)  # as the real launch does
        (run.path / "launch.json").write_text(json.dumps({"pid": os.getpid()}))  # a live "training process"
        return run

    monkeypatch.setattr(launch, "launch", fake)
    return calls


def widget(at, key: str):
    """The form widget with this key, whatever its kind."""
    for kind in ("text_input", "number_input", "selectbox", "slider"):
        try:
            return getattr(at, kind)(key=key)
        except KeyError:
            continue
    raise KeyError(key)


def fill(at, **fields):
    """Set form fields (``section__name=value``); the page checks them at once."""
    for spec, value in fields.items():
        widget(at, "tf." + spec.replace("__", ".")).set_value(value)
    return at.run()


def submit(at, **fields):
    """Set form fields (``section__name=value``) and press Launch."""
    fill(at, **fields)
    return at.button(key="tf_launch").click().run()


def refused(at, **fields) -> list[str]:
    """Set form fields that a check refuses: Launch is greyed out, and the errors say why (returned)."""
    at = fill(at, **fields)
    assert not at.exception
    assert at.button(key="tf_launch").disabled
    return errors(at)


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_no_runs_shows_the_form_and_guidance(runs_dir):
    at = app("train")
    assert not at.exception
    assert "No runs yet" in at.info[0].value and "Quick CPU demo" in at.info[0].value
    assert at.selectbox(key="tf_preset").value.startswith("Quick CPU demo (digits")
    assert at.selectbox(key="tf.data.dataset").value == "digits"
    assert at.selectbox(key="tf.model.backbone").value == "resnet_mini"
    assert at.number_input(key="tf.optim.epochs").value == 50
    assert at.text_input(key="tf.run.name").value.startswith("digits-resnet_mini-")
    # help texts come from the config dataclasses
    assert "temperature tau of simclr" in at.number_input(key="tf.method.temperature").help
    assert not errors(at)


def test_cifar_preset_fills_the_form(runs_dir):
    at = app("train")
    at.selectbox(key="tf_preset").set_value("CIFAR-10 ResNet-18 (paper-style)").run()
    assert not at.exception
    assert at.selectbox(key="tf.data.dataset").value == "cifar10"
    assert at.selectbox(key="tf.optim.optimizer").value == "lars"
    assert at.number_input(key="tf.optim.epochs").value == 500
    assert at.number_input(key="tf.optim.batch_size").value == 512
    assert at.number_input(key="tf.views.jitter_strength").value == 0.5
    assert at.number_input(key="tf.views.blur_prob").value == 0.0
    assert at.text_input(key="tf.run.name").value.startswith("cifar10-resnet18-")


def test_valid_submit_launches_the_form_values_and_selects_the_run(runs_dir, launches):
    at = app("train")
    at = submit(
        at,
        optim__epochs=3,
        method__temperature=0.2,
        optim__lr="0.1",
        model__proj_out_dim=32,
        views__jitter_strength=0.4,
        run__keep_best="uniformity",
        run__name="mine",
    )
    assert not at.exception and not errors(at)
    assert len(launches) == 1
    cfg = launches[0]
    assert cfg.run.keep_best == "uniformity"  # best.pt by the signal the label-free study trusts
    assert (cfg.run.name, cfg.run.runs_dir) == ("mine", str(runs_dir))
    assert (cfg.optim.epochs, cfg.method.temperature, cfg.optim.lr) == (3, 0.2, 0.1)
    assert (cfg.model.proj_out_dim, cfg.views.jitter_strength) == (32, 0.4)
    assert (cfg.data.dataset, cfg.model.backbone, cfg.model.cifar_stem) == ("digits", "resnet_mini", False)
    assert at.session_state["run"] == "mine"  # picked in the sidebar
    # (AppTest keeps the sidebar's elements of the first run only, so the page is checked instead.)
    assert any(h.value.endswith("Run mine") for h in at.subheader)  # and shown live
    assert any("Started run **mine**" in s.value for s in at.success)
    assert at.text_input(key="tf.run.name").value != "mine"  # a fresh name for the next run


def test_method_settings_reach_the_run_and_blank_means_the_methods_default(runs_dir, launches):
    at = app("train")
    assert at.number_input(key="tf.method.temperature").value is None  # "auto" until a method resolves it
    at.selectbox(key="tf.method.name").set_value("moco_v2")
    at.number_input(key="tf.method.queue_size").set_value(1024)
    at.checkbox(key="tf.method.moco_symmetric").check()
    at = submit(at, run__name="moco")
    assert not at.exception and not errors(at)
    cfg = launches[0]
    assert (cfg.method.name, cfg.method.queue_size, cfg.method.moco_symmetric) == ("moco_v2", 1024, True)
    assert (cfg.method.temperature, cfg.method.ema, cfg.method.ema_schedule) == (None, None, None)
    assert cfg.nproc == 1
    at = app("train")
    at.selectbox(key="tf.method.name").set_value("byol")
    at.selectbox(key="tf.method.ema_schedule").set_value("constant")
    at = submit(at, method__ema=0.99, method__pred_hidden_dim=256, run__name="byol")
    cfg = launches[1]
    assert (cfg.method.name, cfg.method.ema, cfg.method.ema_schedule, cfg.method.pred_hidden_dim) == (
        "byol",
        0.99,
        "constant",
        256,
    )


def test_gpu_count_is_offered_only_with_several_gpus(runs_dir, launches, monkeypatch):
    at = app("train")
    assert not [w for w in at.number_input if w.key == "tf_gpus"]  # this machine: no GPUs, no choice
    monkeypatch.setattr("simclr_core.hardware.gpu_count", lambda: 4)
    at = app("train")
    gpus = at.number_input(key="tf_gpus")
    assert gpus.value == 4  # all of them by default
    gpus.set_value(2)
    at = submit(at, optim__batch_size=256, run__name="ddp")
    assert not at.exception and not errors(at)
    assert launches[0].nproc == 2


def test_invalid_run_name_is_an_error_and_launches_nothing(runs_dir, launches):
    assert any("invalid run name '../x'" in e for e in refused(app("train"), run__name="../x"))
    assert launches == []


def test_zero_temperature_is_an_error_naming_the_field(runs_dir, launches):
    [error] = refused(app("train"), method__temperature=0.0)
    assert "**Temperature** must be a positive number" in error and "--" not in error
    assert launches == []


def test_a_batch_size_of_zero_is_said_beside_launch(runs_dir, launches):
    [error] = refused(app("train"), optim__batch_size=0)  # typed in, not bounced by a tooltip
    assert "**Batch size** must be at least 2, got 0" in error and "--" not in error
    at = fill(app("train"), optim__batch_size=0, optim__epochs=0)
    assert any("**Epochs**" in e for e in errors(at))
    assert launches == []


def test_bad_learning_rate_text_is_an_error(runs_dir, launches):
    assert any("learning rate 'fast' is not a number" in e for e in refused(app("train"), optim__lr="fast"))
    assert launches == []


def test_folder_dataset_needs_an_existing_folder(runs_dir, launches, roots):
    at = app("train")
    assert any(
        "needs an image folder" in e and "**Image folder**" in e
        for e in refused(at, data__dataset="folder", data__data_path="")
    )
    assert any("does not exist" in e for e in refused(at, data__data_path=str(roots / "nowhere")))
    (roots / "a.jpg").write_bytes(b"not a folder")
    assert any("is a file, not a folder" in e for e in refused(at, data__data_path=str(roots / "a.jpg")))
    (roots / "empty").mkdir()
    assert any("holds no images" in e for e in refused(at, data__data_path=str(roots / "empty")))
    assert launches == []
    assert [p.name for p in runs_dir.iterdir()] == []  # and no failed run folder


def test_a_folder_path_with_another_dataset_is_an_error(runs_dir, launches, roots):
    errs = refused(app("train"), data__dataset="digits", data__data_path=str(roots))
    assert any("**Image folder** is read only with **Dataset** folder" in e and "clear it" in e for e in errs)
    assert launches == []


def test_a_batch_larger_than_the_folder_is_an_error_and_the_folder_is_described(runs_dir, launches, roots):
    images = make_folder(roots / "pics", {"train/cat": 3, "train/dog": 2, "test/cat": 1, "test/dog": 1})
    at = fill(app("train"), data__dataset="folder", data__data_path=str(images), optim__batch_size=32)
    assert at.button(key="tf_launch").disabled
    assert any("**Batch size** 32 is larger than the 5 training images" in e for e in errors(at))
    described = " ".join(c.value for c in at.caption)
    assert "train: 5 images in 2 classes: cat, dog" in described and "test: 2 images in 2 classes" in described
    at = fill(at, optim__batch_size=4, run__name="pics")
    assert not errors(at) and not at.button(key="tf_launch").disabled
    assert any("Pre-trains on 5 images of folder" in c.value for c in at.caption)
    at.button(key="tf_launch").click().run()
    assert [c.data.data_path for c in launches] == [str(images)]


def test_cifar10_offline_and_not_downloaded_is_an_error(runs_dir, launches):
    at = app("train")
    at.selectbox(key="tf_preset").set_value("CIFAR-10 ResNet-18 (paper-style)").run()
    assert at.button(key="tf_launch").disabled
    assert any("CIFAR-10 is not in data/" in e and "cannot be reached" in e and "digits" in e for e in errors(at))
    assert launches == []


def test_folders_outside_the_allowed_roots_are_refused(runs_dir, launches, roots):
    at = app("train")
    for outside in ("/usr/share", "/", "/proc", str(roots / ".." / "..")):
        errs = refused(at, data__dataset="folder", data__data_path=outside)
        assert any("outside the folders this app may read" in e and "SIMCLR_STUDIO_ROOTS" in e for e in errs), errs
    link = roots / "link"
    link.symlink_to("/usr/share")  # a symlink out of a root is followed before the check
    assert any("outside the folders" in e for e in refused(at, data__data_path=str(link)))
    assert launches == []


def test_existing_run_name_is_an_error_naming_the_fix(finished_run, launches):
    errs = refused(app("train"), run__name="tiny")
    assert any("'tiny' already exists" in e and "resume it" in e and "another name" in e for e in errs)
    assert launches == []


def test_the_form_keeps_its_values_when_the_user_comes_back(runs_dir, launches, roots):
    at = fill(
        app("train"),
        optim__epochs=7,
        optim__batch_size=64,
        data__dataset="folder",
        data__data_path=str(roots),
        run__name="later",
    )
    at.switch_page("pages/augment.py").run()
    at.switch_page("pages/evaluate.py").run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert at.number_input(key="tf.optim.epochs").value == 7
    assert at.number_input(key="tf.optim.batch_size").value == 64
    assert at.selectbox(key="tf.data.dataset").value == "folder"
    assert at.text_input(key="tf.data.data_path").value == str(roots)
    assert at.text_input(key="tf.run.name").value == "later"


def test_the_form_is_no_st_form_so_enter_cannot_launch(runs_dir):
    at = app("train")
    assert not at.get("form")  # Enter in a field of an st.form submits it; only the Launch button launches
    assert at.button(key="tf_launch").label == "Launch"


def test_finished_run_shows_list_curves_and_resume(finished_run):
    at = app("train")
    assert not at.exception
    table = at.dataframe[0].value
    row = table[table["run"] == "tiny"].iloc[0]
    assert row["state"] == "finished" and row["epochs"] == "2/2" and row["method"] == "simclr"
    assert float(row["best kNN top-1 %"]) > 0 and float(row["last loss"]) > 0
    assert [c.key for c in at.get("plotly_chart")] == [
        "tf_loss",
        "tf_lr",
        "tf_knn",
        "tf_rankme",
        "tf_alignment",
        "tf_uniformity",
        "tf_lidar",
        "tf_areq",
        "tf_pseudo_knn",
    ]  # and the label-free health, with issue 20's signals for h and z
    assert at.button(key="tf_resume")
    assert at.number_input(key="tf_resume_epochs.tiny").value == 2 + 10
    assert not errors(at)


def test_a_collapsed_representation_raises_the_alarm(finished_run):
    from simclr_core.evaluation.health import collapse_alarm

    last = finished_run.metrics("epoch")[-1]
    finished_run.append_metrics(
        {
            **last,
            "epoch": 3,
            "step": last["step"] + 2,
            "rankme_h": 1.0,
            "rankme_z": 1.0,
            "collapse": collapse_alarm(1.0),
        }
    )
    at = app("train")
    assert not at.exception
    assert any("Collapse at epoch 3" in e and "effective rank is 1.00" in e for e in errors(at))
    [rank] = [spec for key, spec in plotly_specs(at) if key == "tf_rankme"]
    assert rank["data"][0]["x"] == [1, 2, 3] and rank["data"][0]["y"][-1] == 1.0  # h, and z beside it


def test_resume_calls_launch_with_the_new_total(finished_run, monkeypatch):
    calls = []
    monkeypatch.setattr(launch, "resume", lambda run, epochs=None, nproc=None: calls.append((run.name, epochs)))
    at = app("train")
    at.number_input(key="tf_resume_epochs.tiny").set_value(5)
    at.button(key="tf_resume").click().run()
    assert not at.exception
    assert calls == [("tiny", 5)]


def test_failed_run_shows_its_message_as_an_error(finished_run):
    finished_run.write_status("failed", "loss became nan at epoch 2; lower --lr, then resume")
    (finished_run.path / "console.log").write_text("Traceback ...\nUserError: loss became nan\n")
    at = app("train")
    assert not at.exception
    assert any("loss became nan at epoch 2" in e for e in errors(at))
    assert any("UserError: loss became nan" in c.value for c in at.code)


def test_views_from_the_augmentations_page_prefill_the_form(runs_dir, launches):
    views = {
        "jitter_strength": 0.3,
        "crop_scale_min": 0.2,
        "crop_scale_max": 0.9,
        "solarize_prob": 0.1,
        "blur_prob": 0.0,
    }
    at = app("train", train_views=views)
    assert any("Augmentations page" in i.value for i in at.info)
    assert at.number_input(key="tf.views.jitter_strength").value == 0.3
    assert at.slider(key="tf.views.crop_scale_min").value == 0.2
    submit(at, run__name="aug")
    v = launches[0].views
    assert (v.jitter_strength, v.crop_scale_max, v.solarize_prob) == (0.3, 0.9, 0.1)  # hidden knobs carried too


def test_a_run_whose_process_dies_at_start_shows_what_it_printed(runs_dir, monkeypatch):
    def dies(cfg: TrainConfig, nproc: int = 1) -> RunDir:
        run = new_run(cfg.run.runs_dir, cfg.run.name)
        cfg.save(run.config_path)
        (run.path / "console.log").write_text("ModuleNotFoundError: No module named 'torch'\n")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (run.path / "launch.json").write_text(json.dumps({"pid": dead.pid}))
        return run

    monkeypatch.setattr(launch, "launch", dies)
    at = submit(app("train"), run__name="doomed")
    assert not at.exception
    assert any("'doomed' ended before it started" in e for e in errors(at))
    assert any("No module named 'torch'" in c.value for c in at.code)


# ---- real processes through simclr_core.runs.launch ----------------------------------------------------------


def wait_for(predicate, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


@pytest.mark.slow
def test_launch_trains_a_tiny_run_in_its_own_process(tmp_path):
    cfg = tiny_config(tmp_path, "real")
    cfg.run.num_threads = 1
    run = launch.launch(cfg)
    assert wait_for(lambda: run.status().get("state") in ("finished", "failed", "died")), launch.console_tail(run)
    assert run.status()["state"] == "finished", launch.console_tail(run)
    epochs = run.metrics("epoch")
    assert [m["epoch"] for m in epochs] == [1, 2]
    assert run.last_ckpt.exists()
    assert wait_for(lambda: not launch.is_active(run), 30)  # the process exits (and is reaped) after its last status


@pytest.mark.slow
def test_stop_ends_a_long_run_cleanly(tmp_path):
    cfg = tiny_config(tmp_path, "long")
    cfg.optim.epochs, cfg.run.knn_every, cfg.run.num_threads = 1000, 0, 1
    run = launch.launch(cfg)
    assert wait_for(lambda: run.status().get("step", 0) > 0 or run.status().get("state") in ("failed", "died")), (
        launch.console_tail(run)
    )
    assert launch.is_active(run)
    launch.stop(run)
    assert wait_for(lambda: run.status().get("state") != "running" and not launch.is_active(run))
    st = run.status()
    assert st["state"] == "stopped", (st, launch.console_tail(run))
    assert run.last_ckpt.exists() and not run.stop_requested()


def test_a_run_with_a_checkpoint_offers_its_backbone_in_every_export_format(finished_run):
    at = app("train")
    assert not at.exception
    buttons = {b.key: b for b in at.button if (b.key or "").startswith("export-")}
    assert [b.label for b in buttons.values()] == [
        "Prepare safetensors",
        "Prepare timm",
        "Prepare onnx",
        "Prepare torchscript",
    ]
    assert buttons["export-timm"].disabled and "timm has no resnet_mini" in buttons["export-timm"].help
    assert not buttons["export-safetensors"].disabled and not buttons["export-onnx"].disabled
    # Prepare: the background worker writes the file (here inline), then the button downloads it
    buttons["export-onnx"].click().run()
    assert not at.exception
    [download] = [b.proto for b in at.get("download_button") if b.proto.label == "Download onnx"]
    assert "onnxruntime.InferenceSession" in download.help
    assert (finished_run.export_dir / "tiny.onnx").stat().st_size > 1000
    assert [b.label for b in at.button if (b.key or "").startswith("export-")] == [
        "Prepare safetensors",
        "Prepare timm",
        "Prepare torchscript",
    ]


def test_an_export_in_progress_shows_its_progress_and_survives_a_reload(finished_run, queue):
    queue.hold()
    at = app("train")
    next(b for b in at.button if b.key == "export-torchscript").click().run()
    assert not at.exception
    assert any("Writing tiny.torchscript.pt" in p.proto.text for p in at.get("progress"))
    again = app("train")  # a reload: a new session finds the job by its spec
    assert any("Writing tiny.torchscript.pt" in p.proto.text for p in again.get("progress"))
    queue.work()
    again.run()
    assert [b.proto.label for b in again.get("download_button")] == ["Download torchscript"]


# ---- run management (simclr_core.runs.manage) --------------------------------------------------------------


def test_rename_notes_archive_and_restore_from_the_page(finished_run, runs_dir):
    at = app("train")
    at.text_input(key="tf_rename.tiny").input("tiny-2")
    at.button(key="tf_rename").click().run()
    assert not at.exception and not errors(at)
    assert at.session_state["run"] == "tiny-2" and (runs_dir / "tiny-2" / "last.pt").exists()
    assert any(h.value == "Run tiny-2" for h in at.subheader)
    at.text_area(key="tf_notes.tiny-2").input("first try: lr 0.3")
    at.button(key="tf_save_notes").click().run()
    assert (runs_dir / "tiny-2" / "notes.md").read_text() == "first try: lr 0.3"
    assert any(i.value == "first try: lr 0.3" for i in at.info)  # shown with the run
    assert at.dataframe[0].value.iloc[0]["notes"] == "first try: lr 0.3"
    at.button(key="tf_archive").click().run()
    assert not at.exception and not (runs_dir / "tiny-2").exists()
    assert (runs_dir / ".archive" / "tiny-2" / "last.pt").exists()
    assert "No runs yet" in at.info[0].value
    at.button(key="tf_restore.tiny-2").click().run()
    assert not at.exception and (runs_dir / "tiny-2" / "last.pt").exists()
    assert any(h.value == "Run tiny-2" for h in at.subheader)


def test_a_running_run_cannot_be_renamed(finished_run, runs_dir):
    (finished_run.path / "launch.json").write_text(json.dumps({"pid": os.getpid()}))  # a live process
    finished_run.status_path.unlink()
    at = app("train")
    at.text_input(key="tf_rename.tiny").input("other")
    at.button(key="tf_rename").click().run()
    assert any("'tiny' is running" in e and "then rename it" in e for e in errors(at))
    assert finished_run.path.exists() and not (runs_dir / "other").exists()


def test_failed_runs_can_be_hidden_and_archived_at_once(finished_run, runs_dir):
    for name in ("bad-1", "bad-2"):
        run = new_run(runs_dir, name)
        tiny_config(runs_dir.parent, name).save(run.config_path)
        run.write_status("failed", "--batch-size 256 is larger than the 32 training images; lower it")
    at = app("train")
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["bad-1", "bad-2", "tiny"]
    assert "**Batch size** 256 is larger" in table[table["run"] == "bad-1"].iloc[0]["message"]  # form words
    at.toggle(key="hide_failed").set_value(True).run()
    assert list(at.dataframe[0].value["run"]) == ["tiny"]
    assert any("2 failed run(s) hidden" in c.value for c in at.caption)
    at.button(key="tf_archive_failed").click().run()
    assert not at.exception
    assert sorted(p.name for p in (runs_dir / ".archive").iterdir()) == ["bad-1", "bad-2"]
    assert list(at.dataframe[0].value["run"]) == ["tiny"]


def test_the_presets_expected_results_are_quoted_only_for_its_own_settings(runs_dir, roots):
    at = app("train")
    assert any(c.value.startswith("**Expected:**") for c in at.caption)
    at.selectbox(key="tf.data.dataset").set_value("folder").run()
    assert not at.exception
    assert not any(c.value.startswith("**Expected:**") for c in at.caption)
    assert any("you changed Dataset" in c.value for c in at.caption)
    at.selectbox(key="tf_preset").set_value(at.selectbox(key="tf_preset").value).run()  # back to the preset
    at.selectbox(key="tf.data.dataset").set_value("digits").run()
    assert any(c.value.startswith("**Expected:**") for c in at.caption)


def test_estimate_measures_the_forms_settings_in_the_background(runs_dir, queue, monkeypatch):
    from simclr_core.training import estimate

    monkeypatch.setattr(estimate, "DEFAULT_SECONDS", 2.0)  # a short measurement: the figures are not tested here
    at = app("train")
    assert any("**Estimate** measures it" in c.value for c in at.caption)
    queue.hold()
    at.button(key="tf_estimate_button").click().run()
    assert not at.exception
    assert any("Measuring these settings" in p.proto.text for p in at.get("progress"))
    queue.work()
    at.run()
    assert not at.exception
    [line] = [c.value for c in at.caption if "on this machine's" in c.value]
    assert line.startswith(":material/timer: about ") and "s per step x" in line and "measured just now" in line
    at.number_input(key="tf.optim.epochs").set_value(7).run()  # other settings: the estimate no longer holds
    assert any("The last estimate was for other settings" in c.value for c in at.caption)


def test_an_unlabelled_runs_health_charts_mark_the_epoch_the_study_prefers(runs_dir, tmp_path, monkeypatch):
    from simclr_core.evaluation import label_free

    from tests.evaluation.label_free_runs import fabricate, study

    path = tmp_path / "label_free_study.json"
    monkeypatch.setattr(label_free, "STUDY_FILE", path)  # not run yet: the stated default, RankMe (h)
    fabricate(runs_dir, names=("simclr-t05",))  # RankMe (h) 38.2, 55.7, 61.9, 60.4; LiDAR (h) highest at epoch 4
    at = app("train")
    assert not at.exception and not errors(at)
    said = " ".join(m.value for m in at.markdown)
    assert "**Epoch 3 is the best by RankMe (h)** (61.9; the dotted line below)" in said
    assert "RankMe (h): not measured" in said
    health = {k: s for k, s in plotly_specs(at) if k in ("tf_rankme", "tf_alignment", "tf_lidar", "tf_areq")}
    assert len(health) == 4
    for spec in health.values():
        [rule] = spec["layout"]["shapes"]
        assert rule["x0"] == rule["x1"] == 3 and rule["line"]["dash"] == "dot"
    assert any("this run's images have no labels" in i.value for i in at.info)
    [row] = at.dataframe[0].value.to_dict("records")  # the run list: the signal, and no kNN column of dashes
    assert row["RankMe (h), last epoch"] == "60.4" and "best kNN top-1 %" not in row

    path.write_text(json.dumps(study(runs="rankme_h", epochs="lidar_h")))
    at.run()
    said = " ".join(m.value for m in at.markdown)
    assert "**Epoch 4 is the best by LiDAR (h)** (190;" in said and "median Spearman ρ = 0.91" in said
    assert all(s["layout"]["shapes"][0]["x0"] == 4 for k, s in plotly_specs(at) if k in health)
