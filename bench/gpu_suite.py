"""Every GPU check of the project in one command, for the rare session that is lent a GPU.

    python bench/gpu_suite.py --how                           # the carry list and the command, in one line
    python bench/gpu_suite.py --data .bench/cifar10-jpg.tar.gz --budget 510    # one GPU, one 10-minute call
    python bench/gpu_suite.py --smoke --budget 120            # CPU, tiny sizes (a test runs it)

Checks, each in its own process (a crash or a hang costs that check only; its error is printed and
the suite goes on), most valuable first (:data:`PRIORITY`):

1. ``train_bf16``: ResNet-18 (CIFAR stem), batch 512, bf16 autocast, channels_last, fused SGD, views on
   the GPU: images/s of the last epoch (the first includes cuDNN's autotuning), and the model FLOP
   utilisation against the device's dense bf16 peak (:data:`PEAK_BF16`).
2. ``speedrun``: ``configs/simclr-cifar10-speedrun.yaml`` through ``bench/time_to_accuracy.py`` for the
   time the other planned checks leave: kNN top-1 against minutes, and the minutes to 80 / 85 / 90%.
3. ``train_compile``: the same as 1 with ``--compile``: images/s, and whether it fell back to eager.
4. ``nccl_torchrun``: ``torchrun --nproc_per_node 1`` (NCCL on a GPU, gloo on the CPU), one epoch.
5. ``methods``: SimCLR, MoCo v2 and BYOL for a few epochs each (``bench/methods.py``).
6. ``export``: the backbone of run 1 as TorchScript (and safetensors / ONNX where installed), reloaded
   on the GPU; the largest difference from the trained model's features.
7. ``augment``: ``bench/augment.py`` (views/s of ours and torchvision's PIL pipeline).

``--budget`` (seconds) plans the checks to fit it, unpacking the data included (:func:`plan`): the
lowest-priority checks are left out until the others fit, and the speedrun takes what they leave.
Each result is appended to ``gpu_suite.json`` and ``gpu_suite.md`` in ``--out`` (default: ``$OUT`` or
``.bench/gpu_suite``) as soon as its check ends, so a call cut short still returns every result before
the cut. Imports only what the GPU machine has: torch, torchvision, scikit-learn, pillow, tqdm, pyyaml
(``tests/test_gpu_suite.py`` runs ``--smoke`` with everything else blocked).

What to carry to the GPU machine: this project (the working tree) and the CIFAR-10 JPEG archive
(``../shared/data/cifar10-jpg.tar.gz``, 19.6 MB: pass it with ``--data``), e.g.
``cp ../shared/data/cifar10-jpg.tar.gz .bench/ && python bench/gpu_suite.py --data .bench/cifar10-jpg.tar.gz``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
SPEEDRUN = REPO / "configs" / "simclr-cifar10-speedrun.yaml"
ARCHIVE = Path(".bench") / "cifar10-jpg.tar.gz"  # where the CIFAR-10 archive travels, inside the project
# The one line a session with a GPU needs: what to carry, and the command that fits one 10-minute call.
HOW = (
    f'cp ../shared/data/cifar10-jpg.tar.gz {ARCHIVE}; then run with carry: ["{ARCHIVE}"] and command: '
    f"python bench/gpu_suite.py --data {ARCHIVE} --budget 510 (timeout_s 560)"
)


# Most valuable first: what a short GPU loan must not miss comes before what a second call can add.
PRIORITY = ("train_bf16", "speedrun", "train_compile", "nccl_torchrun", "methods", "export", "augment")
# Seconds before the first check: unpacking the CIFAR-10 archive (60k JPEGs) and starting Python.
SETUP_S = {"gpu": 45.0, "smoke": 5.0}
# Dense bf16 tensor-core peaks (FLOP/s) by a piece of torch.cuda.get_device_name(), from NVIDIA's data
# sheets (without sparsity); the first match wins, so the more specific names come first.
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("4090", 165e12),
)


@dataclass
class Check:
    """One check: a command, its time limit, and how to read its numbers."""

    name: str
    what: str
    cmd: list[str]
    timeout_s: float  # for a flexible check: the least it is worth running with
    parse: Callable[[str], dict[str, Any]] = field(default=lambda out: {})
    env: dict[str, str] = field(default_factory=dict)
    aside: bool = False  # --smoke: run beside the others (compiling is mostly one core's work)
    # the speedrun: takes the time the other checks leave (at most most_s); cmd_for builds its command for it
    flexible: bool = False
    most_s: float = float("inf")
    cmd_for: Callable[[float, list[dict[str, Any]]], list[str]] | None = None  # (seconds, results so far)


def plan(todo: list[Check], budget: float | None, setup_s: float) -> tuple[list[Check], list[str]]:
    """The checks to run, in :data:`PRIORITY` order, with timeouts that add up to at most ``budget - setup_s``;
    and the names left out. Each check in turn is kept if it fits beside those kept before it (a flexible
    check counted at its least); the flexible check then takes what is left, up to its most. No budget:
    every check, a flexible one with its most."""
    order = sorted(todo, key=lambda c: PRIORITY.index(c.name) if c.name in PRIORITY else len(PRIORITY))
    if budget is None:
        for c in order:
            if c.flexible and c.most_s != float("inf"):
                c.timeout_s = c.most_s
        return order, []
    room, chosen = budget - setup_s, []
    for c in order:  # greedy by priority: a cheap check still fits where a dear one did not
        if sum(o.timeout_s for o in chosen) + c.timeout_s <= room:
            chosen.append(c)
    for c in chosen:
        if c.flexible:
            c.timeout_s = min(c.most_s, room - sum(o.timeout_s for o in chosen if o is not c))
    return chosen, [c.name for c in order if c not in chosen]


def last_metrics(run: Path) -> list[dict[str, Any]]:
    """The end-of-epoch lines of a run's metrics.jsonl."""
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    return [m for m in map(json.loads, lines) if m.get("kind") == "epoch"]


