"""Fault campaign: kill -9 at random moments and at checkpoint writes, two writers at once, damaged
run files, and the faults of issue 16 (a real full disk, values without a bound, ...); prints what was
tried and what survived.

    python bench/faults.py                 # 20 kills, 5 races, 24 damaged files, issue 16 (about 12 minutes)
    python bench/faults.py --kills 60 --races 10
    python bench/faults.py --parts issue16 # only the faults of issue 16 (about 3 minutes on 2 CPU cores)

Each kill is followed by ``--resume`` until the run finishes; the chain must end bit-identical to
a straight run of the same settings (CPU, one thread), lose at most one epoch per kill, and leave
no temp file behind. Each race starts two ``--resume`` processes at once: exactly one may train.
Damaged files are written into a finished run, and every reader must give a message, not a
traceback. The faults of issue 16 each run a real command and must end in exit 0, or exit 2 with one
line naming the fix, no traceback, no temp file, and a status.json that does not say "running"; the
full-disk ones need a tmpfs (root), and are left out with a note where mounting is not allowed.
Results go to BENCHMARKS.md ("faults").
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

from simclr_core.cli.common import config_flags  # noqa: E402
from simclr_core.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig  # noqa: E402
from simclr_core.runs.progress import summarize  # noqa: E402
from simclr_core.runs.rundir import RunDir  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run_args(runs: Path, name: str, epochs: int) -> list[str]:
    """A tiny run's flags: 256 digits at 16 px, a narrow ResNet, one thread, no monitor, no TensorBoard."""
    return config_flags(
        TrainConfig(
            data=DataConfig(dataset="digits", data_dir=str(runs.parent / "data"), subset=256, image_size=16),
            model=ModelConfig(backbone="resnet_mini", cifar_stem=False, proj_hidden_dim=64, proj_out_dim=32),
            optim=OptimConfig(epochs=epochs, batch_size=32),
            run=RunConfig(name=name, runs_dir=str(runs), knn_every=0, log_every=1, num_threads=1, tensorboard=False),
        )
    )


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
    from simclr_core.runs.rundir import list_runs

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


# ---- issue 16: the faults that still failed after issue 11 ------------------------------------------------------


def cli(module: str, *argv: str) -> tuple[int, str]:
    """Run ``python -m simclr_core.<module>``; (exit status, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", f"simclr_core.{module}", *argv], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    return proc.returncode, proc.stderr


def judged(code: int, err: str, want: str = "", run: RunDir | None = None) -> str | None:
    """Why a command's end is not a clean one (None: clean): exit 0, or exit 2 with one ``error:`` line
    holding ``want``; no traceback; the run's status not left "running" and no temp file in its folder."""
    last = err.strip().splitlines()[-1] if err.strip() else ""
    if "Traceback" in err or code not in (0, 2):
        return f"exit {code}: {last[:200]}"
    if code == 2 and (not last.startswith("error: ") or want not in last):
        return f"exit 2 but {last[:200]!r} (wanted {want!r})"
    if run is not None and run.path.is_dir():
        if run.status().get("state") in ("running", "died"):
            return f"status.json left {run.status().get('state')!r}"
        left = [p.name for p in run.path.rglob("*") if ".tmp" in p.name or p.name == ".status.reserve"]
        if left:
            return f"left {left}"
    return None


def _damage_ckpt(run: RunDir, change) -> None:
    ckpt = torch.load(run.last_ckpt, weights_only=True)
    change(ckpt)
    torch.save(ckpt, run.last_ckpt)


