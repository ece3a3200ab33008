"""The Evaluate page's *Rank without labels*: the picked runs ordered by a label-free signal, each run's best
epoch, how far to trust the order, and the kNN and probe numbers beside it on labelled data.

The ranking is :func:`simclr_core.evaluation.compare.label_free_ranking`; the signal, its direction and the
trust line come from :mod:`simclr_core.evaluation.label_free` and the study file it reads.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from simclr_core.evaluation import label_free
from simclr_core.evaluation.compare import label_free_ranking
from simclr_core.runs.rundir import RunDir
from ui.runs import runs_dir

AT = {"last": "last monitor epoch", "preferred": "each run's best epoch"}


def ranking(metrics: dict[str, list[dict[str, Any]]]) -> None:
    """The picked runs (name -> their epoch lines) ranked by a label-free signal (the study's best unless the
    user picks another), each with the epoch the study's best epoch signal prefers, how far to trust the order,
    and, on labelled data, the kNN and probe numbers beside it."""
    st.subheader("Rank without labels")
    study = label_free.load_study()
    best, measured = label_free.chosen_signal(study, "runs")
    epoch_signal, _ = label_free.chosen_signal(study, "epochs")
    note = " (the study's best)" if measured else " (default; not measured)"
    c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
    signal = c1.selectbox(
        "Rank by",
        label_free.SIGNALS,
        index=label_free.SIGNALS.index(best),
        format_func=lambda s: label_free.signal_name(s) + (note if s == best else ""),
        key="eval_rank_signal",
        help="A measure of the representation that needs no labels, recorded at every monitor epoch.",
    )
    at = c2.radio(
        "Read it at",
        list(AT),
        format_func=AT.get,
        horizontal=True,
        key="eval_rank_at",
        help=f"Each run's best epoch is the one {label_free.signal_name(epoch_signal)} rates best.",
    )
    runs = [RunDir(runs_dir() / n) for n in metrics]
    result = label_free_ranking(runs, signal, epoch_signal, at=at, metrics=metrics)
    name, ename = label_free.signal_name(signal), label_free.signal_name(epoch_signal)
    if not result.rows:
        st.caption(
            f"Nothing to rank yet: no monitor epoch of these runs has {name} (it is measured at every monitor "
            "epoch of a run whose probe is on)."
        )
        return
    better = "higher is better" if label_free.direction(signal) > 0 else "lower is better"
    st.dataframe(
        pd.DataFrame(result.rows),
        hide_index=True,
        key="eval_rank_table",
        column_config={
            "rank": st.column_config.NumberColumn("#", width="small"),
            "run": "Run",
            "method": "Method",
            "epoch": st.column_config.NumberColumn("Epoch read", help="the monitor epoch whose value ranks the run"),
            "value": st.column_config.NumberColumn(name, format="%.3g", help=better),
            "preferred_epoch": st.column_config.NumberColumn(
                f"Best epoch by {ename}", help=f"the monitor epoch {ename} rates best"
            ),
            "last_epoch": None,
            "knn_top1": st.column_config.NumberColumn("kNN top-1 % (monitor)", format="%.1f"),
            "knn_rank": st.column_config.NumberColumn("kNN rank", help="the run's place by the kNN monitor"),
            "probe_top1": st.column_config.NumberColumn("Probe top-1 %", format="%.1f", help="newest evaluation"),
            "probe_epoch": st.column_config.NumberColumn("Probe at epoch"),
        },
    )
    methods = {r["method"] for r in result.rows if r["method"]}
    st.markdown(f"**How far to trust this order.** {label_free.trust(study, signal, 'runs', methods)}")
    st.caption(f"**Best epoch.** {label_free.trust(study, epoch_signal, 'epochs', methods)}")
    if result.agreement is not None:
        rho, n = result.agreement
        verdict = "agree" if rho >= 0.5 else "partly agree" if rho >= 0.2 else "disagree"
        st.caption(
            f"On these {n} labelled runs {name} and the kNN monitor **{verdict}**: Spearman ρ = {rho:.2f} between "
            "their two orders."
        )
    if result.missing:
        st.caption(f"Not ranked yet (no monitor epoch with {name}): {', '.join(result.missing)}.")
    fig = px.line(
        pd.DataFrame(result.curves),
        x="epoch",
        y="value",
        color="run",
        markers=True,
        title=f"{name} per monitor epoch ({better})",
        labels={"value": name},
    )
    picks = pd.DataFrame(result.picks)
    fig.add_scatter(
        x=picks["epoch"],
        y=picks["value"],
        text=picks["run"],
        mode="markers",
        marker={"symbol": "star", "size": 15, "color": "gold", "line": {"width": 1, "color": "black"}},
        name=f"best epoch by {ename}",
        hovertemplate="%{text}: epoch %{x}<extra></extra>",
    )
    fig.update_xaxes(dtick=1 if result.curves and max(c["epoch"] for c in result.curves) <= 20 else None)
    st.plotly_chart(fig, key="eval_rank_curves")