def images_per_s(run: Path) -> dict[str, Any]:
    epochs = last_metrics(run)
    if not epochs:
        raise RuntimeError(f"{run.name} wrote no epoch")
    log = (run / "train.log").read_text() if (run / "train.log").is_file() else ""
    return {
        "images_per_s": round(epochs[-1]["images_per_s"]),
        "epochs": len(epochs),
        "loss": round(epochs[-1]["epoch_loss"], 4),
        "compile_failed": "torch.compile failed" in log,
    }


def synthetic_folder(root: Path, classes: int = 2, per_class: int = 48, side: int = 32) -> Path:
    """A tiny image folder (train/ and test/ class folders of coloured noise), for --smoke without CIFAR-10."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", per_class // 2)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array([200, 40, 40] if c == 0 else [40, 40, 200], np.uint8)
                pixels = np.clip(base + rng.normal(0, 40, (side, side, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(d / f"{i}.png")
    return root


def checks(args: argparse.Namespace, folder: Path, work: Path) -> list[Check]:
    py = sys.executable
    runs = work / "runs"
    data_dir = str(work / "data")  # one decode cache for every check
    smoke = args.smoke
    size = (
        dict(backbone="resnet_mini", batch=32, epochs="2", subset="64")
        if smoke
        else dict(backbone="resnet18", batch=512, epochs="2", subset="0")
    )
    device = "cpu" if smoke else "cuda"
    common = [
        "--dataset",
        "folder",
        "--data-path",
        str(folder),
        "--data-dir",
        data_dir,
        "--backbone",
        size["backbone"],
        "--batch-size",
        str(size["batch"]),
        "--epochs",
        size["epochs"],
        "--knn-every",
        "0",
        "--no-probe",
        "--runs-dir",
        str(runs),
        "--device",
        device,
        "--jitter-strength",
        "0.5",
        "--blur-prob",
        "0",
        "--precision",
        "fp32" if smoke else "bf16",
        "--no-tensorboard",
    ]
    if size["subset"] != "0":
        common += ["--subset", size["subset"]]
    train = [py, "-m", "simclr_core.train", *common]
    out: list[Check] = [
        Check(
            "train_bf16",
            "bf16, channels_last, fused SGD, views on the device",
            [*train, "--name", "bf16"],
            55 if smoke else 90,
            lambda _: {**images_per_s(runs / "bf16"), **utilisation(runs / "bf16", size["backbone"], smoke)},
        ),
        Check(
            "train_compile",
            "the same with --compile",
            [*train, "--name", "compiled", "--compile"],
            180 if smoke else 150,
            lambda _: images_per_s(runs / "compiled"),
            aside=smoke,
        ),
    ]
    aug = [py, "bench/augment.py", "--data", str(folder), "--device", device, "--repeat", "1" if smoke else "3"]
    aug += (
        ["--images", "128", "--batch-size", "32", "--workers", "1"]
        if smoke
        else ["--images", "20000", "--batch-size", "512"]
    )
    out.append(Check("augment", "views/s: ours vs torchvision's PIL pipeline", aug, 60, parse_augment))
    torchrun = [
        py,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "simclr_core.train",
        *common,
        "--name",
        "torchrun",
        "--epochs",
        "1",
    ]
    out.append(
        Check(
            "nccl_torchrun",
            f"torchrun, 1 process ({'gloo' if smoke else 'NCCL'})",
            torchrun,
            45 if smoke else 60,
            lambda _: images_per_s(runs / "torchrun"),
        )
    )

    def speedrun(seconds: float, rows: list[dict[str, Any]]) -> list[str]:
        """The speedrun recipe for ``seconds`` in all (its own start and last kNN pass come out of them), with a
        cosine schedule that ends when the time does: epochs from the images/s train_bf16 measured."""
        minutes = max(0.1, (seconds - (20 if smoke else 60)) / 60)
        cmd = [py, "bench/time_to_accuracy.py", "--config", str(SPEEDRUN), "--data", str(folder)]
        cmd += ["--runs-dir", str(runs), "--device", device, "--minutes", f"{minutes:.2f}", "--name", "speedrun"]
        ips = next((r.get("images_per_s") for r in rows if r["name"] == "train_bf16" and r["ok"]), None)
        if ips and not smoke:  # a tenth kept for compiling and the kNN monitor; the recipe's 500 at most
            cmd += ["--epochs", str(max(1, min(500, int(minutes * 60 * ips * 0.9 / 50_000))))]
        if smoke:  # the recipe's code at tiny scale: resnet_mini, a subset, a few epochs
            cmd += ["--backbone", "resnet_mini", "--subset", "64", "--batch-size", "32", "--epochs", "2"]
            cmd += ["--knn-every", "1", "--precision", "fp32", "--no-compile"]
        return cmd

    out.append(
        Check(
            "speedrun",
            "the speedrun recipe: kNN top-1 against minutes",
            [],
            40 if smoke else 120,
            parse_tta,
            flexible=True,
            most_s=60 if smoke else 540,
            cmd_for=speedrun,
        )
    )
    methods = [py, "bench/methods.py", "--data", str(folder), "--device", device]
    methods += (
        [
            "--backbone",
            "resnet_mini",
            "--subset",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--queue-size",
            "64",
            "--knn-every",
            "1",
        ]
        if smoke
        else [
            "--backbone",
            "resnet18",
            "--subset",
            "10000",
            "--epochs",
            "3",
            "--batch-size",
            "512",
            "--queue-size",
            "4096",
            "--knn-every",
            "3",
        ]
    )
    out.append(
        Check(
            "methods",
            "SimCLR, MoCo v2, BYOL: kNN after a few epochs",
            methods,
            120,
            parse_methods,
            env={"TMPDIR": str(work)},
        )
    )
    export = [py, "-c", EXPORT_SNIPPET, str(runs / "bf16"), device]
    out.append(Check("export", "backbone exported and reloaded on the device", export, 60, parse_json_line))
    return out


EXPORT_SNIPPET = r"""
import json, sys, torch
from simclr_core.exporters import export_backbone
from simclr_core.runs.checkpoints import load_backbone
run, device = sys.argv[1], sys.argv[2]
model = load_backbone(run, device=device)
x = torch.rand(8, 3, 32, 32, device=device)
with torch.no_grad():
    ref = model(x).float()