def _replace_with_folder(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


# (name, damage, command, the phrase the error line must hold ("" when the command must succeed))
DAMAGED_16 = [
    ("last.pt epoch is text", lambda r: _damage_ckpt(r, lambda c: c.update(epoch="two")), "resume", "is damaged"),
    ("last.pt without optimizer", lambda r: _damage_ckpt(r, lambda c: c.pop("optimizer")), "resume", "is damaged"),
    ("backbone.pt a bare tensor", lambda r: torch.save(torch.zeros(3), r.backbone_path), "export", "bare tensor"),
    ("backbone.json not UTF-8", lambda r: r.backbone_path.with_suffix(".json").write_bytes(b"\xff\xfe\x00"),
     "export", "is damaged"),
    ("backbone.json []", lambda r: r.backbone_path.with_suffix(".json").write_bytes(b"[]"), "export", "is damaged"),
    ("backbone.json truncated", lambda r: r.backbone_path.with_suffix(".json").write_bytes(b'{"backbone": "res'),
     "export", "is damaged"),
    ("embeddings cache .npz a folder", lambda r: _cache_folder(r), "embed", ""),
    ("embeddings/ a file", lambda r: (shutil.rmtree(r.embeddings_dir, ignore_errors=True),
                                      r.embeddings_dir.write_text("x")), "embed", ""),
    ("STOP a folder", lambda r: _replace_with_folder(r.stop_path), "resume", "is a folder"),
    ("train.log a folder", lambda r: _replace_with_folder(r.log_path), "resume", "is a folder"),
    ("STOP a folder", lambda r: _replace_with_folder(r.stop_path), "export", ""),
    ("train.log a folder", lambda r: _replace_with_folder(r.log_path), "export", ""),
    ("export a file", lambda r: r.export_dir.write_text("x"), "export", "is a file"),
]  # fmt: skip


def _cache_folder(run: RunDir) -> None:
    from simclr_core.embeddings import embedding_cache

    shutil.rmtree(run.embeddings_dir, ignore_errors=True)
    embedding_cache(run, "test").mkdir(parents=True)


def _commands(runs: Path, name: str) -> dict[str, tuple[str, list[str]]]:
    where = ["--run", name, "--runs-dir", str(runs)]
    return {
        "resume": ("train", ["--resume", name, "--runs-dir", str(runs), "--epochs", "3"]),
        "export": ("exporters", [*where, "--format", "safetensors"]),
        "embed": ("embed", [*where, "--split", "test", "--out", str(runs.parent / "e.npz")]),
    }


def issue16(runs: Path) -> dict:
    """Every fault of issue 16's list that can be made here, each through the real command line."""
    out: dict = {"cases": 0, "survived": 0, "by_kind": {}, "failures": [], "not_tried": []}

    def count(kind: str, what: str, why: str | None) -> None:
        out["cases"] += 1
        tried, ok = out["by_kind"].get(kind, (0, 0))
        out["by_kind"][kind] = (tried + 1, ok + (why is None))
        out["survived"] += why is None
        if why is not None:
            out["failures"].append(f"{kind}: {what}: {why}")

    assert train(run_args(runs, "good16", 2)).wait() == 0
    good = RunDir(runs / "good16")
    for what, damage, command, want in DAMAGED_16:
        copy = RunDir(runs / "damaged16")
        shutil.rmtree(copy.path, ignore_errors=True)
        shutil.copytree(good.path, copy.path)
        damage(copy)
        module, argv = _commands(runs, "damaged16")[command]
        code, err = cli(module, *argv)
        count("damaged run files", f"{what}, {command}", judged(code, err, want, copy))

    bad_values = [
        (["--lr", "1e300"], "--lr must be in"),
        (["--seed", str(2**70)], "--seed must be in"),
        (["--image-size", "100000"], "--image-size must be in"),
        (["--crop-size", "4096"], "--crop-size must be in"),
        (["--crop-size", "2048", "--batch-size", "256"], "needs about"),  # allowed; not in memory: said, not killed
        (["--queue-size", str(10**10), "--method", "moco_v2"], "--queue-size must be in"),
        (["--workers", "100000"], "--workers must be in"),
    ]
    for i, (flags, want) in enumerate(bad_values):
        name = f"value{i}"
        code, err = cli("train", *run_args(runs, name, 1), *flags)
        count("values without a bound", " ".join(flags), judged(code, err, want, RunDir(runs / name)))
    code, err = cli("exporters", "--run", "good16", "--runs-dir", str(runs), "--format", "safetensors", "--out",
                    "/proc/x.safetensors")  # fmt: skip
    count("values without a bound", "simclr-export --out /proc/x", judged(code, err, "choose another --out"))

    recipe = runs.parent / "recipe-only.yaml"
    recipe.write_text("recipe:\n  title: only a title\n")
    code, err = cli("train", "--config", str(recipe), "--runs-dir", str(runs), "--name", "recipe", "--epochs", "0")
    count("misleading", "a config of only a recipe: block",
          None if "sets no training setting" in err else f"no warning: {err.strip()[-200:]}")  # fmt: skip
    if not torch.cuda.is_available():
        where = ["--run", "good16", "--runs-dir", str(runs), "--device", "cuda"]
        for module, extra in (("evaluate", ["--no-probe"]), ("embed", ["--out", str(runs.parent / "c.npz")])):
            code, err = cli(module, *where, *extra)
            count("misleading", f"{module} --device cuda", judged(code, err, "no CUDA GPU is visible"))
        code, err = cli("train", *run_args(runs, "cuda", 1), "--device", "cuda")
        count("misleading", "train --device cuda", judged(code, err, "no CUDA GPU is visible"))

    folder = runs.parent / "not-utf8"
    from PIL import Image

    for c, cls in enumerate((b"cats", b"d\xffogs")):
        os.makedirs(os.path.join(os.fsencode(folder), cls))
        for i in range(16):
            path = os.path.join(os.fsencode(folder), cls, b"%d\xff.png" % i)
            Image.new("RGB", (16, 16), (15 * i, 120 * c, 60)).save(os.fsdecode(path))
    argv = run_args(runs, "utf8", 1)
    argv[argv.index("digits")] = "folder"
    argv[argv.index("--subset") : argv.index("--subset") + 2] = ["--data-path", str(folder)]
    argv[argv.index("--batch-size") + 1] = "8"
    code, err = cli("train", *argv)
    run = RunDir(runs / "utf8")
    why = judged(code, err, "", run) or (None if code == 0 else f"exit {code}: {err.strip()[-200:]}")
    count("image folders", "file and class names that are not UTF-8, trained on", why)

    full_disk(runs, count, out)
    return out


def full_disk(runs: Path, count, out: dict) -> None:
    """Training and export on a real tmpfs too small for them, and export from a read-only mount."""
    mnt = runs.parent / "tmpfs"
    mnt.mkdir()
    sizes = ["16k", "24k", "32k", "64k", "96k", "128k", "4m", "12m"]  # from "not even the status" to "no backbone.pt"
    for size in sizes:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]).returncode:
            out["not_tried"].append("full disk: cannot mount a tmpfs here (needs root)")
            return
        try:
            code, err = cli("train", *run_args(mnt, "full", 2))
            count("full disk", f"training on a {size} disk", judged(code, err, "No space left on device",
                                                                    RunDir(mnt / "full")))  # fmt: skip
        finally:
            subprocess.run(["umount", str(mnt)])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    try:
        shutil.copytree(runs / "good16", mnt / "good16")
        fill = shutil.disk_usage(mnt).free - 2**20  # 1 MB left: no export fits
        (mnt / "filler").write_bytes(b"\0" * fill)
        for fmt in ("safetensors", "torchscript", "onnx"):
            code, err = cli("exporters", "--run", "good16", "--runs-dir", str(mnt), "--format", fmt)
            count("full disk", f"simclr-export --format {fmt} onto a full disk",
                  judged(code, err, "No space left on device", RunDir(mnt / "good16")))  # fmt: skip
        (mnt / "filler").unlink()
        shutil.rmtree(mnt / "good16" / "export", ignore_errors=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        code, err = cli("exporters", "--run", "good16", "--runs-dir", str(mnt), "--format", "safetensors")
        count("full disk", "simclr-export of a read-only run folder, default --out", judged(code, err, "--out FILE"))
    finally:
        subprocess.run(["umount", str(mnt)])


PARTS = ("kills", "races", "damaged", "issue16")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--races", type=int, default=5)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parts", default=",".join(PARTS), help=f"which parts to run, of {', '.join(PARTS)}")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        p.error(f"unknown part(s) {sorted(parts - set(PARTS))}; choose of {', '.join(PARTS)}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        t0 = time.time()
        results = {}
        if "kills" in parts:
            results["kill -9"] = kill_chain(runs, args.epochs, args.kills, random.Random(args.seed))
        if "races" in parts:
            results["two writers"] = races(runs, args.races)
        if "damaged" in parts:
            results["damaged files"] = damaged_files(runs)
        if "issue16" in parts:
            results["issue 16"] = issue16(runs)
    print(json.dumps(results, indent=2))
    print(f"\n{time.time() - t0:.0f} s; torch {torch.__version__}, {os.cpu_count()} CPU cores")


if __name__ == "__main__":
    main()
