"""Choosing runs and epochs without labels: which way each label-free signal points, and how far the
measured study (``bench/label_free.py``) says to trust it.

Each signal is a key of ``metrics.jsonl`` written at every monitor epoch by
:func:`simclr_core.evaluation.health.health`. :data:`DIRECTION` says which way is better according to its
paper; the study measures, for every signal oriented that way, its Spearman ρ with the final kNN top-1
across runs, within each method and across the epochs of one run, and writes them to
:data:`STUDY_FILE`. A negative ρ means the signal misleads in that study.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard

# +1: higher is better; -1: lower is better (the papers' reading of each signal).
DIRECTION: dict[str, int] = {
    "rankme_h": 1,  # RankMe: a higher effective rank predicts better downstream accuracy
    "rankme_z": 1,
    "lidar_h": 1,  # LiDAR: the same reading, over augmentations
    "lidar_z": 1,
    "pseudo_knn_h": 1,  # CLID's cluster learnability
    "pseudo_knn_z": 1,
    "areq_h": -1,  # α-ReQ: a slower spectral decay (smaller α, down to ~1) generalises better
    "areq_z": -1,
    "alignment": -1,  # Wang & Isola: positives closer together
    "uniformity": -1,  # Wang & Isola: more evenly spread on the sphere
}
SIGNALS = tuple(DIRECTION)

# Written by bench/label_free.py: {"command", "machine", "date", "runs", "signals": {signal: {"all_runs": ρ,
# "within_method": {method: ρ}, "epochs_median": ρ}}, "best": {"runs": signal, "epochs": signal}}.
STUDY_FILE = Path(__file__).with_name("label_free_study.json")


def direction(signal: str) -> int:
    """+1 when a higher value of ``signal`` is better, -1 when a lower one is."""
    try:
        return DIRECTION[signal]
    except KeyError:
        from simclr_core.errors import UserError

        raise UserError(f"unknown label-free signal {signal!r}; choose one of {', '.join(SIGNALS)}") from None


def load_study(path: str | Path | None = None) -> dict[str, Any] | None:
    """The study's results (from :data:`STUDY_FILE` unless ``path`` is given), or None when it has not been run."""
    try:
        study = json.loads(Path(path or STUDY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return study if isinstance(study, dict) else None


# ---- choosing with the study: ranking runs, picking epochs, saying how far to trust it ----------------------

DEFAULT_SIGNAL = "rankme_h"  # until the study has run: RankMe's paper validates it for choosing runs and epochs
NAMES: dict[str, str] = {
    "rankme_h": "RankMe (h)",
    "rankme_z": "RankMe (z)",
    "lidar_h": "LiDAR (h)",
    "lidar_z": "LiDAR (z)",
    "pseudo_knn_h": "pseudo-label kNN (h)",
    "pseudo_knn_z": "pseudo-label kNN (z)",
    "areq_h": "α-ReQ (h)",
    "areq_z": "α-ReQ (z)",
    "alignment": "alignment",
    "uniformity": "uniformity",
}
Scope = Literal["runs", "epochs"]


def signal_name(signal: str) -> str:
    """How the app names a signal ("RankMe (h)")."""
    return NAMES.get(signal, signal)


def chosen_signal(study: dict[str, Any] | None, scope: Scope = "runs") -> tuple[str, bool]:
    """The signal the study found best for ranking ``runs`` or picking ``epochs``, and True; or
    (:data:`DEFAULT_SIGNAL`, False) when there is no study or it names no known signal."""
    best = (study or {}).get("best") or {}
    signal = best.get(scope) if isinstance(best, dict) else None
    return (signal, True) if signal in DIRECTION else (DEFAULT_SIGNAL, False)


def signal_epochs(metrics: Iterable[dict[str, Any]], signal: str) -> list[tuple[int, float]]:
    """(epoch, value) of ``signal`` at each monitor epoch, sorted; a resumed run's repeated epoch: last line wins."""
    by_epoch: dict[int, float] = {}
    for m in metrics:
        v, epoch = m.get(signal), m.get("epoch")
        if finite(v) and isinstance(epoch, int):
            by_epoch[epoch] = float(v)
    return sorted(by_epoch.items())


def preferred_epoch(metrics: Iterable[dict[str, Any]], signal: str) -> tuple[int, float] | None:
    """(epoch, value) of the monitor epoch ``signal`` rates best (a tie goes to the later, more trained epoch);
    None when no line carries it."""
    points = signal_epochs(metrics, signal)
    if not points:
        return None
    sign = direction(signal)
    return max(points, key=lambda p: (sign * p[1], p[0]))


@dataclass(frozen=True)
class RankedRun:
    """One run's place in a label-free ranking."""

    run: str
    rank: int  # 1 = best by the signal
    epoch: int  # the monitor epoch whose value ranks it
    value: float  # the signal there
    last_epoch: int  # its last monitor epoch
    preferred_epoch: int  # the epoch the epoch signal prefers
    knn_top1: float | None  # the kNN monitor at ``epoch`` (None without labels or on a skipped epoch)


def rank_runs(
    runs: Mapping[str, Sequence[dict[str, Any]]],
    signal: str,
    at: Literal["last", "preferred"] = "last",
    epoch_signal: str | None = None,
) -> list[RankedRun]:
    """Runs ordered best first by ``signal``, read at each run's last monitor epoch or at the epoch
    ``epoch_signal`` (default ``signal``) prefers; a run with no value of either is left out.

    Args:
        runs: run name -> its metrics lines (:meth:`~simclr_core.runs.rundir.RunDir.metrics`).
    """
    epoch_signal = epoch_signal or signal
    direction(epoch_signal)  # an unknown name is a UserError, not a silent default
    sign = direction(signal)
    found = []
    for name, metrics in runs.items():
        values = dict(signal_epochs(metrics, signal))
        pick = preferred_epoch(metrics, epoch_signal)
        if not values or pick is None:
            continue
        last = max(values)
        epoch = last if at == "last" else pick[0]
        if epoch not in values:
            continue  # the epoch signal's epoch lacks this signal (a line of before issue 20)
        knn = {m.get("epoch"): m.get("knn_top1") for m in metrics if finite(m.get("knn_top1"))}
        found.append((name, epoch, values[epoch], last, pick[0], knn.get(epoch)))
    found.sort(key=lambda r: -sign * r[2])  # stable: equal values keep the caller's order
    return [RankedRun(n, i + 1, e, v, last, pref, k) for i, (n, e, v, last, pref, k) in enumerate(found)]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ of two equally long sequences (ties get their average rank); None below 3 pairs or
    when either is constant."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs equally long sequences, got {len(x)} and {len(y)}")
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else None


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def agreement(ranked: Sequence[RankedRun], signal: str) -> tuple[float, int] | None:
    """(Spearman ρ, runs) between the signal, oriented so that higher is better, and the kNN monitor at the
    same epochs, over the ranked runs with a kNN value; None below 3 such runs (or when either is constant)."""
    sign = direction(signal)
    pairs = [(sign * r.value, r.knn_top1) for r in ranked if r.knn_top1 is not None]
    rho = spearman([s for s, _ in pairs], [k for _, k in pairs])
    return None if rho is None else (rho, len(pairs))


def trust_level(rho: float, what: str = "runs") -> str:
    """What a Spearman ρ with the final kNN accuracy allows, in words; ``what`` is "runs" or "epochs"."""
    if rho >= 0.8:
        return f"trust it to order {what}; ones a point or two of accuracy apart may still swap"
    if rho >= 0.5:
        return f"trust it to tell strong {what} from weak ones, not to order close ones"
    if rho >= 0.2:
        return f"a weak hint only: it singles out clearly bad {what}, little more"
    if rho > -0.2:
        return f"no better than a guess at ordering {what}"
    return "it pointed the wrong way in the study: do not choose by it"


def trust(study: dict[str, Any] | None, signal: str, scope: Scope = "runs", methods: Iterable[str] = ()) -> str:
    """One line on how far to trust ``signal`` for ranking runs (``scope`` "runs") or picking a run's epoch
    ("epochs"), quoting the study's measured ρ; "not measured" when the study has not been run.

    Args:
        methods: the methods of the runs being ranked: for one method the study's ρ within that method
            applies; for several, the ρ across all runs, beside the ρ within each.
    """
    name = signal_name(signal)
    measured = ((study or {}).get("signals") or {}).get(signal)
    if not isinstance(measured, dict):
        why = "the label-free study has not been run" if study is None else "the study did not measure it"
        if scope == "epochs":
            return f"{name}: not measured for picking epochs ({why}). Take its best epoch as a hint."
        return (
            f"{name}: not measured ({why}; `python bench/label_free.py` measures each signal against kNN "
            "accuracy). Take the order as a hint and check the top runs with labels when you can."
        )
    where = "the study's " + _study_runs(study or {})
    if scope == "epochs":
        rho = measured.get("epochs_median")
        if not finite(rho):
            return f"{name}: its ρ across epochs was not measured in {where}."
        return (
            f"{name}: median Spearman ρ = {rho:.2f} with the kNN accuracy across the epochs of each of {where}: "
            f"{trust_level(rho, 'epochs')}."
        )
    within = {m: r for m, r in (measured.get("within_method") or {}).items() if finite(r)}
    picked = sorted(set(methods))
    overall = measured.get("all_runs")
    if len(picked) == 1 and picked[0] in within:
        rho = within[picked[0]]
        return (
            f"{name}: Spearman ρ = {rho:.2f} with the final kNN accuracy among the {picked[0]} runs of {where}: "
            f"{trust_level(rho)}."
        )
    if not finite(overall):
        return f"{name}: its ρ across runs was not measured in {where}."
    text = f"{name}: Spearman ρ = {overall:.2f} with the final kNN accuracy over {where}: {trust_level(overall)}."
    shown = {m: within[m] for m in picked if m in within} if len(picked) > 1 else {}
    if shown:
        each = ", ".join(f"{m} {r:.2f}" for m, r in shown.items())
        if overall < min(shown.values()) - 0.1:
            text += (
                f" These runs mix methods: within one method ρ = {each}, higher than across them, so compare "
                "runs of the same method; across methods the signal's scale differs."
            )
        else:
            text += f" These runs mix methods; within one method ρ = {each}, no better than across them."
    return text


def _study_runs(study: dict[str, Any]) -> str:
    """ "24 runs on CIFAR-10 (2-core CPU dev box, 2025-06-01)", from what the study file holds."""
    runs = study.get("runs")
    n = runs if isinstance(runs, int) else len(runs) if isinstance(runs, list) else None
    dataset = study.get("dataset")
    if dataset is None and isinstance(runs, list):
        names = {str(r["dataset"]) for r in runs if isinstance(r, dict) and r.get("dataset")}
        dataset = ", ".join(sorted(names)) if names else None
    text = f"{n} runs" if n else "runs"
    text += f" on {dataset}" if dataset else ""
    about = ", ".join(str(study[k]) for k in ("machine", "date") if study.get(k))
    return text + (f" ({about})" if about else "")


def finite(v: Any) -> TypeGuard[float]:
    """True for a finite int or float (not a bool, NaN or None)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
