"""Which label-free signal to trust for choosing runs and epochs: a measured sweep (issue 20, item 2).

    nice -n 10 python bench/label_free.py                  # the sweep (~32 short runs) and the study file
    python bench/label_free.py --analyse                    # the table again from the finished runs, no training
    python bench/label_free.py --only simclr-base byol-base # some runs only (checking the timing)

Every run goes through the real training CLI (``python -m simclr_core.train``), one at a time, with the
same budget: resnet_mini (ImageNet stem, as bench/methods.py: the CIFAR stem is ~10x slower on a CPU),
``--train-per-class`` x 10 CIFAR-10 training JPEGs (a class-balanced subset of ``../shared/data``), batch
``--batch-size``, ``--epochs`` epochs, seed 0 and one torch thread; only the "epochs" axis changes the epochs. The kNN
monitor (k = 200, T = 0.1, bank = the training subset, query = ``--test-per-class`` x 10 test images) and
the probe's label-free signals (``--probe-size`` of those test images) run after every epoch. The sweep
moves one setting at a time away from each method's default: temperature, learning rate, view strength,
projection width and epochs, for SimCLR, MoCo v2 and BYOL, and includes settings known to collapse or
barely learn (tau 0.01, lr 10 and 1e-4, identical views, BYOL without EMA on identical views).

For each signal of :data:`simclr_core.evaluation.label_free.DIRECTION`, oriented so that higher is better,
Spearman's ρ with the kNN top-1: (a) across all runs, the signal at each run's last monitor epoch against
the kNN there; (b) the same within each method; (c) across the monitor epochs of each run of 3 epochs or
more, the median over runs. A signal a line lacks (α-ReQ of a collapsed spectrum, LiDAR or pseudo-kNN
when non-finite: health() leaves them out) ranks as the worst value, since health() drops it exactly when
the embeddings have collapsed; a run that diverged counts at its last monitor epoch (the checkpoint the
app keeps), and one with no monitor epoch at all is left out and reported.

Writes ``simclr_core/evaluation/label_free_study.json`` (read by ``label_free.load_study``), prints the
per-run and per-signal tables, and as its last line a JSON object of the results. Run folders live in
``--scratch`` (not the repository); a run whose folder has finished is skipped, so the sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from simclr_core.evaluation.label_free import DIRECTION, SIGNALS, STUDY_FILE, finite, spearman  # noqa: E402
from simclr_core.files import write_json_atomic  # noqa: E402
from simclr_core.runs.rundir import RunDir  # noqa: E402
from train_cifar import DEFAULT_DATA, image_folder  # noqa: E402

MACHINE = "2-core CPU dev box, no GPU, Python 3.11.7, torch 2.14.1, shared with other work"
METHODS = ("simclr", "moco_v2", "byol")
# MoCo's queue stays below the 3,000 training images, else an image's own older keys are its negatives.
METHOD_FLAGS = {"simclr": [], "moco_v2": ["--queue-size", "1024"], "byol": []}
IDENTICAL_VIEWS = ["--crop-scale-min", "1.0", "--flip-prob", "0", "--jitter-prob", "0", "--grayscale-prob", "0"]
WEAK_VIEWS = ["--crop-scale-min", "0.6", "--jitter-strength", "0.1", "--grayscale-prob", "0"]
STRONG_VIEWS = ["--jitter-strength", "1.0", "--blur-prob", "0.5", "--solarize-prob", "0.2"]


@dataclass(frozen=True)
class Spec:
    """One run of the sweep: its name, method, the axis it moves and the flags that move it."""

    name: str
    method: str
    axis: str
    flags: list[str] = field(default_factory=list)
    epochs: int | None = None  # None: the sweep's --epochs


SWEEP: list[Spec] = [
    Spec("simclr-base", "simclr", "base"),
    Spec("simclr-t0.01", "simclr", "temperature", ["--temperature", "0.01"]),
    Spec("simclr-t0.05", "simclr", "temperature", ["--temperature", "0.05"]),
    Spec("simclr-t0.2", "simclr", "temperature", ["--temperature", "0.2"]),
    Spec("simclr-t1", "simclr", "temperature", ["--temperature", "1.0"]),
    Spec("simclr-t10", "simclr", "temperature", ["--temperature", "10"]),
    Spec("simclr-lr1e-4", "simclr", "lr", ["--lr", "0.0001"]),
    Spec("simclr-lr0.003", "simclr", "lr", ["--lr", "0.003"]),
    Spec("simclr-lr0.3", "simclr", "lr", ["--lr", "0.3"]),
    Spec("simclr-lr3", "simclr", "lr", ["--lr", "3"]),
    Spec("simclr-lr10", "simclr", "lr", ["--lr", "10"]),
    Spec("simclr-views-identical", "simclr", "views", IDENTICAL_VIEWS),
    Spec("simclr-views-weak", "simclr", "views", WEAK_VIEWS),
    Spec("simclr-views-strong", "simclr", "views", STRONG_VIEWS),
    Spec("simclr-proj8", "simclr", "projection", ["--proj-out-dim", "8"]),
    Spec("simclr-proj512", "simclr", "projection", ["--proj-out-dim", "512", "--proj-hidden-dim", "512"]),
    Spec("simclr-ep1", "simclr", "epochs", epochs=1),
    Spec("simclr-ep2", "simclr", "epochs", epochs=2),
    Spec("simclr-ep10", "simclr", "epochs", epochs=10),
    Spec("moco-base", "moco_v2", "base"),
    Spec("moco-t0.01", "moco_v2", "temperature", ["--temperature", "0.01"]),
    Spec("moco-t2", "moco_v2", "temperature", ["--temperature", "2"]),
    Spec("moco-lr1e-4", "moco_v2", "lr", ["--lr", "0.0001"]),
    Spec("moco-lr3", "moco_v2", "lr", ["--lr", "3"]),
    Spec("moco-views-identical", "moco_v2", "views", IDENTICAL_VIEWS),
    Spec("moco-proj8", "moco_v2", "projection", ["--proj-out-dim", "8"]),
    Spec("byol-base", "byol", "base"),
    Spec("byol-lr1e-4", "byol", "lr", ["--lr", "0.0001"]),
    Spec("byol-lr3", "byol", "lr", ["--lr", "3"]),
    Spec("byol-ema0", "byol", "ema", ["--ema", "0", "--ema-schedule", "constant"]),
    # The config has no BYOL without its predictor; no EMA on identical views is the nearest to a collapse.
    Spec("byol-ema0-identical", "byol", "ema+views", ["--ema", "0", "--ema-schedule", "constant", *IDENTICAL_VIEWS]),
    Spec("byol-proj8", "byol", "projection", ["--proj-out-dim", "8"]),
]


def subset_folder(source: Path, out: Path, train_per_class: int, test_per_class: int) -> Path:
    """A class-balanced copy of the first ``train_per_class`` / ``test_per_class`` images (by file name) of
    each class of ``source``'s train/ and test/, in ``out`` (made once)."""
    done = out / ".complete"
    if done.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for cls in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            files = sorted(f for f in cls.iterdir() if f.suffix.lower() == ".jpg")[:n]
            (out / split / cls.name).mkdir(parents=True)
            for f in files:
                shutil.copyfile(f, out / split / cls.name / f.name)
    done.write_text("")
    return out


