"""Compare runs: the config fields that differ, per-epoch curves, saved evaluation results, and the runs
ranked without labels (:mod:`simclr_core.evaluation.label_free`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.evaluation import label_free
from simclr_core.runs.rundir import RunDir, is_epoch_line

# Fields that differ between any two runs without telling anything about them.
IGNORED_FIELDS = ("run.name", "run.runs_dir")


def flatten_config(cfg: TrainConfig) -> dict[str, Any]:
    """``{"section.field": value}`` for every field, in the config's own order."""
    return {f"{section}.{name}": value for section, fields in cfg.to_dict().items() for name, value in fields.items()}


def config_differences(
    configs: dict[str, TrainConfig], all_fields: bool = False, ignore: tuple[str, ...] = IGNORED_FIELDS
) -> list[dict[str, Any]]:
    """Rows ``{"field", "differs", <run name>: value, ...}`` comparing runs' configs field by field.

    Args:
        configs: run name -> its config, in the column order wanted.
        all_fields: also return the fields every run shares (``differs`` False), e.g. to show
            the whole config with the differing rows highlighted.
        ignore: fields left out (the run's name and folder always differ).
    """
    flat = {name: flatten_config(cfg) for name, cfg in configs.items()}
    keys = next(iter(flat.values())).keys() if flat else []
    rows = []
    for key in keys:
        if key in ignore:
            continue
        values = [f[key] for f in flat.values()]
        differs = any(v != values[0] for v in values[1:])
        if differs or all_fields:
            rows.append({"field": key, "differs": differs, **{name: f[key] for name, f in flat.items()}})
    return rows


def epoch_curves(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The end-of-epoch lines of a run's metrics as ``{"epoch", "epoch_loss", "knn_top1", "knn_top5"}``.

    kNN values are None on epochs the monitor skipped. A resumed run may log an epoch twice;
    the last line wins, and the rows come sorted by epoch.
    """
    by_epoch: dict[int, dict[str, Any]] = {}
    for m in metrics:
        if not is_epoch_line(m):
            continue
        by_epoch[int(m["epoch"])] = {
            "epoch": int(m["epoch"]),
            "epoch_loss": m.get("epoch_loss"),
            "knn_top1": m.get("knn_top1"),
            "knn_top5": m.get("knn_top5"),
        }
    return [by_epoch[e] for e in sorted(by_epoch)]


def load_results(run: RunDir) -> list[dict[str, Any]]:
    """The evaluation results saved in the run's ``eval.json`` (oldest first; [] when none or unreadable)."""
    return run.eval_results()


def result_label(result: dict[str, Any]) -> str:
    """A short name for a result: the run, with "(random init)" for the baseline."""
    name = str(result.get("run", "?"))
    return f"{name} (random init)" if result.get("checkpoint") == "random-init" else name


def latest_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest result per (run, trained or random init, checkpoint epoch), newest first.

    Re-evaluating the same checkpoint replaces its row; a later checkpoint of the same run
    gets a row of its own, so progress between evaluations stays visible.
    """
    newest: dict[tuple, dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: r.get("time", 0.0)):
        newest[(r.get("run"), r.get("checkpoint") == "random-init", r.get("epoch"))] = r
    return sorted(newest.values(), key=lambda r: r.get("time", 0.0), reverse=True)


def labelled(metrics: list[dict[str, Any]]) -> bool | None:
    """Whether a run's data has labels, read from its monitor: True when the kNN monitor measured it, False when
    the monitor ran (its label-free health is there) without a kNN value, None before the first monitor epoch
    or with the monitor off."""
    monitored = [
        m for m in metrics if is_epoch_line(m) and any(label_free.finite(m.get(s)) for s in label_free.SIGNALS)
    ]
    if any(label_free.finite(m.get("knn_top1")) for m in metrics):
        return True
    return False if monitored else None


@dataclass
class Ranking:
    """Runs ranked without labels, as the compare view shows them (:func:`label_free_ranking`)."""

    rows: list[dict[str, Any]]  # the table, best first
    missing: list[str]  # runs it cannot rank yet: no monitor epoch with the signal
    curves: list[dict[str, Any]]  # {"run", "epoch", "value"}: the signal at each monitor epoch of each run
    picks: list[dict[str, Any]]  # {"run", "epoch", "value"}: each ranked run's best epoch on that curve
    agreement: tuple[float, int] | None  # (Spearman ρ, runs) of the signal's order and the kNN monitor's


def label_free_ranking(
    runs: Sequence[RunDir],
    signal: str,
    epoch_signal: str,
    at: Literal["last", "preferred"] = "last",
    metrics: Mapping[str, list[dict[str, Any]]] | None = None,
) -> Ranking:
    """The runs ranked best first by ``signal`` (:func:`~simclr_core.evaluation.label_free.rank_runs`), each
    run's epoch picked by ``epoch_signal``; ``metrics``: each run's epoch lines when the caller has read them
    already (a long run's metrics.jsonl takes a good part of a second to parse).

    Each row: ``rank``, ``run``, ``method``, ``epoch`` (the monitor epoch read), ``value``, ``preferred_epoch``
    (by ``epoch_signal``), ``last_epoch``; and, only when some run has them, so that a folder without labels
    shows no label column: ``knn_top1`` (the kNN monitor at ``epoch``) with ``knn_rank`` (its place among
    the runs by that kNN), and ``probe_top1`` with ``probe_epoch`` (the newest linear-probe evaluation).
    """
    if metrics is None:
        metrics = {run.name: run.metrics("epoch") for run in runs}
    ranked = label_free.rank_runs(metrics, signal, at=at, epoch_signal=epoch_signal)
    probes = {run.name: _newest_probe(run) for run in runs}
    methods = {run.name: _method(run) for run in runs}
    knns = sorted((r.knn_top1 for r in ranked if r.knn_top1 is not None), reverse=True)
    rows = []
    for r in ranked:
        row: dict[str, Any] = {
            "rank": r.rank,
            "run": r.run,
            "method": methods[r.run],
            "epoch": r.epoch,
            "value": r.value,
            "preferred_epoch": r.preferred_epoch,
            "last_epoch": r.last_epoch,
        }
        if knns:
            row["knn_top1"] = r.knn_top1
            row["knn_rank"] = None if r.knn_top1 is None else knns.index(r.knn_top1) + 1  # ties share a place
        if any(probes.values()):
            probe = probes[r.run]
            row["probe_top1"] = probe["probe_top1"] if probe else None
            row["probe_epoch"] = probe.get("epoch") if probe else None
        rows.append(row)
    series = {name: dict(label_free.signal_epochs(m, signal)) for name, m in metrics.items()}
    done = {r.run for r in ranked}
    return Ranking(
        rows=rows,
        missing=[run.name for run in runs if run.name not in done],
        curves=[{"run": name, "epoch": e, "value": v} for name, points in series.items() for e, v in points.items()],
        picks=[
            {"run": r.run, "epoch": r.preferred_epoch, "value": series[r.run][r.preferred_epoch]}
            for r in ranked
            if r.preferred_epoch in series[r.run]
        ],
        agreement=label_free.agreement(ranked, signal),
    )


def _method(run: RunDir) -> str:
    try:
        return run.config().method.name
    except UserError:
        return ""


def _newest_probe(run: RunDir) -> dict[str, Any] | None:
    """The newest evaluation of the run's trained checkpoint with a linear-probe accuracy, or None."""
    trained = [
        r
        for r in latest_results(load_results(run))
        if r.get("checkpoint") != "random-init" and label_free.finite(r.get("probe_top1"))
    ]
    return trained[0] if trained else None
