"""Following running runs cheaply: poll their files, redraw only when they grew."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from ui.runs import live_runs, run_states

POLL_S = 2.0  # how often a page checks its runs' files while a training process is alive
IDLE_POLL_S = 15.0  # and while none is: a run started from the command line shows up by itself
REDRAW_S = 5.0  # a page redraws for new metrics at most this often (a state change: at the next poll)
WATCH = "_watch"  # session key: (paths, their stamps when the page drew them)


def watch(*paths: Path) -> None:
    """Draw the page again when one of these files changes, while a run's process is alive (the sidebar's
    poll), at most every :data:`REDRAW_S`: the Train page watches its run's status, metrics and log."""
    st.session_state[WATCH] = (paths, _stamps(paths), time.monotonic())


def _stamps(paths: tuple[Path, ...]) -> tuple[tuple[int, int] | None, ...]:
    out = []
    for path in paths:
        try:
            stat = path.stat()
            out.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def follow_runs(states: dict[str, str], alive: frozenset[str]) -> None:
    """The poll: a stat of each watched file, a read of each run's status and a look at its process; the whole
    page is drawn again only when one of them changed since the page was drawn."""
    if not fragment_rerun():
        return
    watched = st.session_state.get(WATCH)
    now = run_states()
    if now != states or live_runs(now) != alive:
        st.rerun()
    # new metrics: a full redraw costs ~0.1 s of the server's CPU, so not for every log step of a fast run
    if watched and time.monotonic() - watched[2] >= REDRAW_S and _stamps(watched[0]) != watched[1]:
        st.rerun()


def fragment_rerun() -> bool:
    """True when this is a fragment's own rerun (not the full run that drew the page a moment ago)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return bool(ctx and ctx.fragment_ids_this_run)
