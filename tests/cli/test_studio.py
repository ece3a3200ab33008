"""simclr-studio: the app's own server settings as flags, and a copy of the app where its folder is read-only."""

from __future__ import annotations

import os
import tomllib

from simclr_core.cli import studio
from simclr_core.resources import app_root, configs_dir

from tests.conftest import REPO


def test_in_the_checkout_the_app_is_the_repositorys():
    assert app_root() == REPO and configs_dir() == REPO / "configs"


def test_the_config_toml_becomes_command_line_flags():
    flags = studio.server_flags(REPO / ".streamlit" / "config.toml")
    conf = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert "--server.address=localhost" in flags and "--server.enableStaticServing=true" in flags
    assert "--browser.gatherUsageStats=false" in flags
    assert len(flags) == sum(len(v) for v in conf.values())


def test_a_read_only_app_folder_runs_from_a_copy_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a system-wide install
    app = studio.writable_app(REPO)
    assert app == tmp_path / "cache" / "simclr-studio" / f"app-{studio.__version__}"
    assert (app / "app.py").read_text() == (REPO / "app.py").read_text()
    assert (app / "pages" / "embeddings.py").is_file() and (app / "static").is_dir()
    assert studio.writable_app(REPO) == app  # made once


def test_it_starts_streamlit_on_the_app_with_those_flags(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(studio.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 0)
    assert studio.main(["--runs-dir", str(tmp_path / "runs"), "--server.port", "8999"]) == 0
    [(cmd, env)] = calls
    assert cmd[1:5] == ["-m", "streamlit", "run", str(REPO / "app.py")]
    assert "--server.enableStaticServing=true" in cmd and cmd[-2:] == ["--server.port", "8999"]
    assert env["SIMCLR_RUNS_DIR"] == str(tmp_path / "runs")
