"""Compare runs: the config fields that differ, per-epoch curves, and saved evaluation results."""

from __future__ import annotations

from typing import Any

from simclr_core.config import TrainConfig
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
