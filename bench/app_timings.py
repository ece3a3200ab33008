"""What a new user waits for in the app's first minutes, measured through the same library calls.

    python bench/app_timings.py                 # CIFAR-10 JPEGs from ../shared/data for part 2

1. The Train page's "Quick CPU demo" preset, launched exactly as the Launch button does
   (``simclr_core.runs.launch.launch``): seconds until the process reports, until the first metrics
   line (the first point of the loss curve; the page polls every 2 s), until the first kNN,
   and until the run finishes.
2. The Embeddings page on 10,000 images: embed the CIFAR-10 test split with a ResNet-18 (CIFAR
   stem, random init: the cost does not depend on the weights) and project it with UMAP 2-D,
   as the page does (``embed_split`` + ``project``), cold: the first UMAP call in a process
   includes numba's compilation, which a user also waits for once.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from simclr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from simclr_core.embeddings import embed_split  # noqa: E402
from simclr_core.explorer.projection import project  # noqa: E402
from simclr_core.hardware import describe, resolve_device  # noqa: E402
from simclr_core.presets import PRESETS  # noqa: E402
from simclr_core.runs import launch  # noqa: E402
from simclr_core.runs.rundir import new_run  # noqa: E402
from train_cifar import DEFAULT_DATA, image_folder  # noqa: E402


def first_minutes(root: Path) -> dict[str, float]:
    name = next(iter(PRESETS))
    cfg = PRESETS[name]()
    cfg.run.name, cfg.run.runs_dir, cfg.data.data_dir = "quick-demo", str(root / "runs"), str(root / "data")
    t0 = time.perf_counter()
    run = launch.launch(cfg)
    marks: dict[str, float] = {}
    while launch.is_active(run) or "finished" not in marks:
        now = time.perf_counter() - t0
        st, metrics = run.status(), run.metrics()
        if st.get("state") == "running":
            marks.setdefault("process reports running", now)
        if metrics:
            marks.setdefault("first loss point", now)
        if any("knn_top1" in m for m in metrics):
            marks.setdefault("first kNN point", now)
        if st.get("state") in ("finished", "failed", "stopped"):
            marks["finished"] = now
            break
        time.sleep(0.2)
    epochs = [m for m in run.metrics() if "knn_top1" in m]
    print(f"1. preset {name!r}: {cfg.optim.epochs} epochs of {cfg.data.dataset} with {cfg.model.backbone}")
    for k, v in marks.items():
        print(f"   {k:<26} {v:7.1f} s after Launch")
    if epochs:
        print(
            f"   kNN top-1: epoch 1 {epochs[0]['knn_top1']:.2f}% -> epoch {epochs[-1]['epoch']} "
            f"{epochs[-1]['knn_top1']:.2f}%"
        )
    return marks


def embed_and_umap(root: Path, data: Path) -> dict[str, float]:
    folder = image_folder(data.resolve(), REPO / ".bench")
    cfg = TrainConfig(
        data=DataConfig(dataset="folder", data_path=str(folder), data_dir=str(REPO / ".bench" / "data")),
        model=ModelConfig(backbone="resnet18", cifar_stem=True),
        run=RunConfig(name="embed-bench", runs_dir=str(root / "runs")),
    )
    run = new_run(cfg.run.runs_dir, cfg.run.name)
    cfg.save(run.config_path)
    t0 = time.perf_counter()
    emb = embed_split(run, "test", "h", random_init=True)
    t_embed = time.perf_counter() - t0
    t0 = time.perf_counter()
    coords = project(emb.embeddings, "umap", 2)
    t_umap = time.perf_counter() - t0
    print(f"2. {len(emb.embeddings)} CIFAR-10 test images, ResNet-18 {emb.embeddings.shape[1]}-d features:")
    print(f"   embed  {t_embed:7.1f} s ({len(emb.embeddings) / t_embed:.0f} images/s)")
    print(f"   UMAP   {t_umap:7.1f} s (2-D, n_neighbors 15, cold: numba compiles on the first call) -> {coords.shape}")
    return {"embed_s": t_embed, "umap_s": t_umap, "n": len(emb.embeddings)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 image folder or .tar.gz (part 2)")
    args = p.parse_args()
    print(f"device: {describe(resolve_device('auto'))}")
    with tempfile.TemporaryDirectory() as tmp:
        out = {"first_minutes": first_minutes(Path(tmp)), "embed_umap_10k": embed_and_umap(Path(tmp), args.data)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
