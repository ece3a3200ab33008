"""The Augmentations page: positive pairs from the training views, image picking, knobs sent to Train."""

from dataclasses import fields

from simclr_core.config import ViewConfig, widget_spec

from tests.pages.conftest import app


def shown(at) -> list[str]:
    """Captions of every image on the page, one per image."""
    return [c for im in at.main.image for c in im.captions]


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def test_renders_without_runs_on_the_bundled_digits(runs_dir):
    at = app("augment")
    assert not at.exception
    assert at.selectbox(key="aug_source").value == "digits"
    assert len(shown(at)) == 3 * at.slider(key="aug_n").value
    assert any("digits/train" in c.value for c in at.caption)


def test_renders_the_finished_runs_dataset(finished_run):
    at = app("augment")
    assert not at.exception
    assert at.selectbox(key="aug_source").value == "run"
    assert any("16×16 px" in c.value for c in at.caption)  # the run stores 16 px images
    assert at.slider(key="aug_crop_size").value == 16
    assert at.slider(key="aug_blur_prob").value == 0.0  # the run's default: no blur at 64 px or less


def test_one_row_of_three_images_per_pair(runs_dir):
    at = app("augment")
    at.slider(key="aug_n").set_value(3).run()
    caps = shown(at)
    assert len(caps) == 9
    assert [c.split(" · ")[-1] for c in caps[:3]] == ["original", "view 1", "view 2"]
    # the three images of a row show the same dataset image, captioned with its label
    assert len({c.split(" · ")[0] for c in caps[:3]}) == 1 and caps[0].split(" · ")[1] in [str(d) for d in range(10)]


def test_resample_draws_a_new_seed_and_new_images(runs_dir):
    at = app("augment")
    seed, before = at.session_state["aug_seed"], shown(at)
    button(at, "Resample").click().run()
    assert not at.exception
    assert at.session_state["aug_seed"] != seed
    assert shown(at) != before


def test_images_by_index(runs_dir):
    at = app("augment")
    at.radio(key="aug_pick").set_value("By index").run()
    at.text_input(key="aug_indices").input("7, 3").run()
    caps = shown(at)
    assert len(caps) == 6 and caps[0].startswith("#7 ") and caps[3].startswith("#3 ")


def test_an_out_of_range_index_is_an_error_not_a_traceback(runs_dir):
    at = app("augment")
    at.radio(key="aug_pick").set_value("By index").run()
    at.text_input(key="aug_indices").input("1, 5000").run()
    assert not at.exception
    assert "index 5000 is out of range" in at.error[0].value and "0 to 1436" in at.error[0].value
    assert shown(at) == []
    at.text_input(key="aug_indices").input("1, two").run()
    assert "'two' is not a whole number" in at.error[0].value


def test_cifar_preset_sets_the_papers_values(runs_dir):
    at = app("augment")
    button(at, "Paper CIFAR (s=0.5, no blur)").click().run()
    assert at.slider(key="aug_jitter_strength").value == 0.5
    assert at.slider(key="aug_blur_prob").value == 0.0
    button(at, "Paper ImageNet defaults").click().run()
    assert at.slider(key="aug_jitter_strength").value == 1.0 and at.slider(key="aug_blur_prob").value == 0.5


def test_train_with_these_settings_hands_the_view_config_to_train(runs_dir):
    at = app("augment")
    at.slider(key="aug_jitter_strength").set_value(0.3).run()
    at.slider(key="aug_crop_scale").set_value((0.2, 0.9)).run()
    at.slider(key="aug_crop_size").set_value(24).run()
    button(at, "Train with these settings").click().run()
    assert not at.exception  # now on the Train page
    views = at.session_state["train_views"]
    assert set(views) == {f.name for f in fields(ViewConfig)}
    assert views["jitter_strength"] == 0.3 and views["crop_size"] == 24
    assert (views["crop_scale_min"], views["crop_scale_max"]) == (0.2, 0.9)
    assert views["blur_prob"] == 0.0  # digits are 32 px: the resolved default, written out
    ViewConfig(**views)  # a valid config


def test_a_dataset_that_cannot_be_loaded_shows_why(runs_dir, monkeypatch):
    from simclr_core.data import datasets as data
    from simclr_core.errors import UserError

    def offline(*a, **kw):
        raise UserError("CIFAR-10 is not in data/ and could not be downloaded (offline?)")

    monkeypatch.setattr(data, "_load_torchvision", offline)  # the same on every machine, online or not
    at = app("augment")
    at.selectbox(key="aug_source").set_value("cifar10").run()
    assert not at.exception
    assert "could not be downloaded" in at.error[0].value
    assert shown(at) == []


