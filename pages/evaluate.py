"""Evaluate and compare runs: kNN and linear-probe accuracy, confusion matrix, the runs ranked without labels,
config differences, curves.

The evaluation itself is an "evaluate" job of the background worker (simclr_core.explorer.jobs); this page submits it,
follows its progress and reads the results it saved. The runs' label-free ranking is ui.ranking.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from simclr_core.errors import UserError
from simclr_core.evaluation.compare import (
    config_differences,
    epoch_curves,
    labelled,
    latest_results,
    load_results,
    result_label,
)
from simclr_core.evaluation.run import check_settings, job_spec
from simclr_core.explorer import jobs
from simclr_core.runs.rundir import RunDir
from simclr_core.training import precheck
from ui.jobs import job_progress
from ui.live import fragment_rerun
from ui.ranking import ranking
from ui.runs import current_run, run_names, runs_dir
from ui.shell import routed
from ui.widgets import user_errors

routed()

METRICS = {
    "knn_top1": "kNN top-1 %",
    "knn_top5": "kNN top-5 %",
    "probe_top1": "Probe top-1 %",
    "probe_top5": "Probe top-5 %",
}
LABELS = {"k": "kNN k", "probe_epochs": "Probe epochs", "max_bank": "Max bank images"}  # flags -> the form's labels


def label_of(result: dict[str, Any]) -> str:
    """Unique row name: run (or its random-init baseline) and, for a trained one, the checkpoint epoch."""
    name = result_label(result)
    if result.get("checkpoint") == "random-init":
        return name
    where = result.get("checkpoint_label") or f"epoch {result.get('epoch', '?')}"  # results saved before labels
    return f"{name} · {where}"


def results_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per result with the accuracies in percent and how they were measured."""
    rows = [
        {
            "result": label_of(r),
            "run": r.get("run"),
            "epoch": r.get("epoch"),
            **{m: r.get(m) for m in METRICS},
            "k": r.get("k"),
            "n_bank": r.get("n_bank"),
            "n_query": r.get("n_query"),
            "evaluated": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.get("time", 0))),
        }
        for r in results
    ]
    return pd.DataFrame(rows)


def shown(value: Any) -> str:
    """A config value as the table shows it (None means the field's documented default)."""
    return "default" if value is None else str(value)


def job_runs(job: dict[str, Any]) -> list[str]:
    """The names of the runs an evaluation job evaluates."""
    return [Path(str(r.get("run", "?"))).name for r in job.get("spec", {}).get("runs", [])]


def job_title(job: dict[str, Any]) -> str:
    """What an evaluation job evaluates, for its progress bar."""
    baseline = " and random-init baseline(s)" if job.get("spec", {}).get("baseline") else ""
    return f"Evaluating {', '.join(job_runs(job))}{baseline}"


def submit(names: list[str], baseline: bool, k: int, probe_epochs: int, max_bank: int | None) -> None:
    """Queue the evaluation in the background worker; pressing again re-runs what failed, while the same
    request for the same checkpoints is not computed twice."""
    with user_errors(LABELS):
        check_settings(k, probe_epochs, max_bank)
        spec = job_spec(
            [RunDir(runs_dir() / n) for n in names],
            baseline=baseline,
            k=k,
            probe_epochs=probe_epochs,
            max_bank=max_bank,
        )
        jobs.submit(jobs.jobs_dir(runs_dir()), spec.kind, spec.to_dict(), retry=True)


def in_progress(active: list[dict[str, Any]]) -> None:
    """The progress of the evaluations still going; when one saves a result or ends, the whole page is
    drawn again, so its results appear in the table at once."""
    for seen in active:
        job = jobs.status(jobs.jobs_dir(runs_dir()), seen["id"])
        # a new model ("run-a: ..." -> "run-b: ...") means one result more: the table gets it at once
        model = str(job.get("stage") or "").split(":")[0]
        if fragment_rerun() and (job["state"], model) != (seen["state"], str(seen.get("stage") or "").split(":")[0]):
            st.rerun()
        job_progress(job, job_title(job))


