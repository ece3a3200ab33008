"""Widgets that keep their values through job waits, reruns, page switches and reloads, and the
widgets of config fields (label, range, step and help from the field table)."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import streamlit as st

from simclr_core.config import widget_spec
from simclr_core.errors import UserError
from simclr_core.resolve import auto_note
from simclr_core.training import precheck

# ---- widgets that keep their values -------------------------------------------------------------------
#
# Streamlit forgets a widget's value at the end of any run that does not draw it: a page that stops to
# wait for a background job, a visit to another page. A kept widget's value is copied here on every run,
# put back when Streamlit dropped it, and (with a ``url`` name) written to the page's address, so a
# reload or a shared link opens the page as it was.

KEPT = "_kept"  # session key: {widget key: last value}
DRAWN = "_drawn"  # session key: the kept widgets drawn by the last run


def keep_widgets() -> None:
    """Call first on every run (app.py): record each kept widget's value, and give it back to any that the last
    run did not draw. Both the server and the browser forget such a widget (a page that stopped to wait for a
    job, a visit to another page); the browser would draw it again at its default (a slider at its minimum)
    and send that back, unless the value is set anew, which tells the browser to show it."""
    kept = st.session_state.setdefault(KEPT, {})
    drawn = st.session_state.get(DRAWN, set())
    st.session_state[DRAWN] = set()
    for key, value in kept.items():
        if key in st.session_state and key in drawn:
            kept[key] = st.session_state[key]
        else:
            st.session_state[key] = st.session_state.get(key, value)


def _from_url(text: str, default: Any) -> Any:
    """A query parameter as a value of ``default``'s type (JSON but for text); ``default`` when it is not one."""
    if isinstance(default, str):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return default
    if isinstance(default, tuple) and isinstance(value, list):  # a range slider's (low, high)
        value = tuple(value)
    if default is None or isinstance(value, type(default)) and isinstance(value, bool) == isinstance(default, bool):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return default


def keep(key: str, default: Any, ok: Callable[[Any], bool] = lambda v: True, url: str | None = None) -> Any:
    """Make the widget ``key`` keep its value (through job waits, page visits and, with ``url``, reloads).

    Call it just before the widget, which then takes no default argument of its own (``value=``,
    ``index=``): its first value is ``default``, or the address's ``?<url>=...`` on a new session. A
    value the widget no longer offers (``ok`` false: a class of another split) falls back to
    ``default``. While the value differs from ``default``, the address carries it. Returns the value.
    """
    state = st.session_state
    kept = state.setdefault(KEPT, {})
    if key not in state:
        if key in kept:
            state[key] = kept[key]
        elif url and url in st.query_params:
            state[key] = _from_url(st.query_params[url], default)
    try:
        fine = key in state and ok(state[key])
    except (TypeError, ValueError):
        fine = False
    if not fine:
        state[key] = default
    kept[key] = value = state[key]
    state.setdefault(DRAWN, set()).add(key)
    if url:
        text = value if isinstance(value, str) else json.dumps(value)
        if value == default:
            st.query_params.pop(url, None)
        elif st.query_params.get(url) != text:
            st.query_params[url] = text
    return value


@contextmanager
def user_errors(labels: dict[str, str] | None = None):
    """Show a UserError as an error box (never a traceback) and stop the page there.

    ``labels`` maps config fields to the page's labels: the message names those fields as the page
    does (``--data-path`` -> **Image folder**), not by their command-line flags.
    """
    try:
        yield
    except UserError as e:
        st.error(precheck.for_form(str(e), labels) if labels else str(e), icon=":material/error:")
        st.stop()


# ---- widgets of config fields: label, help, range and step from the field table (simclr_core.config) ----


def setting_slider(where: Any, section: str, names: tuple[str, ...], key: str, label: str | None = None) -> None:
    """A slider for one config field, or a range slider for a (low, high) pair of fields, with the
    field's label, help, ends and step, so every page slides a setting over the same grid."""
    specs = [widget_spec(section, n) for n in names]
    s = specs[0]
    where.slider(
        label or s.label, s.min, s.max, step=s.step, key=key, help=" / ".join(setting_help(section, n) for n in names)
    )


def setting_input(where: Any, section: str, name: str, key: str) -> None:
    """A number input for one config field, blank ("auto") allowed where the field may be None.

    No min / max: a wrong value is kept, and the page explains it with the library's own check
    (a bounded input would clamp it silently, or say why only in a tooltip).
    """
    s = widget_spec(section, name)
    where.number_input(
        s.label,
        step=s.step,
        format=s.format,
        placeholder="auto" if s.optional else None,
        key=key,
        help=setting_help(section, name),
    )


def setting_help(section: str, name: str) -> str:
    """A config field's help, with its "auto" values where the method or the head decides them."""
    auto = auto_note(section, name)
    return widget_spec(section, name).help + (f" ({auto})" if auto else "")