def train_command(spec: Spec, args: argparse.Namespace, folder: Path) -> list[str]:
    """The training CLI's command line for one run of the sweep."""
    return [
        sys.executable,
        "-m",
        "simclr_core.train",
        "--dataset",
        "folder",
        "--data-path",
        str(folder),
        "--data-dir",
        str(args.scratch / "data"),
        "--backbone",
        "resnet_mini",
        "--no-cifar-stem",
        "--method",
        spec.method,
        "--epochs",
        str(spec.epochs or args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--knn-every",
        "1",
        "--probe-size",
        str(args.probe_size),
        "--seed",
        "0",
        "--device",
        "cpu",
        "--no-tensorboard",
        "--num-threads",
        str(args.num_threads),
        "--runs-dir",
        str(args.scratch / "runs"),
        "--name",
        spec.name,
        *METHOD_FLAGS[spec.method],
        *spec.flags,
    ]


def marker(args: argparse.Namespace, spec: Spec) -> Path:
    """The file saying a run has ended (its exit code and wall time), beside its folder."""
    return args.scratch / "runs" / f"{spec.name}.done.json"


def launch(spec: Spec, args: argparse.Namespace, folder: Path) -> None:
    """Train one run unless it has already ended; a run cut off midway starts again from scratch."""
    done = marker(args, spec)
    if done.is_file():
        return
    shutil.rmtree(args.scratch / "runs" / spec.name, ignore_errors=True)
    cmd = train_command(spec, args, folder)
    print(f"[{time.strftime('%H:%M:%S')}] {spec.name}: {shlex.join(cmd[1:])}", flush=True)
    t0 = time.time()
    log = args.scratch / "runs" / f"{spec.name}.log"
    with open(log, "w") as out:
        rc = subprocess.call(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    tail = log.read_text(errors="replace").strip().splitlines()[-1:]
    print(f"    exit {rc} after {wall:.0f} s: {tail[0] if tail else ''}", flush=True)
    write_json_atomic(done, {"rc": rc, "wall_s": wall})


@dataclass
class Result:
    """What one run left: its monitor epochs and how it ended."""

    spec: Spec
    epochs: list[dict[str, Any]]  # the epoch lines carrying knn_top1, by epoch
    state: str
    wall_s: float | None

    @property
    def final(self) -> dict[str, Any]:
        return self.epochs[-1]

    @property
    def collapsed(self) -> bool:
        return "collapse" in self.final

    @property
    def diverged(self) -> bool:
        return self.state == "failed"


def read_result(spec: Spec, args: argparse.Namespace) -> Result | None:
    """The run's monitor epochs (the last line of a repeated epoch wins); None when it never ran."""
    run = RunDir(args.scratch / "runs" / spec.name)
    if not run.path.is_dir():
        return None
    by_epoch = {m["epoch"]: m for m in run.metrics("epoch") if finite(m.get("knn_top1"))}
    done = marker(args, spec)
    wall = json.loads(done.read_text()).get("wall_s") if done.is_file() else None
    return Result(spec, [by_epoch[e] for e in sorted(by_epoch)], str(run.status().get("state", "")), wall)


WORST = float("-inf")  # an oriented signal a line lacks: health() leaves it out when the embeddings collapsed


def oriented(line: dict[str, Any], signal: str) -> float:
    """The signal with higher = better (its paper's direction); :data:`WORST` when the line lacks it."""
    v = line.get(signal)
    return DIRECTION[signal] * float(v) if finite(v) else WORST


def rho(lines: list[dict[str, Any]], signal: str) -> float | None:
    """Spearman ρ between the oriented signal and kNN top-1 over ``lines``; None when undefined."""
    return spearman([oriented(m, signal) for m in lines], [float(m["knn_top1"]) for m in lines])


def study(results: list[Result]) -> dict[str, Any]:
    """Per signal: ρ across all runs' last monitor epochs, within each method, and the median over runs of
    3+ monitor epochs of ρ across that run's epochs; and how many runs each figure rests on."""
    finals = [r.final for r in results]
    out: dict[str, Any] = {}
    for s in SIGNALS:
        within = {}
        for method in METHODS:
            lines = [r.final for r in results if r.spec.method == method]
            value = rho(lines, s)
            if value is not None:
                within[method] = value
        per_run = [rho(r.epochs, s) for r in results if len(r.epochs) >= 3]
        epoch_rhos = [v for v in per_run if v is not None]
        out[s] = {
            "all_runs": rho(finals, s),
            "within_method": within,
            "epochs_median": statistics.median(epoch_rhos) if epoch_rhos else None,
            "epochs_runs": len(epoch_rhos),
            "missing": sum(1 for m in finals if not finite(m.get(s))),
        }
    return out


def runs_score(entry: dict[str, Any]) -> float:
    """How well a signal orders runs: the mean of its ρ across all runs and its mean ρ within a method,
    since the app compares runs of one method as often as runs of several."""
    within = list(entry["within_method"].values())
    overall = entry["all_runs"] if entry["all_runs"] is not None else -1.0
    return (overall + (statistics.mean(within) if within else overall)) / 2


def best(signals: dict[str, Any]) -> dict[str, str]:
    """The signal to trust for ranking runs and for picking a run's epoch."""
    epochs = {s: e["epochs_median"] for s, e in signals.items() if e["epochs_median"] is not None}
    return {"runs": max(signals, key=lambda s: runs_score(signals[s])), "epochs": max(epochs, key=epochs.__getitem__)}


def bootstrap(results: list[Result], n: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """How settled the study is: over ``n`` resamples of the runs (with replacement), each signal's 5th-95th
    percentile of ρ across all runs and the share of resamples in which :func:`best` picks it for runs and
    for epochs. Costs ``n`` x the study's ρ over runs; the ρ across one run's epochs is computed once."""
    rng = random.Random(seed)
    per_run = {r.spec.name: {s: rho(r.epochs, s) if len(r.epochs) >= 3 else None for s in SIGNALS} for r in results}
    picks: dict[str, Counter[str]] = {"runs": Counter(), "epochs": Counter()}
    overall: dict[str, list[float]] = {s: [] for s in SIGNALS}
    for _ in range(n):
        sample = [rng.choice(results) for _ in results]
        signals: dict[str, Any] = {}
        for s in SIGNALS:
            within = {m: rho([r.final for r in sample if r.spec.method == m], s) for m in METHODS}
            epoch_rhos = [v for v in (per_run[r.spec.name][s] for r in sample) if v is not None]
            signals[s] = {
                "all_runs": rho([r.final for r in sample], s),
                "within_method": {m: v for m, v in within.items() if v is not None},
                "epochs_median": statistics.median(epoch_rhos) if epoch_rhos else None,
            }
            if signals[s]["all_runs"] is not None:
                overall[s].append(signals[s]["all_runs"])
        for scope, signal in best(signals).items():
            picks[scope][signal] += 1
    out = {}
    for s in SIGNALS:
        q = statistics.quantiles(overall[s], n=20) if len(overall[s]) >= 2 else None
        out[s] = {
            "all_runs_90": (q[0], q[-1]) if q else None,
            "best_runs": picks["runs"][s] / n,
            "best_epochs": picks["epochs"][s] / n,
        }
    return out


def fmt(v: float | None) -> str:
    return "  n/a" if v is None else f"{v:+.2f}"


def run_table(results: list[Result]) -> str:
    """One line per run: its setting, how it ended, its last kNN and a few signals."""
    head = f"{'run':<26} {'method':<8} {'axis':<11} {'ep':>3} {'kNN':>6} {'rankme_h':>8} {'lidar_h':>7} "
    head += f"{'areq_h':>6} {'align':>5} {'unif':>6} {'wall s':>6}  note"
    rows = [head]
    for r in results:
        m = r.final
        note = "diverged" if r.diverged else ""
        note += (" " if note else "") + ("collapsed" if r.collapsed else "")

        def g(k: str, f: str, m: dict[str, Any] = m) -> str:
            return format(m[k], f) if finite(m.get(k)) else "-"

        rows.append(
            f"{r.spec.name:<26} {r.spec.method:<8} {r.spec.axis:<11} {m['epoch']:>3} {m['knn_top1']:>6.2f} "
            f"{g('rankme_h', '8.1f'):>8} {g('lidar_h', '7.1f'):>7} {g('areq_h', '6.2f'):>6} "
            f"{g('alignment', '5.2f'):>5} {g('uniformity', '6.2f'):>6} "
            f"{(format(r.wall_s, '6.0f') if r.wall_s else '-'):>6}  {note}"
        )
    return "\n".join(rows)


def signal_table(signals: dict[str, Any], n: int, boot: dict[str, dict[str, Any]]) -> str:
    """One line per signal: its ρ across all runs (and its bootstrap interval), within each method, the runs
    score, how often the bootstrap picks it for runs, its median ρ across epochs and how often it is picked
    for epochs, and the runs lacking it."""
    head = f"{'signal':<13} {'dir':>3} {'all runs':>8} {'90% interval':>13} " + " ".join(f"{m:>7}" for m in METHODS)
    head += f" {'score':>6} {'picked':>6} {'epochs (runs)':>13} {'picked':>6} {'missing':>7}"
    rows = [head]
    for s, e in sorted(signals.items(), key=lambda kv: -runs_score(kv[1])):
        within = " ".join(f"{fmt(e['within_method'].get(m)):>7}" for m in METHODS)
        lo_hi = boot[s]["all_runs_90"]
        interval = f"{lo_hi[0]:+.2f}..{lo_hi[1]:+.2f}" if lo_hi else "n/a"
        rows.append(
            f"{s:<13} {DIRECTION[s]:>+3} {fmt(e['all_runs']):>8} {interval:>13} {within} {runs_score(e):>+6.2f} "
            f"{boot[s]['best_runs']:>6.0%} {fmt(e['epochs_median']) + ' (' + str(e['epochs_runs']) + ')':>13} "
            f"{boot[s]['best_epochs']:>6.0%} {e['missing']:>4}/{n}"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 image folder or .tar.gz")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/label_free_runs"), help="data subset and run folders")
    p.add_argument("--train-per-class", type=int, default=300)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--epochs", type=int, default=5, help="every run's epochs, except the epochs axis")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--probe-size", type=int, default=500, help="test images whose signals are measured")
    # One thread: on the shared 2-core box (load 13-20) two threads made a step 3-20x slower than one (--estimate).
    p.add_argument("--num-threads", type=int, default=1, help="torch threads of each run")
    p.add_argument("--only", nargs="+", metavar="RUN", help="train only these runs of the sweep")
    p.add_argument("--analyse", action="store_true", help="no training: the tables from the runs there are")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of the runs for the intervals")
    p.add_argument("--out", type=Path, default=STUDY_FILE, help="the study file (default: the one the app reads)")
    p.add_argument("--no-write", action="store_true", help="do not write the study file")
    args = p.parse_args()
    args.scratch = args.scratch.resolve()
    names = {s.name for s in SWEEP}
    unknown = set(args.only or ()) - names
    if unknown:
        p.error(f"unknown run(s) {', '.join(sorted(unknown))}; the sweep's runs: {', '.join(sorted(names))}")
    specs = [s for s in SWEEP if not args.only or s.name in args.only]

    if not args.analyse:
        full = image_folder(args.data.resolve(), REPO / ".bench")
        folder = subset_folder(
            full,
            args.scratch / f"cifar10-{args.train_per_class}-{args.test_per_class}",
            args.train_per_class,
            args.test_per_class,
        )
        (args.scratch / "runs").mkdir(parents=True, exist_ok=True)
        for spec in specs:
            launch(spec, args, folder)

    found = [read_result(s, args) for s in specs]
    results = [r for r in found if r is not None and r.epochs]
    left_out = [s.name for s, r in zip(specs, found, strict=True) if r is not None and not r.epochs]
    if len(results) < 3:
        sys.exit(f"only {len(results)} runs have a monitor epoch; a study needs 3 or more")
    signals = study(results)
    picked = best(signals)
    collapsed = [r.spec.name for r in results if r.collapsed]
    diverged = [r.spec.name for r in results if r.diverged]
    command = "python " + shlex.join(["bench/label_free.py", *sys.argv[1:]])
    file = {
        "command": command,
        "machine": MACHINE,
        "date": time.strftime("%Y-%m-%d"),
        "runs": len(results),
        "dataset": f"CIFAR-10 ({10 * args.train_per_class:,} training images, resnet_mini, {args.epochs} epochs)",
        "signals": {
            s: {"all_runs": e["all_runs"], "within_method": e["within_method"], "epochs_median": e["epochs_median"]}
            for s, e in signals.items()
        },
        "best": picked,
    }
    print(
        f"\n{len(results)} runs, resnet_mini, {10 * args.train_per_class} CIFAR-10 training images, "
        f"kNN query {10 * args.test_per_class} test images (probe {args.probe_size}), batch {args.batch_size}, "
        f"{args.epochs} epochs unless the axis is epochs | {MACHINE} | python {platform.python_version()}"
    )
    print(run_table(results))
    print(f"\nSpearman rho of (direction x signal) with kNN top-1 ({len(results)} runs; runs score = mean of all-runs")
    print("rho and mean within-method rho; epochs: median over runs of 3+ epochs, runs counted in brackets;")
    print(f"picked: share of {args.bootstrap} bootstrap resamples of the runs in which it is the best; 90% interval:")
    print("their 5th-95th percentile of the all-runs rho; missing: runs whose last line lacks it, ranked worst)")
    boot = bootstrap(results, args.bootstrap)
    print(signal_table(signals, len(results), boot))
    print(f"collapsed (health alarm at the last epoch): {len(collapsed)}: {', '.join(collapsed) or '-'}")
    print(f"diverged (counted at their last monitor epoch): {len(diverged)}: {', '.join(diverged) or '-'}")
    print(f"left out (no monitor epoch): {len(left_out)}: {', '.join(left_out) or '-'}")
    print(f"best for ranking runs: {picked['runs']}; for picking epochs: {picked['epochs']}")
    if not args.no_write:
        write_json_atomic(args.out, file)
        print(f"wrote {args.out}")
    print(
        json.dumps(
            {
                **file,
                "details": {
                    s: {"epochs_runs": e["epochs_runs"], "missing": e["missing"], **boot[s]} for s, e in signals.items()
                },
                "collapsed": collapsed,
                "diverged": diverged,
                "left_out": left_out,
                "per_run": {
                    r.spec.name: {"method": r.spec.method, "epochs": r.final["epoch"], "knn_top1": r.final["knn_top1"]}
                    for r in results
                },
            }
        )
    )


if __name__ == "__main__":
    main()