def outcome(job: dict[str, Any]) -> None:
    """How the newest finished evaluation of the picked runs went: each model that failed, and why."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.get("finished") or job.get("started") or 0))
    if job["state"] == "failed":  # the whole job: its settings, a stopped worker, or a bug (one line, no traceback)
        st.error(
            f"The evaluation of {', '.join(job_runs(job))} failed: "
            f"{precheck.for_form(job.get('message') or 'no reason recorded', LABELS).rstrip('.')}. "
            "Press **Run evaluation** to try again.",
            icon=":material/error:",
        )
        return
    result = job.get("result") or {}
    evaluated, errors = result.get("evaluated", []), result.get("errors", [])
    for e in errors:
        st.error(f"{e['model']}: {e['message']}", icon=":material/error:")
    figures = "; ".join(
        f"{e['model']}: kNN top-1 **{e['knn_top1']:.1f}%**"
        + (f", probe top-1 **{e['probe_top1']:.1f}%**" if e.get("probe_top1") is not None else "")
        for e in evaluated
    )
    st.caption(
        f"Last evaluation, finished {when}: {len(evaluated)} of {len(evaluated) + len(errors)} model(s)"
        + (f". {figures}" if figures else "")
        + (". Fix the errors above, then press **Run evaluation** to evaluate those again." if errors else "")
    )


def evaluation(picked: list[str]) -> None:
    """The kNN / linear-probe form, the progress of its jobs and the results they saved."""
    with st.form("eval_form", border=True):
        c1, c2, c3, c4 = st.columns(4)
        k = c1.number_input("kNN k", 1, 1000, 200, key="eval_k", help="Neighbours that vote (the paper's 200).")
        probe_epochs = c2.number_input(
            "Probe epochs",
            1,
            1000,
            100,
            key="eval_probe_epochs",
            help="Training epochs of the linear probe; fewer are faster but less exact.",
        )
        max_bank = c3.number_input(
            "Max bank images (0: all)",
            0,
            10_000_000,
            0,
            500,
            key="eval_max_bank",
            help="Use a fixed random subset of the training split: quicker on a CPU.",
        )
        baseline = c4.checkbox(
            "Include random-init baseline",
            key="eval_baseline",
            help="Also evaluate an untrained network of the same architecture.",
        )
        go_ = st.form_submit_button("Run evaluation", type="primary", icon=":material/play_arrow:", key="eval_submit")
    if go_:
        submit(picked, baseline, int(k), int(probe_epochs), int(max_bank) or None)

    # The jobs' own files say what is going on, so a reload or another tab finds a running evaluation again.
    evaluations = jobs.find(jobs.jobs_dir(runs_dir()), "evaluate")
    active = [j for j in evaluations if j["state"] in jobs.ACTIVE]
    if active:
        st.fragment(run_every=1.0)(in_progress)(active)  # polls only while there is something to follow
    last = next((j for j in evaluations if j["state"] in ("done", "failed") and set(job_runs(j)) & set(picked)), None)
    if last:
        outcome(last)

    st.subheader("Results")
    results = latest_results([r for n in picked for r in load_results(RunDir(runs_dir() / n))])
    if not results:
        st.caption(
            "No evaluations of these runs yet: press **Run evaluation**. Results are saved in each run's "
            "eval.json and shown here next time without recomputing."
        )
    else:
        table = results_table(results)
        st.dataframe(
            table,
            hide_index=True,
            key="eval_table",
            column_config={
                "result": "Model",
                "run": None,
                "epoch": "Checkpoint epoch",
                "n_bank": "Bank images",
                "n_query": "Query images",
                **{m: st.column_config.NumberColumn(lbl, format="%.1f") for m, lbl in METRICS.items()},
            },
        )
        long = table.melt(id_vars="result", value_vars=list(METRICS), var_name="metric", value_name="accuracy")
        long["metric"] = long["metric"].map(METRICS)
        fig = px.bar(
            long.dropna(),
            x="metric",
            y="accuracy",
            color="result",
            barmode="group",
            labels={"accuracy": "accuracy (%)", "metric": "", "result": "model"},
            range_y=[0, 100],
        )
        st.plotly_chart(fig, key="eval_bars")

        st.subheader("Confusion matrix (kNN)")
        by_label = {label_of(r): r for r in results if r.get("knn_confusion")}
        choice = st.selectbox("Model", list(by_label), key="eval_confusion")
        if choice:
            r = by_label[choice]
            classes = [str(c) for c in r.get("classes") or range(len(r["knn_confusion"]))]
            heat = px.imshow(
                r["knn_confusion"],
                x=classes,
                y=classes,
                color_continuous_scale="Blues",
                text_auto=len(classes) <= 20,
                aspect="auto",
                labels={"x": "predicted class", "y": "true class", "color": "images"},
            )
            heat.update_xaxes(type="category", side="top")
            heat.update_yaxes(type="category")
            st.plotly_chart(heat, key="eval_heat")
            st.caption(
                "Rows are true classes, columns the kNN's predictions: off-diagonal cells are the classes "
                "the features confuse."
            )


st.title("Evaluate & compare")
st.caption(
    "How useful are the learned features? Both tests freeze the encoder and use its backbone features h: "
    "**kNN** labels each test image by its nearest training images, the **linear probe** trains one "
    "linear layer on top. The **random-init baseline** is the same network untrained: the gap is "
    "what self-supervised training learned. Both need labels; **Rank without labels** orders runs, on any "
    "images, by a measure of the features alone."
)

names = run_names()
if not names:
    st.info("No runs yet. Train one on the **Train** page, then evaluate it here.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

cur = current_run()
if "eval_runs" not in st.session_state:  # start from the sidebar's run; later picks are the user's
    st.session_state["eval_runs"] = [cur.name] if cur else names[:1]
st.session_state["eval_runs"] = [n for n in st.session_state["eval_runs"] if n in names]
picked = st.multiselect("Runs", names, key="eval_runs", help="Pick two or more to compare them side by side.")
if not picked:
    st.info("Pick at least one run above.")
    st.stop()

# Runs whose monitor ran without a kNN value were trained on images without labels: kNN and the probe cannot
# measure them, so the page offers only what needs no labels.
epoch_lines = {n: RunDir(runs_dir() / n).metrics("epoch") for n in picked}  # read once: a long run's take time
unlabelled = all(labelled(lines) is False for lines in epoch_lines.values())
if unlabelled:
    st.info(
        f"{'This run was' if len(picked) == 1 else 'These runs were'} trained on images without labels (no class "
        "sub-folders), so kNN and the linear probe cannot measure them. They are ranked below by a measure that "
        "needs no labels.",
        icon=":material/label_off:",
    )
else:
    evaluation(picked)
ranking(epoch_lines)

st.subheader("Compare runs")
configs, curves = {}, []
for name in picked:
    run = RunDir(runs_dir() / name)
    try:
        configs[name] = run.config()
    except UserError as e:
        st.warning(f"{name}: {e}", icon=":material/warning:")
    curves += [{"run": name, **row} for row in epoch_curves(epoch_lines[name])]

if len(configs) >= 2:
    all_fields = st.toggle(
        "Show every field",
        key="eval_all_fields",
        help="Off: only the settings that differ. On: all, with the differing ones highlighted.",
    )
    rows = config_differences(configs, all_fields=all_fields)
    if rows:
        diff = pd.DataFrame([{"field": r["field"], **{n: shown(r[n]) for n in configs}} for r in rows])
        differs = [r["differs"] for r in rows]
        styled = diff.style.apply(
            lambda col: ["background-color: rgba(255, 189, 69, 0.35)" if d else "" for d in differs], axis=0
        )
        st.dataframe(styled, hide_index=True, key="eval_config_diff")
    else:
        st.caption("These runs share every setting (apart from their names).")
else:
    st.caption("Pick two or more runs above to see which settings differ.")

if curves:
    df = pd.DataFrame(curves)
    c1, c2 = st.columns(2)
    c1.plotly_chart(
        px.line(
            df,
            x="epoch",
            y="epoch_loss",
            color="run",
            markers=True,
            title="Loss per epoch",
            labels={"epoch_loss": "loss"},
        ),
        key="eval_loss_curves",
    )
    knn = df.dropna(subset=["knn_top1"])
    if len(knn):
        c2.plotly_chart(
            px.line(
                knn,
                x="epoch",
                y="knn_top1",
                color="run",
                markers=True,
                title="kNN monitor top-1 per epoch",
                labels={"knn_top1": "kNN top-1 (%)"},
            ),
            key="eval_knn_curves",
        )
    else:
        c2.caption(
            "No kNN values: these runs' images have no labels (their label-free ranking is above)."
            if unlabelled
            else "No kNN monitor values: the runs were trained with --knn-every 0."
        )
else:
    st.caption("No finished epochs yet in these runs: their curves appear after the first epoch.")
