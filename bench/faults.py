"""Fault campaign: kill -9 at random moments and at checkpoint writes, two writers at once, and
damaged run files; prints what was tried and what survived.

    python bench/faults.py                 # 20 kills, 5 races, 24 damaged files (about 10 minutes on 2 CPU cores)
    python bench/faults.py --kills 60 --races 10

Each kill is followed by ``--resume`` until the run finishes; the chain must end bit-identical to
a straight run of the same settings (CPU, one thread), lose at most one epoch per kill, and leave
no temp file behind. Each race starts two ``--resume`` processes at once: exactly one may train.
Damaged files are written into a finished run, and every reader must give a message, not a
traceback. Results go to BENCHMARKS.md ("faults").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simclr_core.runs import RunDir, summarize  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run_args(runs: Path, name: str, epochs: int) -> list[str]:
    return [
        "--dataset",
        "digits",
        "--data-dir",
        str(runs.parent / "data"),
        "--subset",
        "256",
        "--image-size",
        "16",
        "--backbone",
        "resnet_mini",
        "--no-cifar-stem",
        "--proj-hidden-dim",
        "64",
        "--proj-out-dim",
        "32",
        "--epochs",
        str(epochs),
        "--batch-size",
        "32",
        "--name",
        name,
        "--runs-dir",
        str(runs),
        "--knn-every",
        "0",
        "--log-every",
        "1",
        "--num-threads",
        "1",
        "--no-tensorboard",
    ]


def train(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "simclr_core.train", *argv],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def weights(run: RunDir) -> dict[str, torch.Tensor]:
    return torch.load(run.last_ckpt, weights_only=True)["model"]


def temps(run: RunDir) -> list[str]:
    return [p.name for p in run.path.rglob("*") if ".tmp" in p.name]


def kill_chain(runs: Path, epochs: int, kills: int, rng: random.Random) -> dict:
    """Kill -9 one run ``kills`` times (alternately at a random moment and the instant a checkpoint
    temp file appears), resuming after each; then finish it and compare with a straight run."""
    straight = RunDir(runs / "straight")
    assert train(run_args(runs, "straight", epochs)).wait() == 0
    run = RunDir(runs / "killed")
    out = {
        "kills": 0,
        "at_checkpoint_write": 0,
        "resumed": 0,
        "max_epochs_lost": 0,
        "temps_after_resume": 0,
        "failures": [],
    }
    first = True
    while out["kills"] < kills:
        proc = train(run_args(runs, "killed", epochs) if first else ["--resume", "killed", "--runs-dir", str(runs)])
        before = summarize(run).epoch if not first else 0
        first = False
        at_write = out["kills"] % 2 == 1
        deadline = time.time() + rng.uniform(2.5, 7.0)
        while proc.poll() is None and time.time() < deadline:
            if at_write and any(n.startswith(".last.pt.") for n in os.listdir(run.path) if run.path.is_dir()):
                break
            time.sleep(0.001 if at_write else 0.05)
        if proc.poll() is not None:  # finished before the kill: start over with a longer run
            if run.status().get("state") == "finished":
                break
            out["failures"].append(f"exited {proc.returncode}: {proc.stderr.read()[-300:]}")
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        out["kills"] += 1
        out["at_checkpoint_write"] += at_write
        st = run.status()
        if st.get("state") not in ("died", "finished", None):  # finished: killed after its last word
            out["failures"].append(f"state after kill -9: {st.get('state')}")
        saved = torch.load(run.last_ckpt, weights_only=True)["epoch"] if run.last_ckpt.exists() else 0
        out["max_epochs_lost"] = max(out["max_epochs_lost"], st.get("epoch", before) - saved)
    while run.status().get("state") != "finished":  # resume to the end
        proc = train(["--resume", "killed", "--runs-dir", str(runs)])
        err = proc.communicate()[1]
        out["resumed"] += 1
        if proc.returncode != 0:
            out["failures"].append(f"resume failed: {err.strip().splitlines()[-1:]}")
            break
        out["temps_after_resume"] += len(temps(run))
    a, b = weights(straight), weights(run)
    out["bit_identical"] = all(torch.equal(a[k], b[k]) for k in a)
    steps = [m["step"] for m in run.metrics("step")]
    out["duplicate_metric_steps"] = len(steps) - len(set(steps))
    return out


def races(runs: Path, n: int) -> dict:
    """Two ``--resume`` of one run started together, ``n`` times: one trains, one is refused."""
    assert train(run_args(runs, "raced", 1)).wait() == 0
    run, out = RunDir(runs / "raced"), {"races": 0, "one_writer": 0, "failures": []}
    for i in range(n):
        more = str(2 + i)
        procs = [train(["--resume", "raced", "--runs-dir", str(runs), "--epochs", more]) for _ in range(2)]
        errs = [p.communicate()[1] for p in procs]
        codes = sorted(p.returncode for p in procs)
        steps = [m["step"] for m in run.metrics("step")]
        out["races"] += 1
        ok = codes == [0, 2] and len(steps) == len(set(steps))
        out["one_writer"] += ok
        if not ok:
            out["failures"].append(f"codes {codes}: {[e.strip().splitlines()[-1:] for e in errs]}")
    return out


DAMAGED = {
    "status.json": [
        b"[]",
        b"null",
        b'"running"',
        b"42",
        b'{"state": "running", "pid": "abc"}',
        b"\xff\xfe",
        b'{"state": "finished", "epoch": "two"}',
        b"",
    ],
    "metrics.jsonl": [
        b"42\n",
        b"null\n",
        b'{"epoch": 1}\n',
        b"\xff\xfe\n",
        b'{"step": "x"}\n',
        b'{"step": 3, "loss": "abc"}\n',
    ],
    "config.json": [b"[]", b'{"optim": 3}', b'{"optim": {"batch_size": 16.5}}', b"\xff", b"{"],
    "last.pt": [b"", b"PK\x03\x04garbage", "tensor", "backbone", "pickle"],
}


def damaged_files(runs: Path) -> dict:
    """Write each damaged variant into a copy of a finished run and read it the ways the app and the
    CLI do; a UserError (a message) or a clean result counts as survived, any other exception not."""
    from simclr_core.embeddings import load_encoder
    from simclr_core.errors import UserError
    from simclr_core.runs import list_runs

    assert train(run_args(runs, "good", 1)).wait() == 0
    good = RunDir(runs / "good")
    out = {"variants": 0, "survived": 0, "failures": []}
    for name, variants in DAMAGED.items():
        for v in variants:
            copy = RunDir(runs / "damaged")
            shutil.rmtree(copy.path, ignore_errors=True)
            shutil.copytree(good.path, copy.path)
            target = copy.path / name
            if v == "tensor":
                torch.save(torch.zeros(3), target)
            elif v == "backbone":
                shutil.copy(copy.backbone_path, target)
            elif v == "pickle":
                torch.save({"x": argparse.Namespace(a=1)}, target)
            elif name == "metrics.jsonl":
                target.write_bytes(target.read_bytes() + v)
            else:
                target.write_bytes(v)
            out["variants"] += 1
            try:
                [summarize(r) for r in list_runs(runs)]
                copy.metrics()
                with contextlib.suppress(UserError):
                    load_encoder(copy)
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "simclr_core.train",
                        "--resume",
                        "damaged",
                        "--runs-dir",
                        str(runs),
                        "--epochs",
                        "2",
                    ],
                    cwd=REPO,
                    env=ENV,
                    capture_output=True,
                    text=True,
                )
                last = proc.stderr.strip().splitlines()[-1:] or [""]
                if proc.returncode not in (0, 2) or "Traceback" in proc.stderr:
                    raise RuntimeError(f"resume exit {proc.returncode}: {last}")
                out["survived"] += 1
            except Exception as e:  # noqa: BLE001 - the campaign counts whatever escapes
                out["failures"].append(f"{name} {v!r}: {type(e).__name__}: {e}"[:300])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--races", type=int, default=5)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        t0 = time.time()
        results = {
            "kill -9": kill_chain(runs, args.epochs, args.kills, random.Random(args.seed)),
            "two writers": races(runs, args.races),
            "damaged files": damaged_files(runs),
        }
    print(json.dumps(results, indent=2))
    print(f"\n{time.time() - t0:.0f} s; torch {torch.__version__}, {os.cpu_count()} CPU cores")


if __name__ == "__main__":
    main()