result = {}
for fmt in ("torchscript", "safetensors", "onnx"):
    try:
        path = export_backbone(run, fmt)
    except Exception as e:  # a missing optional package: say so, go on
        result[fmt] = f"skipped: {str(e).splitlines()[0][:80]}"
        continue
    if fmt == "torchscript":
        back = torch.jit.load(str(path), map_location=device)
    elif fmt == "safetensors":
        back = load_backbone(path, device=device)
    else:
        import onnxruntime as ort
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        sess = ort.InferenceSession(str(path), providers=providers)
        got = torch.from_numpy(sess.run(None, {"images": x.cpu().numpy()})[0])
        result[fmt] = f"max diff {float((got - ref.cpu()).abs().max()):.1e} ({providers[0]})"
        continue
    with torch.no_grad():
        got = back(x).float()
    result[fmt] = f"max diff {float((got - ref).abs().max()):.1e} on {device}"
print(json.dumps(result))
"""


def parse_json_line(out: str) -> dict[str, Any]:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def parse_augment(out: str) -> dict[str, Any]:
    found = {}
    for line in out.splitlines():
        m = re.match(
            r"^(ours|torchvision v2 PIL, 1 process|torchvision v2 PIL, DataLoader \d+ workers|kornia\S*)"
            r".*?\s([\d,]+)\s+[\d.]+x\s*$",
            line.strip(),
        )
        if m:
            found[m.group(1)] = int(m.group(2).replace(",", ""))
    return {"views_per_s": found}


def parse_tta(out: str) -> dict[str, Any]:
    rows = re.findall(r"^\s*([\d.]+)\s+(\d+)\s+([\d.]+)\s*$", out, re.M)
    reached = dict(re.findall(r"^kNN (\d+)%: ([\d.]+|not reached)", out, re.M))
    return {"minutes_epoch_knn": [(float(a), int(b), float(c)) for a, b, c in rows], "minutes_to": reached}


def utilisation(run: Path, backbone: str, smoke: bool) -> dict[str, Any]:
    """Model FLOP utilisation of a training run: its images/s x the FLOPs of one image's step (two views,
    forward and backward, counted by torch's FlopCounterMode on the CPU) / the device's bf16 peak."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from simclr_core.models import Encoder

    side = 32
    encoder = Encoder(backbone, cifar_stem=True)
    x = torch.rand(2, 3, side, side)  # the two views of one image
    with FlopCounterMode(display=False) as counter:
        encoder(x).sum().backward()
    flops = counter.get_total_flops()
    ips = images_per_s(run)["images_per_s"]
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not smoke else "CPU"
    peak = next((p for key, p in PEAK_BF16 if key in name), None)
    return {
        "gflop_per_image": round(flops / 1e9, 3),
        "tflop_s": round(ips * flops / 1e12, 2),
        "mfu": None if peak is None else round(ips * flops / peak, 4),
    }


