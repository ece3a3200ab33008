"""Every GPU check of the project in one command, for the rare session that is lent a GPU.

    python bench/gpu_suite.py --data cifar10-jpg.tar.gz      # one GPU: about 8 minutes
    python bench/gpu_suite.py --smoke                         # CPU, tiny sizes, under a minute (a test runs it)

Checks, each in its own process (a crash or a hang costs that check only; its error is printed and
the suite goes on):

1. ``train_bf16``: ResNet-18 (CIFAR stem), batch 512, bf16 autocast, channels_last, fused SGD, views on
   the GPU: images/s of the second epoch (the first includes cuDNN's autotuning).
2. ``train_compile``: the same with ``--compile``: images/s, and whether it fell back to eager.
3. ``augment``: ``bench/augment.py`` (views/s of ours and torchvision's PIL pipeline).
4. ``nccl_torchrun``: ``torchrun --nproc_per_node 1`` (NCCL on a GPU, gloo on the CPU), one epoch.
5. ``time_to_accuracy``: ``bench/time_to_accuracy.py`` for a few minutes: kNN top-1 after N epochs.
6. ``methods``: SimCLR, MoCo v2 and BYOL for a few epochs each (``bench/methods.py``).
7. ``export``: the backbone of run 1 as TorchScript (and safetensors / ONNX where installed), reloaded
   on the GPU; the largest difference from the trained model's features.

Writes ``gpu_suite.json`` and ``gpu_suite.md`` (a table) into ``--out`` (default: ``$OUT`` or
``.bench/gpu_suite``). Imports only what the GPU machine has: torch, torchvision, scikit-learn,
pillow, tqdm, pyyaml (``tests/test_gpu_suite.py`` runs ``--smoke`` with everything else blocked).

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


@dataclass
class Check:
    """One check: a command, its time limit, and how to read its numbers."""

    name: str
    what: str
    cmd: list[str]
    timeout_s: float
    parse: Callable[[str], dict[str, Any]] = field(default=lambda out: {})
    env: dict[str, str] = field(default_factory=dict)
    aside: bool = False  # --smoke: run beside the others (compiling is mostly one core's work)


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
            120 if smoke else 150,
            lambda _: images_per_s(runs / "bf16"),
        ),
        Check(
            "train_compile",
            "the same with --compile",
            [*train, "--name", "compiled", "--compile"],
            240,
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
    out.append(
        Check("augment", "views/s: ours vs torchvision's PIL pipeline", aug, 60 if smoke else 150, parse_augment)
    )
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
            120 if smoke else 150,
            lambda _: images_per_s(runs / "torchrun"),
        )
    )
    tta = [py, "bench/time_to_accuracy.py", "--data", str(folder), "--runs-dir", str(runs), "--device", device]
    tta += (
        [
            "--minutes",
            "0.3",
            "--epochs",
            "2",
            "--subset",
            "64",
            "--batch-size",
            "32",
            "--backbone",
            "resnet_mini",
            "--knn-every",
            "1",
        ]
        if smoke
        else ["--minutes", str(args.tta_minutes), "--epochs", "300", "--knn-every", "5"]
    )
    out.append(
        Check(
            "time_to_accuracy",
            "kNN top-1 against training minutes",
            tta,
            90 if smoke else args.tta_minutes * 60 + 120,
            parse_tta,
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
            150 if smoke else 240,
            parse_methods,
            env={"TMPDIR": str(work)},
        )
    )
    export = [py, "-c", EXPORT_SNIPPET, str(runs / "bf16"), device]
    out.append(Check("export", "backbone exported and reloaded on the device", export, 120, parse_json_line))
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
    return {"minutes_epoch_knn": [(float(a), int(b), float(c)) for a, b, c in rows]}


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
    p.add_argument("--tta-minutes", type=float, default=2.5, help="time-to-accuracy budget (full run)")
    args = p.parse_args(argv)

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
            print(f"error: {args.data} not found: pass --data (the CIFAR-10 JPEG archive)", file=sys.stderr)
            return 2
        header = {
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "CPU",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "smoke": args.smoke,
            "data": str(folder),
        }
        print(json.dumps(header), flush=True)
        todo = [c for c in checks(args, folder, work) if not args.only or c.name in args.only]
        with ThreadPoolExecutor(max_workers=1) as pool:  # on a GPU every check runs alone: no shared device
            aside = {c.name: pool.submit(run_check, c) for c in todo if c.aside}
            done = {c.name: run_check(c) for c in todo if not c.aside}
            rows = [aside[c.name].result() if c.aside else done[c.name] for c in todo]
    (args.out / "gpu_suite.json").write_text(json.dumps({**header, "checks": rows}, indent=2) + "\n")
    table = markdown(rows, header)
    (args.out / "gpu_suite.md").write_text(table)
    print("\n" + table)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
