"""``simclr-studio``: start the app, from a checkout or from an installed package.

The same as ``streamlit run app.py`` in the repository, from any folder: runs go to ``./checkpoints``
of the folder it is started in (or ``--runs-dir``), and the server gets the settings of the app's own
``.streamlit/config.toml``, which Streamlit itself reads only from the folder it is started in.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from simclr_core import __version__
from simclr_core.resources import app_root, copy_app


def server_flags(config_toml: Path) -> list[str]:
    """The options of a Streamlit config.toml as ``--section.key=value`` command-line flags."""
    with open(config_toml, "rb") as f:
        conf = tomllib.load(f)
    flags = []
    for section, options in conf.items():
        for key, value in options.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags.append(f"--{section}.{key}={text}")
    return flags


def writable_app(root: Path) -> Path:
    """``root`` if the app may write there (thumbnails go to its static/ folder), else a copy in the user's cache.

    A wheel installed system-wide is read-only; Streamlit serves static files only from beside the
    script, so the app runs from a copy, made once per version.
    """
    if os.access(root, os.W_OK) and os.access(root / "static", os.W_OK):
        return root
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "simclr-studio" / f"app-{__version__}"
    if not (cache / "app.py").is_file():
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        copy_app(root, tmp)
        (tmp / "static").mkdir(exist_ok=True)
        os.replace(tmp, cache)
    return cache


# Headless Chromium as the browser tests and benches drive it (Playwright with Debian's Chromium:
# no browser download, and none of its background traffic, which has no network to reach).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
)


def free_port() -> int:
    """A TCP port free on localhost now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    script: Path, cwd: Path, env: dict[str, str | None] | None = None, flags: Sequence[str] = (), timeout: float = 90
) -> tuple[subprocess.Popen[bytes], str]:
    """``streamlit run script``, headless on a free localhost port, once it answers: (process, url).

    For the browser tests and benches: ``cwd/streamlit.log`` gets its output, ``env`` changes this
    process's environment for it (None: unset; this checkout goes on PYTHONPATH), ``flags`` are more
    server options (e.g.
    :func:`server_flags` of the app's config.toml). Raises RuntimeError, with the log's end, if it does
    not answer within ``timeout`` seconds.
    """
    port = free_port()
    checkout = Path(__file__).resolve().parents[2]
    environ = {**os.environ, "PYTHONPATH": str(checkout), **(env or {})}
    log = cwd / "streamlit.log"
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), *flags]
            + ["--server.headless=true", f"--server.port={port}", "--server.address=127.0.0.1"]
            + ["--browser.gatherUsageStats=false"],
            cwd=cwd,
            env={k: v for k, v in environ.items() if v is not None},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"streamlit did not start: {log.read_text(errors='replace')[-2000:]}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="simclr-studio",
        description="Start the SimCLR Studio app in the browser. "
        "Other options (e.g. --server.port 8600) go to `streamlit run`.",
    )
    p.add_argument("--runs-dir", help="folder of run folders [default: ./checkpoints, or $SIMCLR_RUNS_DIR]")
    p.add_argument("--version", action="version", version=f"simclr-studio {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args, streamlit_args = build_parser().parse_known_args(argv)
    root = app_root()
    if not (root / "app.py").is_file():
        print(f"error: the app's files are missing from {root}; reinstall simclr-studio", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.runs_dir:
        env["SIMCLR_RUNS_DIR"] = str(Path(args.runs_dir).resolve())
    app = writable_app(root)
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app / "app.py"),
        *server_flags(root / ".streamlit" / "config.toml"),
        *streamlit_args,
    ]
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
