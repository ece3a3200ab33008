"""The Train page's list of every run, and their management: rename, notes, archive, restore.

The table summarises each run folder (:func:`simclr_core.runs.progress.summarize`); the management
buttons call :mod:`simclr_core.runs.manage` from callbacks, which run before the page is drawn, so a
renamed or restored run can be picked in the sidebar at once and the outcome is said on the next draw.
"""

from __future__ import annotations

import time

import streamlit as st

from simclr_core.errors import UserError
from simclr_core.evaluation import label_free
from simclr_core.runs import manage
from simclr_core.runs.progress import summarize
from simclr_core.runs.rundir import RunDir
from ui.run_form import for_form
from ui.runs import run_states, runs_dir


def run_list(states: dict[str, str]) -> None:
    """Every run's state, progress and best numbers, with the label-free signal the Evaluate page ranks by."""
    signal, _ = label_free.chosen_signal(label_free.load_study(), "runs")
    column = f"{label_free.signal_name(signal)}, last epoch"
    hidden = [n for n, s in states.items() if manage.is_failed(s)] if st.session_state.get("hide_failed") else []
    rows = []
    for name in states:
        if name in hidden:
            continue
        run = RunDir(runs_dir() / name)
        s = summarize(run)
        rows.append(
            {
                "run": s.name,
                "state": s.state,
                "method": s.method,
                "epochs": f"{s.epoch}/{s.epochs}",
                "last loss": "–" if s.last_loss is None else f"{s.last_loss:.4f}",
                "best kNN top-1 %": "–" if s.best_knn is None else f"{s.best_knn:.2f}",  # text: no "None" cells
                column: f"{s.signals[signal]:.3g}" if signal in s.signals else "–",
                "message": for_form(s.message),
                "notes": manage.read_notes(run).strip().split("\n")[0][:80],
            }
        )
    if all(r["best kNN top-1 %"] == "–" for r in rows):  # images without labels: a column of dashes says nothing
        rows = [{k: v for k, v in r.items() if k != "best kNN top-1 %"} for r in rows]
    st.dataframe(rows, hide_index=True)
    more = f" {len(hidden)} failed run(s) hidden (sidebar: *Hide failed runs*)." if hidden else ""
    st.caption("Pick a run in the sidebar to watch, stop or resume it." + more)


# ---- run management: rename, notes, archive (simclr_core.runs.manage) ----------------------------------------


def manage_message(kind: str, text: str) -> None:
    """Keep a callback's outcome ("success" or "error") for the management panel's next draw."""
    st.session_state["tf_manage_msg"] = (kind, text)


def on_rename(old: str) -> None:
    new = st.session_state.get(f"tf_rename.{old}", "").strip()
    try:
        run = manage.rename(runs_dir(), old, new)
    except UserError as e:
        manage_message("error", str(e))
        return
    st.session_state["run"] = run.name
    manage_message("success", f"Renamed run '{old}' to '{run.name}'.")


def on_notes(name: str) -> None:
    try:
        manage.write_notes(RunDir(runs_dir() / name), st.session_state.get(f"tf_notes.{name}", ""))
    except UserError as e:
        manage_message("error", str(e))
        return
    manage_message("success", f"Saved the notes of run '{name}'.")


def on_archive(names: list[str]) -> None:
    done, failed = [], []
    for name in names:
        try:
            manage.archive(runs_dir(), name)
            done.append(name)
        except UserError as e:
            failed.append(str(e))
    if st.session_state.get("run") in done:
        st.session_state.pop("run")
    if failed:
        manage_message("error", " ".join(failed))
    else:
        manage_message(
            "success",
            f"Archived {', '.join(repr(n) for n in done)} into "
            f"`{manage.archive_dir(runs_dir())}`: restore below, whenever you like.",
        )


def on_restore(folder: str) -> None:
    try:
        run = manage.restore(runs_dir(), folder)
    except UserError as e:
        manage_message("error", str(e))
        return
    st.session_state["run"] = run.name
    manage_message("success", f"Restored run '{run.name}'.")


def manage_runs(run: RunDir | None) -> None:
    """Rename the current run, write its notes, archive it or every failed run, restore archived runs."""
    message = st.session_state.pop("tf_manage_msg", None)
    archived = manage.list_archived(runs_dir())
    if run is None and not archived and not message:
        return
    with st.expander(
        "Manage runs: rename, notes, archive", icon=":material/folder_managed:", expanded=message is not None
    ):
        if message:
            (st.success if message[0] == "success" else st.error)(message[1])
        if run is not None:
            st.caption(f"For the run picked in the sidebar, **{run.name}**:")
            c1, c2 = st.columns(2)
            c1.text_input(
                "New name",
                key=f"tf_rename.{run.name}",
                placeholder=run.name,
                help="letters, digits, '.', '_' and '-'; not while the run is running",
            )
            c1.button("Rename", key="tf_rename", icon=":material/edit:", on_click=on_rename, args=(run.name,))
            st.session_state.setdefault(f"tf_notes.{run.name}", manage.read_notes(run))
            c2.text_area(
                "Notes",
                key=f"tf_notes.{run.name}",
                height=100,
                help=f"what you tried and why; kept in the run folder ({manage.NOTES})",
            )
            c2.button("Save notes", key="tf_save_notes", icon=":material/save:", on_click=on_notes, args=(run.name,))
            failed = [n for n, s in run_states().items() if manage.is_failed(s)]
            c3, c4 = st.columns(2)
            c3.button(
                f"Archive run {run.name}",
                key="tf_archive",
                icon=":material/archive:",
                on_click=on_archive,
                args=([run.name],),
                help="moves its folder into the runs folder's .archive/; restore it below",
            )
            c4.button(
                f"Archive the {len(failed)} failed run(s)",
                key="tf_archive_failed",
                icon=":material/delete_sweep:",
                on_click=on_archive,
                args=(failed,),
                disabled=not failed,
                help="runs that failed, died or never started: " + (", ".join(failed) or "none"),
            )
        if archived:
            st.caption(f"Archived runs (in `{manage.archive_dir(runs_dir())}`):")
            for a in archived[:20]:
                r1, r2 = st.columns([3, 1], vertical_alignment="center")
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(a.archived)) if a.archived else "?"
                r1.markdown(f"`{a.name}` · archived {when}")
                r2.button(
                    "Restore",
                    key=f"tf_restore.{a.folder}",
                    icon=":material/unarchive:",
                    on_click=on_restore,
                    args=(a.folder,),
                )