def parse_methods(out: str) -> dict[str, Any]:
    data = parse_json_line(out)
    return {m: {"knn": r["knn"], "loss": round(r["loss"], 4)} for m, r in data.get("results", {}).items()}


def run_check(check: Check) -> dict[str, Any]:
    t0 = time.perf_counter()
    print(f"== {check.name}: {check.what}", flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **check.env,
    }
    try:
        proc = subprocess.run(check.cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=check.timeout_s)
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        output += f"\n(timed out after {check.timeout_s:.0f} s)"
        rc = 124
    row: dict[str, Any] = {"name": check.name, "ok": rc == 0, "seconds": round(time.perf_counter() - t0, 1)}
    if rc == 0:
        try:
            row.update(check.parse(output))
        except Exception as e:  # noqa: BLE001 - a parse error is this check's failure, not the suite's
            row.update(ok=False, error=f"reading its numbers: {type(e).__name__}: {e}")
    else:
        tail = [ln for ln in output.strip().splitlines() if ln.strip()][-6:]
        row["error"] = f"exit {rc}: " + " | ".join(tail)[-600:]
    print(
        ("   ok " if row["ok"] else "   FAILED ") + json.dumps({k: v for k, v in row.items() if k != "name"}),
        flush=True,
    )
    return row


def markdown(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [
        f"GPU suite — {header['device']}, torch {header['torch']}, Python {header['python']}, "
        f"{'smoke (tiny sizes)' if header['smoke'] else 'full'}",
        "",
        "| check | ok | s | result |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        result = r.get("error") or json.dumps({k: v for k, v in r.items() if k not in ("name", "ok", "seconds")})
        lines.append(f"| {r['name']} | {'yes' if r['ok'] else 'NO'} | {r['seconds']} | {result.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def report(out: Path, header: dict[str, Any], rows: list[dict[str, Any]], left: list[str]) -> None:
    """gpu_suite.json and gpu_suite.md with every result so far (written after each check)."""
    done = {"checks": rows, "planned": header.get("planned", []), "left_out": left}
    (out / "gpu_suite.json").write_text(json.dumps({**header, **done}, indent=2) + "\n")
    table = markdown(rows, header)
    if left:
        table += f"\nLeft out to fit --budget {header.get('budget')} s: {', '.join(left)}\n"
    (out / "gpu_suite.md").write_text(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: the same code in under a minute")
    p.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz",
        help="CIFAR-10 JPEG folder or .tar.gz (--smoke makes a tiny folder when it is missing)",
    )
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / ".bench" / "gpu_suite"))
    p.add_argument("--only", nargs="+", help="run only these checks")
    p.add_argument("--budget", type=float, help="seconds for the whole call, unpacking included: plan to fit it")
    p.add_argument("--how", action="store_true", help="print the carry list and the command to use, and exit")
    args = p.parse_args(argv)
    if args.how:
        print(HOW)
        return 0
    start = time.monotonic()

    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA device; run with --smoke on a CPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        work = Path(tmp)
        if args.data.exists():
            from train_cifar import image_folder

            folder = image_folder(args.data.resolve(), REPO / ".bench")
        elif args.smoke:
            folder = synthetic_folder(work / "images")
        else:
            print(f"error: {args.data} not found: pass --data (the CIFAR-10 JPEG archive). {HOW}", file=sys.stderr)
            return 2
        setup_s = max(time.monotonic() - start, SETUP_S["smoke" if args.smoke else "gpu"])
        todo = [c for c in checks(args, folder, work) if not args.only or c.name in args.only]
        todo, left = plan(todo, args.budget, setup_s)
        header = {
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "CPU",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "smoke": args.smoke,
            "data": str(folder),
            "budget": args.budget,
            "planned": [{"name": c.name, "timeout_s": round(c.timeout_s)} for c in todo],
        }
        print(HOW, flush=True)
        print(json.dumps(header), flush=True)
        rows: list[dict[str, Any]] = []

        def finished(row: dict[str, Any]) -> dict[str, Any]:
            rows.append(row)
            report(args.out, header, rows, left)  # now: a call cut short keeps every result before the cut
            return row

        with ThreadPoolExecutor(max_workers=1) as pool:  # on a GPU every check runs alone: no shared device
            aside = {c.name: pool.submit(lambda c=c: finished(run_check(c))) for c in todo if c.aside}
            for c in todo:
                if not c.aside:
                    if c.cmd_for is not None:  # built now: it may use the results before it
                        c.cmd = c.cmd_for(c.timeout_s, rows)
                    finished(run_check(c))
            for f in aside.values():
                f.result()
    order = [c.name for c in todo]
    rows.sort(key=lambda r: order.index(r["name"]))
    report(args.out, header, rows, left)
    print("\n" + (args.out / "gpu_suite.md").read_text())
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
