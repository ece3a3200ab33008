"""The explorer's numbers: the map in a real browser at up to a million points, search, and UMAP start-up.

    python bench/explorer.py --points 50000 200000 1000000   # the WebGL map at each size (last line: JSON)
    python bench/explorer.py --parts deckgl --points 50000 1000000
    python bench/explorer.py --parts page --points 50000 1000000  # the real Embeddings page
    python bench/explorer.py --parts page search umap        # the other parts

Parts:
- ``--points N ...`` (:func:`scale`): the Embeddings page's map (ui/scatter.py) in the harness
  bench/explorer_app.py, fed N clustered points (10 Gaussian blobs) and real CIFAR-10 thumbnails tiled
  to N (sprite atlases, simclr_core.explorer.thumbnails): column bytes, first draw, hover-to-thumbnail,
  click-to-neighbours, colour change, a 10,000-point box selection, reruns caused by hover / pan / zoom,
  and the page server's peak RSS. With ``--backend``, bench/explorer_backend.py's graph, projection and
  scores times for clustered 512-d embeddings of that size.
- ``deckgl``: pydeck's own deck.gl bundle (a ScatterplotLayer fed the same binary columns) against
  ui/scatter.js in a bare page: script load, first draw, and one hover pick (deck.gl picks on the GPU).
  The renderers measured before this map existed (Plotly WebGL, ``st.pydeck_chart`` with JSON points,
  embedding-atlas) are in BENCHMARKS.md, issue 9, with the commit that measured them.
- ``page``: the real Embeddings page (``streamlit run app.py``) for a run whose 10,000 / 50,000-image
  CIFAR-10 split (or ``--points N``: CIFAR-10's training images tiled to N) is already embedded: first
  visit, draw, hover-to-thumbnail, click-to-neighbours, both processes' peak memory.
- ``search``: query time of :class:`simclr_core.explorer.neighbours.NeighbourIndex` over 10k / 60k / 1M
  random 512-d embeddings (isotropic Gaussian: the worst case for an index, and clustered: like
  real embeddings), exact and through faiss indexes, with their recall@10 against exact search.
- ``umap``: 10k-point UMAP in a fresh process: cold (numba compiles), after the worker's warm-up
  (:func:`simclr_core.explorer.jobs.warm_up_umap`), and warm.

The browser here renders WebGL with SwiftShader (on the CPU), so drawing times are an upper
bound of what a machine with a GPU shows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simclr_core.cli.studio import CHROMIUM, CHROMIUM_FLAGS, start_server  # noqa: E402


def start_streamlit(
    script: Path, cwd: Path, env: dict[str, str] | None = None, flags: list[str] | None = None
) -> tuple[subprocess.Popen, str]:
    """``streamlit run script`` on a free port, serving static files (``flags``: more server options)."""
    return start_server(script, cwd, dict(env or {}), ["--server.enableStaticServing=true", *(flags or [])], 90)


def cifar_images(n: int, data: Path):
    """n CIFAR-10 training images (uint8 ImageSet) from the JPEG folder, or random pixels without it."""
    import torch

    from simclr_core.data.datasets import ImageSet, load_split

    if data.exists():
        from train_cifar import image_folder  # type: ignore[import-not-found]

        folder = image_folder(data.resolve(), REPO / ".bench")
        imgs = load_split("folder", "train", path=str(folder), data_dir=str(REPO / ".bench" / "data"))
        rows = torch.arange(n) % len(imgs)
        return ImageSet(imgs.images[rows], imgs.labels[rows], imgs.classes, f"{imgs.name}[:{n}]")
    g = torch.Generator().manual_seed(0)
    return ImageSet(
        torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
        torch.zeros(n, dtype=torch.long),
        [],
        f"random[:{n}]",
    )


# ---------------------------------------------------------------- parts


MAP = ".map[data-drawn]:not([data-preview])"  # ui/scatter.js's map once drawn (CSS pierces its shadow root)


def page_hover_and_click(pg) -> dict:
    """On the real Embeddings page: five hovers (ms from the pointer event to the thumbnail shown, measured in
    the page), frames the browser sent meanwhile (a rerun needs one), and a click until its neighbours show."""
    sent: list[int] = []
    pg.context.pages[0].on("websocket", lambda ws: ws.on("framesent", lambda f: sent.append(1)))
    box = pg.locator(MAP).first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    hovers: list[float] = []
    spots: list[tuple[float, float, str]] = []  # where a point is, and its row
    for r in range(0, 300, 11):
        for dx, dy in ((r, 0), (0, r), (-r, 0), (0, -r)):
            pg.mouse.move(box["x"] + 3, box["y"] + box["height"] - 3)
            pg.mouse.move(cx + dx, cy + dy)
            try:
                pg.locator(".map .tip[data-ready]").first.wait_for(timeout=1500)
            except Exception:  # noqa: BLE001, S112 - no point under the pointer here
                continue
            tip = pg.locator(".map .tip").first
            hovers.append(float(tip.get_attribute("data-ready-ms")))
            if all(row != tip.get_attribute("data-row") for *_, row in spots):
                spots.append((cx + dx, cy + dy, tip.get_attribute("data-row")))
            if len(hovers) >= 5 and len(spots) >= 2:
                break
        if len(hovers) >= 5 and len(spots) >= 2:
            break
    out: dict = {"hover_ms": round(float(np.median(hovers)), 1) if hovers else None, "hover_ms_all": hovers}
    out["frames_sent_on_hover"] = len(sent)
    # the first click also redraws the panels below (their tag choices gain "the picked image"); later ones
    # redraw only the map and its neighbours (a fragment). The first comes as soon as the thumbnail shows; before
    # the second the pointer rests 300 ms on the point, as a hand does (the map reads ahead after 150 ms).
    for name, (x, y, row) in zip(("first_click", "click"), spots[:2], strict=False):
        pg.mouse.move(x, y)
        pg.locator(".map .tip[data-ready]").first.wait_for(timeout=5000)
        if name == "click":
            pg.wait_for_timeout(300)
        t0 = time.perf_counter()
        pg.mouse.down()
        pg.mouse.up()
        pg.get_by_text(f"#{row} · ").filter(visible=True).first.wait_for()  # the neighbours' heading (not the tooltip)
        pg.locator(".map[data-marked='10']").first.wait_for()
        out[f"{name}_ms"] = round(1000 * (time.perf_counter() - t0))
        if pg.locator(".side[data-listed-ms]").count():  # listed by the map itself: timed in the page, from the click
            side = pg.locator(f".side[data-ready='{row}'][data-painted-ms]").first
            side.wait_for()  # to the list and rings in the page, on screen (the next frame), and their pictures
            for what, attr in (("listed", "listed"), ("painted", "painted"), ("pictures", "ready")):
                out[f"{name}_{what}_in_page_ms"] = float(side.get_attribute(f"data-{attr}-ms"))
        t0 = time.perf_counter()
        pg.locator('[data-testid="stStatusWidget"]').wait_for(state="detached")
        out[f"{name}_rerun_done_ms"] = out[f"{name}_ms"] + round(1000 * (time.perf_counter() - t0))
    return out


def drag_box(pg, xy: np.ndarray, shown: str, want: int = 10_000) -> dict:
    """A Box selection on the map around ``want`` points (``xy``: the map's coordinates), timed until its count
    in the browser and until the page shows ``shown`` with that count in place of ``{n}`` (Python and back)."""
    box = pg.locator(MAP).first
    bb = box.bounding_box()
    pg.locator(".map .tools button[data-mode=box]").first.click()
    x0, y0, x1, y1 = _box_of(xy, want)
    v = json.loads(box.get_attribute("data-view"))

    def to_s(x: float, y: float) -> tuple[float, float]:
        return bb["x"] + v["w"] / 2 + (x - v["cx"]) * v["k"], bb["y"] + v["h"] / 2 - (y - v["cy"]) * v["k"]

    t0 = time.perf_counter()
    pg.mouse.move(*to_s(x0, y1))
    pg.mouse.down()
    pg.mouse.move(*to_s(x1, y0), steps=5)
    pg.mouse.up()
    pg.locator(".map[data-selected]").first.wait_for()
    picked = int(box.get_attribute("data-selected"))
    pg.get_by_text(shown.format(n=picked)).first.wait_for()
    out = {"box_points": picked, "box_in_browser_ms": float(box.get_attribute("data-select-ms"))}
    out["box_to_python_ms"] = round(1000 * (time.perf_counter() - t0))
    return out


def tiled_folder(cifar: Path, n: int, scratch: Path) -> Path:
    """An image folder whose train/ split holds ``n`` images, CIFAR-10's training JPEGs repeated as hard links
    (no disk or inodes spent per copy), beside CIFAR-10's own test/: the page at sizes CIFAR-10 lacks."""
    out = scratch / f"cifar10-tiled-{n}"
    if (out / ".complete").is_file():
        return out
    files = sorted((cifar / "train").glob("*/*.jpg"))
    for d in {f.parent.name for f in files}:
        (out / "train" / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = files[i % len(files)]
        dst = out / "train" / src.parent.name / f"{i // len(files)}-{src.name}"
        if not dst.exists():
            try:
                os.link(src, dst)
            except OSError:  # another file system, or no hard links: a copy
                shutil.copyfile(src, dst)
    if not (out / "test").exists():
        (out / "test").symlink_to((cifar / "test").resolve(), target_is_directory=True)
    (out / ".complete").write_text(str(n))
    return out


def _worker_peak_mb(server: int) -> float | None:
    """The peak resident memory (VmHWM), MB, of the explorer worker the app server ``server`` started; None
    when there is none."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        parent = args[args.index(b"--parent") + 1] if b"--parent" in args[:-1] else None
        if b"simclr_core.explorer.jobs" in args and parent == str(server).encode():
            return round(_rss_peak_mb(int(cmdline.parent.name)))
    return None


def page(data: Path, sizes: list[int], home: Path | None = None) -> dict:
    """The real Embeddings page (``streamlit run app.py``) for a run whose split of ``n`` images is embedded
    already, at each size: the first visit (the worker decodes the images, builds the k-NN graph, the
    thumbnails and the map), then as a user sees it every later time: seconds until the map has drawn,
    hover-to-thumbnail, click-to-neighbours, reruns caused by hover, a box of 10,000 points (:func:`drag_box`),
    and both processes' peak memory.

    10,000 and 50,000 are CIFAR-10's test and train splits; other sizes tile its training images
    (:func:`tiled_folder`). The embeddings are synthetic (64-d, clustered by the real labels) and written
    where training's would be, so the page's own work is measured, not the encoder's; the projection is
    PCA. ``home``: keep the runs there, so a later call skips the first visit's work.
    """
    from playwright.sync_api import sync_playwright

    from simclr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from simclr_core.data.datasets import load_split
    from simclr_core.embeddings import Embeddings, embedding_cache
    from simclr_core.explorer import jobs
    from simclr_core.runs.rundir import RunDir
    from train_cifar import image_folder  # type: ignore[import-not-found]

    if not data.exists():
        print("  (page part skipped: it needs the CIFAR-10 JPEGs, --data)")
        return {}
    cifar = image_folder(data.resolve(), REPO / ".bench")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = home or Path(tmp)
        runs = home / "runs"
        for n in sizes:
            folder, split = (cifar, {10_000: "test", 50_000: "train"}.get(n)) if n in (10_000, 50_000) else (
                tiled_folder(cifar, n, REPO / ".bench"), "train")  # fmt: skip
            run = RunDir(runs / f"page-{n}")
            if (run.path / "ready").is_file():
                continue
            cfg = TrainConfig(
                data=DataConfig(dataset="folder", data_path=str(folder), data_dir=str(REPO / ".bench" / "data")),
                model=ModelConfig(backbone="resnet_mini"),
                run=RunConfig(name=run.name, runs_dir=str(runs)),
            )
            run.path.mkdir(parents=True, exist_ok=True)
            cfg.save(run.config_path)
            (run.path / "last.pt").write_bytes(b"placeholder: the embeddings are already in the cache")
            base = load_split("folder", split, path=str(cifar), data_dir=cfg.data.data_dir)  # tiled: train's labels
            labels = np.resize(base.labels.numpy(), n)
            rng = np.random.default_rng(0)
            x = (rng.normal(size=(10, 64)) * 1.5)[labels].astype(np.float32)
            x += rng.normal(size=x.shape).astype(np.float32)
            Embeddings(x, labels, np.arange(n), list(base.classes), "").save_npz(embedding_cache(run, split, "h"))
            (run.path / "ready").touch()  # a call stopped above starts the run again
        proc, url = start_streamlit(REPO / "app.py", home, env={"SIMCLR_RUNS_DIR": str(runs)})
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
                for n in sizes:
                    split = "test" if n == 10_000 else "train"
                    pg = browser.new_page(viewport={"width": 1500, "height": 1100})
                    pg.set_default_timeout(3_600_000)
                    link = f"{url}/embeddings?run=page-{n}&view=map&split={split}&projection=pca&points=0"
                    t0 = time.perf_counter()
                    pg.goto(link)
                    pg.locator(MAP).first.wait_for()  # the worker decodes, builds the graph and thumbnails once
                    prepared = time.perf_counter() - t0
                    pg.goto(link)  # now as a user sees it every later time
                    t0 = time.perf_counter()
                    pg.locator(MAP).first.wait_for()
                    drawn = round(time.perf_counter() - t0, 2)
                    row = {"points": n, "first_visit_s": round(prepared, 1), "drawn_s": drawn}
                    pg.wait_for_timeout(1000)
                    row.update(page_hover_and_click(pg))
                    [job] = [j for j in jobs.find(jobs.jobs_dir(runs), "map") if j["spec"]["run"].endswith(f"page-{n}")]
                    row.update(drag_box(pg, np.load(job["result"]["coords"])[:, :2], "{n} points selected"))
                    row["page_peak_rss_mb"] = round(_rss_peak_mb(proc.pid))
                    row["worker_peak_rss_mb"] = _worker_peak_mb(proc.pid)
                    print(f"  Embeddings page, {n:,} images: {json.dumps(row)}", flush=True)
                    out[f"page-{n}"] = row
                    pg.close()
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return out


def _timed_queries(index, queries: np.ndarray, k: int = 10) -> tuple[float, np.ndarray]:
    index.search(queries[:1], k)  # the first call allocates
    t0 = time.perf_counter()
    rows = np.stack([index.search(q[None], k)[1][0] for q in queries])
    return (time.perf_counter() - t0) / len(queries) * 1000, rows


def search(sizes: list[int], queries: int = 100, run: Path | None = None) -> dict:
    import faiss
    import torch

    from simclr_core.explorer.neighbours import NeighbourIndex

    torch.set_num_threads(os.cpu_count() or 1)
    out: dict = {}
    rng = np.random.default_rng(0)
    for kind in ("isotropic", "clustered"):
        for n in sizes:
            if kind == "isotropic":
                bank = rng.standard_normal((n, 512), dtype=np.float32)
                q = rng.standard_normal((queries, 512), dtype=np.float32)
            else:  # 100 clusters, like classes and their sub-classes in a trained encoder's space
                centres = rng.standard_normal((100, 512), dtype=np.float32)
                bank = centres[rng.integers(0, 100, n)] + 0.5 * rng.standard_normal((n, 512), dtype=np.float32)
                q = centres[rng.integers(0, 100, queries)] + 0.5 * rng.standard_normal((queries, 512), dtype=np.float32)
            t0 = time.perf_counter()
            exact = NeighbourIndex(bank, exact_max=n)
            first_ms = (time.perf_counter() - t0) * 1000
            ms, truth = _timed_queries(exact, q)
            row = {"exact_ms": round(ms, 2), "exact_build_ms": round(first_ms, 1)}
            print(
                f"  {kind:<9} n={n:>9,}: exact {ms:7.2f} ms/query (normalising the bank once: {first_ms:.0f} ms)",
                flush=True,
            )
            if n >= 60_000:
                unit = exact.bank.numpy()
                candidates = [("faiss IVF-Flat", lambda b=bank: NeighbourIndex(b, exact_max=0))]
                if n <= 100_000:  # HNSW's build grows past 15 minutes at 1M on 2 cores (8-32 s at 60k)
                    candidates.append(("faiss HNSW32", lambda u=unit: _hnsw(u)))
                for name, make in candidates:
                    t0 = time.perf_counter()
                    idx = make()
                    build = time.perf_counter() - t0
                    ms, got = _timed_queries(idx, q)
                    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)]))
                    row[name] = {"ms": round(ms, 2), "recall@10": round(recall, 3), "build_s": round(build, 1)}
                    print(
                        f"  {'':<9} {'':>11}  {name:<15} {ms:7.2f} ms/query  recall@10 {recall:.3f}  "
                        f"(built in {build:.1f} s)",
                        flush=True,
                    )
            out[f"{kind}-{n}"] = row
            del bank
    if run is not None:  # a trained encoder's embeddings of real images: the bank a user searches
        from simclr_core.embeddings import embed_split
        from simclr_core.runs.rundir import RunDir

        emb = embed_split(RunDir(run), "train").embeddings
        q = emb[rng.choice(len(emb), queries, replace=False)]
        exact = NeighbourIndex(emb, exact_max=len(emb))
        ms, truth = _timed_queries(exact, q)
        ann = NeighbourIndex(emb, exact_max=0)
        ms_ann, got = _timed_queries(ann, q)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)]))
        out["run"] = {
            "n": len(emb),
            "dims": emb.shape[1],
            "exact_ms": round(ms, 2),
            "ivf_ms": round(ms_ann, 2),
            "recall@10": round(recall, 3),
        }
        print(
            f"  run {Path(run).name} ({len(emb):,} x {emb.shape[1]} CIFAR-10 train embeddings): exact {ms:.2f} "
            f"ms/query, faiss IVF-Flat {ms_ann:.2f} ms/query, recall@10 {recall:.3f}",
            flush=True,
        )
    del faiss
    return out


class _hnsw:
    """faiss HNSW (M = 32, efSearch = 128) behind NeighbourIndex.search's signature, for comparison."""

    def __init__(self, unit: np.ndarray):
        import faiss

        self.index = faiss.IndexHNSWFlat(unit.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = 80
        self.index.add(unit)
        self.index.hnsw.efSearch = 128

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        return self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)


UMAP_SNIPPET = """
import sys, time, numpy as np
sys.path.insert(0, {repo!r})
from simclr_core.explorer.projection import project
from simclr_core.explorer.jobs import warm_up_umap
x = np.random.default_rng(1).standard_normal((10000, 512)).astype(np.float32)
if {warm!r}:
    t = time.perf_counter(); warm_up_umap(); print("warm_up_s", time.perf_counter() - t)
t = time.perf_counter(); project(x, "umap", 2); print("first_s", time.perf_counter() - t)
t = time.perf_counter(); project(x, "umap", 2); print("second_s", time.perf_counter() - t)
"""


def umap_startup() -> dict:
    out: dict = {}
    for warm in (False, True):
        res = subprocess.run(
            [sys.executable, "-c", UMAP_SNIPPET.format(repo=str(REPO), warm=warm)],
            capture_output=True,
            text=True,
            check=True,
        )
        vals = {k: float(v) for k, v in (ln.split() for ln in res.stdout.splitlines() if ln.strip())}
        out["after_warm_up" if warm else "cold"] = vals
        print(
            f"  {'after warm-up' if warm else 'cold server'}: " + ", ".join(f"{k} {v:.1f}" for k, v in vals.items()),
            flush=True,
        )
    return out


# ---------------------------------------------------------------- scale: the WebGL map at 50k / 200k / 1M


def blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n points in 10 Gaussian blobs (a clustered 2-D map) and each one's blob as its class; point 0 at the centre."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 2)) * 6
    label = rng.integers(0, 10, n)
    xy = (centres[label] + rng.normal(size=(n, 2))).astype(np.float32)
    xy[0] = 0.0  # a point near the middle of the map
    return xy, label


def _rss_peak_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _box_of(xy: np.ndarray, want: int) -> tuple[float, float, float, float]:
    """A square around the densest blob's centre holding about ``want`` points: (x0, y0, x1, y1)."""
    centre = np.median(xy[: min(len(xy), 20_000)], axis=0)
    lo, hi = 0.0, float(np.abs(xy - centre).max())
    for _ in range(40):
        half = (lo + hi) / 2
        inside = int((np.abs(xy - centre) <= half).all(1).sum())
        lo, hi = (half, hi) if inside < want else (lo, half)
    cx, cy = float(centre[0]), float(centre[1])
    return cx - hi, cy - hi, cx + hi, cy + hi


def scale(sizes: list[int], data: Path, backend: bool = False, shots: Path | None = None) -> list[dict]:
    """The Embeddings page's WebGL map (ui/scatter.py, in the harness bench/explorer_app.py) at each size:
    column bytes, first draw, hover-to-thumbnail, click-to-neighbours, colour change, a 10k-point box
    selection, reruns caused by hover / pan / zoom, and the page server's peak RSS; with ``backend``, the
    graph, projection and scores times of bench/explorer_backend.py on clustered 512-d embeddings."""
    from sklearn.neighbors import NearestNeighbors

    from simclr_core.explorer.thumbnails import ThumbnailStore

    rows: list[dict] = []
    for n in sizes:
        row: dict = {"points": n}
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            shutil.copy(REPO / "bench" / "explorer_app.py", home / "explorer_app.py")
            xy, label = blobs(n)
            # each point's 10 nearest on the map: what a click reads (the page reads the worker's k-NN graph)
            dist, graph = NearestNeighbors(n_neighbors=11).fit(xy).kneighbors(xy)
            np.savez(home / f"points-{n}.npz", graph=graph[:, 1:].astype(np.int32), sims=np.exp(-dist[:, 1:]))
            t0 = time.perf_counter()
            atlas = ThumbnailStore(home / "static" / "thumbs").write(cifar_images(n, data)).name
            row["thumbs_s"] = round(time.perf_counter() - t0, 1)
            row["thumbs_mb"] = round(sum(f.stat().st_size for f in (home / "static/thumbs").rglob("*")) / 2**20, 1)
            proc, url = start_streamlit(home / "explorer_app.py", home)
            try:
                row.update(_drive(url, n, xy, atlas, home / "static" / "maps", shots))
                row["peak_rss_mb"] = round(_rss_peak_mb(proc.pid))
            finally:
                proc.terminate()
                proc.wait(30)
        if backend:
            from explorer_backend import backend_times  # type: ignore[import-not-found]

            emb = np.random.default_rng(1).normal(size=(10, 512)).astype(np.float32)[label]
            emb += 0.35 * np.random.default_rng(2).normal(size=emb.shape).astype(np.float32)
            row["backend"] = backend_times(emb, label)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _drive(url: str, n: int, xy: np.ndarray, atlas: str, maps: Path, shots: Path | None) -> dict:
    """Open the harness in headless Chromium and time what a user does on the map."""
    from playwright.sync_api import sync_playwright

    out: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(300_000)
        fetched: list[str] = []  # column files the browser fetched (their bytes: the files' sizes)
        page.on("response", lambda r: fetched.append(r.url.rsplit("/", 1)[1]) if "/static/maps/" in r.url else None)

        def size(names: list[str]) -> int:
            return sum((maps / name).stat().st_size for name in set(names))

        sent: list[float] = []
        page.on("websocket", lambda ws: ws.on("framesent", lambda f: sent.append(time.perf_counter())))
        page.goto(f"{url}/?n=1000")  # the server imports its modules once, as a running app has
        page.locator(".map[data-drawn]").wait_for()
        fetched.clear()
        t0 = time.perf_counter()
        page.goto(f"{url}/?n={n}&atlas={atlas}")
        page.locator(".map[data-drawn]").wait_for()
        out["first_draw_s"] = round(time.perf_counter() - t0, 2)
        out["payload_bytes"] = size(fetched)
        page.wait_for_timeout(1000)
        box = page.locator(".map").first
        bb = box.bounding_box()

        def on_screen(i: int) -> tuple[float, float]:
            v = json.loads(box.get_attribute("data-view"))
            return (
                bb["x"] + v["w"] / 2 + (float(xy[i, 0]) - v["cx"]) * v["k"],
                bb["y"] + v["h"] / 2 - (float(xy[i, 1]) - v["cy"]) * v["k"],
            )

        # hover: five points in different parts of the split (different atlas files), from an empty corner
        before = len(sent)
        hover = []
        for i in np.linspace(0, n - 1, 6).astype(int)[1:]:
            page.mouse.move(bb["x"] + 3, bb["y"] + bb["height"] - 3)
            page.wait_for_timeout(150)
            page.mouse.move(*on_screen(int(i)))
            page.locator(".map .tip[data-ready]").wait_for(timeout=30_000)
            hover.append(float(page.locator(".map .tip").first.get_attribute("data-ready-ms")))
        out["hover_ms"] = round(float(np.median(hover)), 1)
        out["hover_ms_all"] = hover
        # pan and zoom: drags and wheel turns, all in the browser
        cx, cy = bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + 80, cy + 40, steps=8)
        page.mouse.up()
        page.mouse.wheel(0, -300)
        page.wait_for_timeout(500)
        page.mouse.wheel(0, 300)
        page.wait_for_timeout(500)
        out["reruns_on_hover"] = len(sent) - before
        if shots:
            page.screenshot(path=str(shots / f"map-{n}-hover.png"))
        page.locator(".map .tools button[data-act=fit]").click()
        page.wait_for_timeout(300)
        # click: a point, until its 10 neighbours are listed beside the map and ringed on it (read from the
        # graph's columns in the browser; Python learns of the click in a rerun meanwhile)
        page.mouse.move(*on_screen(0))
        page.locator(".map .tip[data-ready]").wait_for(timeout=30_000)
        t0 = time.perf_counter()
        page.mouse.down()
        page.mouse.up()
        page.locator(".side[data-listed-ms]").wait_for()
        page.locator(".map[data-marked='10']").wait_for()
        out["click_ms"] = round(1000 * (time.perf_counter() - t0))
        side = page.locator(".side[data-ready='0'][data-painted-ms]")
        side.wait_for()
        out["click_listed_in_page_ms"] = float(side.get_attribute("data-listed-ms"))
        out["click_painted_in_page_ms"] = float(side.get_attribute("data-painted-ms"))
        out["click_pictures_in_page_ms"] = float(side.get_attribute("data-ready-ms"))
        # colour change: a new colour column, the positions stay
        drawn_before = box.get_attribute("data-drawn")
        fetched.clear()
        t0 = time.perf_counter()
        page.get_by_text("shifted").click()
        while box.get_attribute("data-drawn") == drawn_before:  # the map lives in a shadow root: poll it here
            page.wait_for_timeout(10)
        out["colour_ms"] = round(1000 * (time.perf_counter() - t0))
        out["colour_bytes"] = size(fetched)
        # a box around ~10,000 points
        picked = drag_box(page, xy, "selected: {n}")
        out["lasso_ms"] = picked["box_to_python_ms"]
        out["lasso_points"] = picked["box_points"]
        out["select_in_browser_ms"] = picked["box_in_browser_ms"]
        if shots:
            page.screenshot(path=str(shots / f"map-{n}-box.png"))
        browser.close()
    return out


# ---------------------------------------------------------------- deckgl: pydeck's bundle against ui/scatter.js

DECK_PAGE = """<html><body style="margin:0"><div id="c" style="position:relative;width:1200px;height:700px"></div>
<script src="deck.js"></script><script>
(async () => {
  const t0 = performance.now();
  const [xy, rgba] = await Promise.all(["xy.f32", "rgba.u8"].map((u) => fetch(u).then((r) => r.arrayBuffer())));
  const p = new Float32Array(xy), c = new Uint8Array(rgba), n = p.length / 2;
  let done = false;
  const d = new deck.Deck({
    parent: document.getElementById("c"), width: 1200, height: 700, views: new deck.OrthographicView(),
    initialViewState: { target: [0, 0, 0], zoom: 4 }, controller: true,
    layers: [new deck.ScatterplotLayer({ id: "p", data: { length: n, attributes: {
      getPosition: { value: p, size: 2 }, getFillColor: { value: c, size: 4, normalized: true } } },
      radiusUnits: "pixels", getRadius: 1, pickable: true })],
    onAfterRender: () => {
      if (done) return;
      done = true;
      const gl = d.getCanvas().getContext("webgl2");
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));  // the draw has finished
      window.result = { draw_ms: performance.now() - t0 };
      const picks = [];
      for (let i = 0; i < 5; i++) {
        const s = performance.now();
        d.pickObject({ x: 560 + 10 * i, y: 350, radius: 4 });
        picks.push(performance.now() - s);
      }
      window.result.pick_ms = picks;
    },
  });
})();
</script></body></html>"""

OWN_PAGE = """<html><body style="margin:0"><div id="c" style="position:relative;width:1200px;height:700px"></div>
<script type="module">
import render from "./scatter.js";
const t0 = performance.now(), root = document.getElementById("c");
render({ data: { xy: "xy.f32", rgba: "rgba.u8", rows: null, columns: {}, paths: null, thumbs: null, focus: null,
  marked: [], point_px: 2, view_key: "v", transition_ms: 0, note: "" }, parentElement: root,
  setTriggerValue() {}, setStateValue() {} });
const wait = () => root.querySelector(".map[data-drawn]") ? done() : requestAnimationFrame(wait);
const done = () => {
  window.result = { draw_ms: performance.now() - t0 };
  const picks = [];
  for (let i = 0; i < 5; i++) {
    const s = performance.now();
    root.__scatter.pick(560 + 10 * i, 350);
    picks.push(performance.now() - s);
  }
  window.result.pick_ms = picks;
};
wait();
</script></body></html>"""


def deck_vs_own(sizes: list[int]) -> list[dict]:
    """pydeck's deck.gl bundle (a ScatterplotLayer fed the same binary columns) against the app's own map:
    seconds to load the script, milliseconds from data fetch to a finished first draw, and per hover pick."""
    import functools
    import http.server
    import threading

    import pydeck
    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        shutil.copy(Path(pydeck.__file__).parent / "nbextension" / "static" / "index.js", home / "deck.js")
        shutil.copy(REPO / "ui" / "scatter.js", home / "scatter.js")
        (home / "deck.html").write_text(DECK_PAGE)
        (home / "own.html").write_text(OWN_PAGE)

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # no line per request in the bench's output
                pass

        handler = functools.partial(Quiet, directory=str(home))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
                for n in sizes:
                    xy, label = blobs(n)
                    palette = np.random.default_rng(0).integers(0, 256, (10, 4)).astype(np.uint8)
                    palette[:, 3] = 220
                    (home / "xy.f32").write_bytes(xy.astype("<f4").tobytes())
                    (home / "rgba.u8").write_bytes(palette[label].tobytes())
                    for name in ("deck", "own"):
                        page = browser.new_page(viewport={"width": 1200, "height": 700})
                        t0 = time.perf_counter()
                        page.goto(f"{base}/{name}.html")
                        page.wait_for_function("() => window.result && window.result.pick_ms", timeout=600_000)
                        r = page.evaluate("() => window.result")
                        script_s = page.evaluate(
                            "() => performance.getEntriesByType('resource').filter(e => e.name.endsWith"
                            "('.js')).map(e => e.duration).reduce((a, b) => a + b, 0) / 1000"
                        )
                        row = {
                            "renderer": "pydeck bundle" if name == "deck" else "ui/scatter.js",
                            "points": n,
                            "script_fetch_s": round(script_s, 2),
                            "page_to_drawn_s": round(time.perf_counter() - t0, 2),
                            "draw_ms": round(r["draw_ms"]),
                            "pick_ms": round(float(np.median(r["pick_ms"])), 2),
                        }
                        print(json.dumps(row), flush=True)
                        rows.append(row)
                        page.close()
                browser.close()
        finally:
            httpd.shutdown()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--parts",
        nargs="+",
        default=None,
        choices=["page", "search", "umap", "deckgl"],
        help="default: page, search and umap; without --parts, --points measures the map in the harness",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz",
        help="CIFAR-10 JPEG folder or .tar.gz, for real thumbnails",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000, 1_000_000])
    p.add_argument(
        "--points",
        type=int,
        nargs="+",
        help="the WebGL map at these sizes (e.g. 50000 200000 1000000; the last line is a JSON list); with "
        "--parts page or deckgl, their sizes",
    )
    p.add_argument("--home", type=Path, default=None, help="page part: keep its runs here, for a faster second call")
    p.add_argument("--backend", action="store_true", help="with --points: also graph, projection and scores")
    p.add_argument("--shots", type=Path, default=None, help="with --points: save screenshots in this folder")
    p.add_argument(
        "--run",
        type=Path,
        default=None,
        help="a trained run folder: also search its CIFAR-10 train embeddings (search part)",
    )
    args = p.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    if args.points and not args.parts:
        print(json.dumps(scale(args.points, args.data, args.backend, args.shots)))
        return
    results: dict = {}
    for part in args.parts or ["page", "search", "umap"]:
        print(f"{part}:", flush=True)
        if part == "page":
            results[part] = page(args.data, args.points or [10_000, 50_000], args.home)
        elif part == "deckgl":
            results[part] = deck_vs_own(args.points or [50_000, 200_000, 1_000_000])
        elif part == "search":
            results[part] = search(args.sizes, run=args.run)
        else:
            results[part] = umap_startup()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
