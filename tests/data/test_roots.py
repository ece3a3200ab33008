"""simclr_core.data.roots: the app reads image folders only below the roots whoever starts the server allows."""

import os

import pytest

from simclr_core.data.roots import ENV, allowed_folder, allowed_roots
from simclr_core.errors import UserError


@pytest.fixture
def home(tmp_path, monkeypatch):
    """$HOME is a temp folder, the app runs in another, and $SIMCLR_STUDIO_ROOTS is unset."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    (work / "data").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.chdir(work)
    return home


def test_the_default_roots_are_home_and_the_apps_data_folder(home, tmp_path):
    assert allowed_roots() == [home.resolve(), (tmp_path / "work" / "data").resolve()]
    assert allowed_folder(str(home / "pics")) == home / "pics"  # need not exist: the caller says so next
    assert allowed_folder("~/pics") == home / "pics"
    assert allowed_folder("data/cifar") == tmp_path / "work" / "data" / "cifar"
    assert allowed_folder(str(home)) == home


@pytest.mark.parametrize(
    "path", ["/", "/usr/share", "/proc", "/etc/passwd", "../../..", "data/../..", "~/../other-user"]
)
def test_paths_outside_the_roots_are_refused_naming_the_setting(home, path):
    with pytest.raises(UserError, match=f"outside the folders this app may read .*{ENV}="):
        allowed_folder(path, "Image folder")


def test_symlinks_are_resolved_before_the_check(home, tmp_path):
    (home / "out").symlink_to("/usr/share")
    (home / "pics").mkdir()
    (home / "in").symlink_to(home / "pics")
    with pytest.raises(UserError, match="outside"):
        allowed_folder(str(home / "out"))
    with pytest.raises(UserError, match="outside"):
        allowed_folder(str(home / "out" / ".." / "share"))
    assert allowed_folder(str(home / "in")) == home / "pics"
    (home / "loop").symlink_to(home / "loop")  # a loop neither hangs nor crashes
    allowed_folder(str(home / "loop"))


def test_a_prefix_is_not_a_parent(home, tmp_path):
    (tmp_path / "home-other").mkdir()
    with pytest.raises(UserError, match="outside"):
        allowed_folder(str(tmp_path / "home-other"))


def test_the_setting_replaces_the_defaults(home, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv(ENV, f"{a}{os.pathsep}{b}{os.pathsep}")
    assert allowed_roots() == [a, b]
    assert allowed_folder(str(b / "x")) == b / "x"
    with pytest.raises(UserError, match="outside"):
        allowed_folder(str(home))
    monkeypatch.setenv(ENV, "  ")  # blank: the defaults
    assert allowed_roots()[0] == home


def test_empty_and_nul_paths_are_errors(home):
    with pytest.raises(UserError, match="is empty"):
        allowed_folder("  ")
    with pytest.raises(UserError, match="not a valid path"):
        allowed_folder(str(home) + "/a\x00b")