def folder_of_images(root, n=4):
    from PIL import Image

    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (60 * i % 255, 100, 30)).save(root / c / f"{i}.png")
    return root


def test_folders_outside_the_allowed_roots_are_refused_and_nothing_is_read(runs_dir, tmp_path, monkeypatch):
    allowed = folder_of_images(tmp_path / "allowed")
    monkeypatch.setenv("SIMCLR_STUDIO_ROOTS", str(allowed))
    at = app("augment")
    at.selectbox(key="aug_source").set_value("folder").run()
    for outside in ("/usr/share", "/", "/proc", "../../../..", str(allowed / ".." / "..")):
        at.text_input(key="aug_folder").input(outside).run()
        assert not at.exception
        assert "outside the folders this app may read" in at.error[0].value, outside
        assert "SIMCLR_STUDIO_ROOTS" in at.error[0].value
        assert shown(at) == []
    assert not (tmp_path / "data" / "cache").exists()  # nothing decoded, nothing cached
    (allowed / "x.jpg").write_bytes(b"")
    at.text_input(key="aug_folder").input(str(allowed / "x.jpg")).run()
    assert "**Image folder**" in at.error[0].value and "is a file, not a folder" in at.error[0].value
    (allowed / "empty").mkdir()
    at.text_input(key="aug_folder").input(str(allowed / "empty")).run()
    assert "holds no images" in at.error[0].value and "--" not in at.error[0].value
    at.text_input(key="aug_folder").input(str(allowed)).run()
    assert not at.exception and not at.error and len(shown(at)) == 3 * 6


def test_train_with_these_settings_keeps_the_dataset_and_folder(runs_dir, tmp_path, monkeypatch):
    allowed = folder_of_images(tmp_path / "allowed")
    monkeypatch.setenv("SIMCLR_STUDIO_ROOTS", str(allowed))
    at = app("train")
    at.number_input(key="tf.optim.epochs").set_value(9).run()  # set on Train first: kept too
    at.switch_page("pages/augment.py").run()
    at.selectbox(key="aug_source").set_value("folder").run()
    at.text_input(key="aug_folder").input(str(allowed)).run()
    at.slider(key="aug_jitter_strength").set_value(0.3).run()
    button(at, "Train with these settings").click().run()
    assert not at.exception
    assert at.selectbox(key="tf.data.dataset").value == "folder"
    assert at.text_input(key="tf.data.data_path").value == str(allowed)
    assert at.number_input(key="tf.views.jitter_strength").value == 0.3
    assert at.number_input(key="tf.optim.epochs").value == 9


def test_the_knobs_are_kept_when_the_user_comes_back(runs_dir):
    at = app("augment")
    at.slider(key="aug_jitter_strength").set_value(0.3).run()
    at.slider(key="aug_n").set_value(2).run()
    at.switch_page("pages/evaluate.py").run()
    at.switch_page("pages/augment.py").run()
    assert not at.exception
    assert at.slider(key="aug_jitter_strength").value == 0.3 and at.slider(key="aug_n").value == 2
    assert len(shown(at)) == 6


def test_both_pages_show_a_view_setting_with_the_same_range_and_step(runs_dir):
    """The sliders' ends and steps come from one table (the config's field metadata), read off each page."""
    at = app("train")
    train = {n: at.slider(key=f"tf.views.{n}") for n in ("crop_scale_min", "jitter_prob", "grayscale_prob")}
    train_steps = {n: at.number_input(key=f"tf.views.{n}").step for n in ("jitter_strength", "blur_prob")}
    at.switch_page("pages/augment.py").run()
    assert not at.exception
    for name, t in train.items():
        a = at.slider(key="aug_crop_scale" if name == "crop_scale_min" else f"aug_{name}")
        spec = widget_spec("views", name)
        assert (a.min, a.max, a.step) == (t.min, t.max, t.step) == (spec.min, spec.max, spec.step), name
        assert a.help.startswith(t.help)  # the same help text (a range slider shows both of its fields')
    for name, step in train_steps.items():  # a number input on Train (blank is "auto"), a slider here
        assert at.slider(key=f"aug_{name}").step == step == widget_spec("views", name).step, name
    assert at.slider(key="aug_jitter_prob").label == train["jitter_prob"].label == "Colour jitter probability"
