"""The explorer's numbers: map renderers in a real browser, nearest-neighbour search, and UMAP start-up.

    python bench/explorer.py                        # every part
    python bench/explorer.py --parts search umap    # some parts

Parts:
- ``renderers``: Plotly WebGL and deck.gl (``st.pydeck_chart``) draw the same 10,000 / 50,000
  points in headless Chromium (Playwright, as the browser test): seconds from opening the page
  until the map has drawn (two equal, non-blank screenshots of it in a row), and from resting the
  pointer on a point until its thumbnail has loaded (deck.gl's HTML tooltip) or, for Plotly, whose
  hover labels take no images, until its text label shows and from a click until st.image shows the
  picture. Apple's embedding-atlas is tried too: its Streamlit component loads DuckDB-WASM from a
  CDN, which the bench answers with the copy the package ships, and its map needs WebGPU with
  ``shader-f16``; where the browser has none, this part reports what the component says.
- ``page``: the same two timings on the real Embeddings page (``streamlit run app.py``) for a run
  whose 10,000 / 50,000-image split is already embedded and projected.
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
import io
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


def drawn(page, selector: str, timeout: float = 300) -> float:
    """Seconds until the element's screenshot is non-blank and the same twice in a row (the map has drawn)."""
    from PIL import Image

    t0, prev = time.perf_counter(), None
    while time.perf_counter() - t0 < timeout:
        el = page.locator(selector).first
        if el.count():
            try:
                shot = el.screenshot(timeout=5000)
            except Exception:  # noqa: BLE001 - detached while Streamlit re-renders: try again
                shot = None
            if shot is not None:
                px = np.asarray(Image.open(io.BytesIO(shot)).convert("L"))
                inked = int((px < 230).sum())
                if inked > 500 and shot == prev:
                    return time.perf_counter() - t0
                prev = shot
        page.wait_for_timeout(100)
    raise TimeoutError(f"{selector} did not draw in {timeout} s")


def hover_time(
    page, canvas: str, done_js: str, shown_js: str | None = None, repeats: int = 3, timeout_ms: int = 60_000
) -> list[float]:
    """Seconds from moving the pointer onto a point of ``canvas`` until ``done_js`` holds, for ``repeats`` points.

    Positions spiral out from the centre; before each move the pointer rests on an empty corner until
    nothing shows, so each timing starts from no tooltip. A position showing nothing within 2.5 s
    (``shown_js``: a tooltip of any kind) is skipped, as is one landing on a point already timed.
    """
    shown_js = shown_js or done_js
    box = page.locator(canvas).first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    spiral = [(r * dx, r * dy) for r in range(0, 200, 9) for dx, dy in ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1))]
    times: list[float] = []
    seen: set[str] = set()
    for dx, dy in spiral:
        page.mouse.move(box["x"] + 2, box["y"] + 2)
        page.wait_for_function(f"() => !({shown_js})()", timeout=timeout_ms, polling="raf")
        page.wait_for_timeout(200)
        t0 = time.perf_counter()
        page.mouse.move(cx + dx, cy + dy)
        try:
            page.wait_for_function(shown_js, timeout=2500, polling="raf")
        except Exception:  # noqa: BLE001, S112 - no point under the pointer here
            continue
        page.wait_for_function(done_js, timeout=timeout_ms, polling="raf")
        elapsed = time.perf_counter() - t0
        text = page.evaluate("() => (document.querySelector('.deck-tooltip, .hovertext') || {}).textContent || ''")
        if text in seen:
            continue
        seen.add(text)
        times.append(round(elapsed, 3))
        if len(times) == repeats:
            break
    return times


THUMB_LOADED = (
    "() => { const t = document.querySelector('.deck-tooltip');"
    " const i = t && t.style.display !== 'none' && t.querySelector('img');"
    " return !!i && i.complete && i.naturalWidth > 0; }"
)
TOOLTIP_SHOWN = "() => { const t = document.querySelector('.deck-tooltip'); return !!t && t.style.display !== 'none'; }"


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


def renderers(data: Path, which: tuple[str, ...] = ("pydeck", "plotly", "atlas")) -> dict:
    from playwright.sync_api import sync_playwright

    from simclr_core.explorer.thumbnails import write_thumbnails

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        shutil.copy(REPO / "bench" / "explorer_app.py", home / "explorer_app.py")
        thumbs = write_thumbnails(cifar_images(50_000, data), home / "static" / "thumbs").name
        proc, url = start_streamlit(home / "explorer_app.py", home)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
                for renderer in which:
                    for n in (10_000, 50_000):
                        page = browser.new_page(viewport={"width": 1400, "height": 1000})
                        page.set_default_timeout(120_000)
                        if renderer == "atlas":
                            serve_duckdb_from_the_package(page)
                        t0 = time.perf_counter()
                        page.goto(f"{url}/?renderer={renderer}&n={n}&thumbs={thumbs}")
                        row: dict = {}
                        sel = {
                            "pydeck": '[data-testid="stDeckGlJsonChart"]',
                            "plotly": '[data-testid="stPlotlyChart"]',
                            "atlas": "iframe",
                        }[renderer]
                        try:
                            page.locator(sel).first.wait_for(timeout=120_000)
                            row["drawn_s"] = (time.perf_counter() - t0) + drawn(
                                page, sel, timeout=60 if renderer == "atlas" else 300
                            )
                            if renderer == "atlas" and (says := atlas_message(page)):
                                row["map_drawn"] = False  # the frame drew its table and panels, not the map
                                row["atlas_says"] = says
                            if renderer == "pydeck":
                                row["hover_to_thumbnail_s"] = hover_time(
                                    page, sel + " canvas", THUMB_LOADED, TOOLTIP_SHOWN
                                )
                            elif renderer == "plotly":
                                row["hover_to_label_s"] = hover_time(
                                    page, sel + " .nsewdrag", "() => !!document.querySelector('.hovertext')"
                                )
                                t1 = time.perf_counter()
                                box = page.locator(sel + " .nsewdrag").first.bounding_box()
                                page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                                page.locator('[data-testid="stImage"] img').first.wait_for(timeout=60_000)
                                page.wait_for_function(
                                    "() => { const i = document.querySelector("
                                    "'[data-testid=\"stImage\"] img'); return i.complete && "
                                    "i.naturalWidth > 0; }"
                                )
                                row["click_to_image_s"] = time.perf_counter() - t1
                        except Exception as e:  # noqa: BLE001 - report and go on
                            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                            if renderer == "atlas":
                                row["atlas_says"] = atlas_message(page)
                        print(f"  {renderer:<7} {n:>6} points: {json.dumps(row)}", flush=True)
                        out[f"{renderer}-{n}"] = row
                        page.close()
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return out


def serve_duckdb_from_the_package(page) -> None:
    """embedding-atlas's Streamlit component fetches DuckDB-WASM from cdn.jsdelivr.net, which this machine
    cannot reach; answer those requests with the copies the package ships for its own app, as if online."""
    try:
        import embedding_atlas
    except ImportError:
        return
    assets = Path(embedding_atlas.__file__).parent / "static" / "assets"
    local = {}
    for stem in ("duckdb-browser-eh.worker", "duckdb-browser-mvp.worker", "duckdb-eh", "duckdb-mvp"):
        ext = ".js" if stem.endswith("worker") else ".wasm"
        found = sorted(assets.glob(f"{stem}-*{ext}"))
        if found:
            local[stem + ext] = found[0]

    def serve(route) -> None:
        name = route.request.url.rsplit("/", 1)[-1]
        if name not in local:
            route.abort()
            return
        route.fulfill(
            body=local[name].read_bytes(),
            headers={"access-control-allow-origin": "*"},
            content_type="application/wasm" if name.endswith(".wasm") else "text/javascript",
        )

    page.route("https://cdn.jsdelivr.net/**", serve)


def atlas_message(page) -> str:
    """What embedding-atlas's frame says when it has not drawn its map (e.g. that it needs WebGPU)."""
    import re

    for frame in page.frames:
        try:  # get_by_text also looks inside shadow roots, where the component writes
            hit = frame.get_by_text(re.compile("WebGPU")).first
            if hit.count():
                return hit.inner_text(timeout=2000).strip()[:200]
        except Exception:  # noqa: BLE001, S112 - a frame that went away
            continue
    return ""


def page(data: Path) -> dict:
    """The real Embeddings page, for runs whose 10,000 / 50,000-image CIFAR-10 split is embedded already.

    The embeddings are synthetic (64-d, clustered by the real labels) and written where training's
    would be, so the page's own work is measured, not the encoder's; the projection is PCA.
    """
    from playwright.sync_api import sync_playwright

    from simclr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from simclr_core.data.datasets import load_split
    from simclr_core.embeddings import Embeddings, embedding_cache
    from simclr_core.runs.rundir import RunDir
    from train_cifar import image_folder  # type: ignore[import-not-found]

    if not data.exists():
        print("  (page part skipped: it needs the CIFAR-10 JPEGs, --data)")
        return {}
    folder = image_folder(data.resolve(), REPO / ".bench")
    out: dict = {}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        runs = home / "runs"
        for split in ("test", "train"):
            cfg = TrainConfig(
                data=DataConfig(dataset="folder", data_path=str(folder), data_dir=str(REPO / ".bench" / "data")),
                model=ModelConfig(backbone="resnet_mini"),
                run=RunConfig(name=split, runs_dir=str(runs)),
            )
            run = RunDir(runs / split)
            run.path.mkdir(parents=True)
            cfg.save(run.config_path)
            (run.path / "last.pt").write_bytes(b"placeholder: the embeddings below are already in the cache")
            images = load_split("folder", split, path=str(folder), data_dir=cfg.data.data_dir)
            labels = images.labels.numpy()
            centres = rng.normal(size=(10, 64)) * 1.5
            x = (centres[labels] + rng.normal(size=(len(labels), 64))).astype(np.float32)
            Embeddings(x, labels, np.arange(len(labels)), list(images.classes), "").save_npz(
                embedding_cache(run, split, "h")
            )
        proc, url = start_streamlit(REPO / "app.py", home, env={"SIMCLR_RUNS_DIR": str(runs)})
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
                for split in ("test", "train"):
                    pg = browser.new_page(viewport={"width": 1500, "height": 1100})
                    pg.set_default_timeout(900_000)
                    link = f"{url}/embeddings?run={split}&view=map&split={split}&projection=pca&points=0"
                    t0 = time.perf_counter()
                    pg.goto(link)
                    sel = '[data-testid="stDeckGlJsonChart"]'
                    pg.locator(sel).first.wait_for()  # the worker builds the graph and thumbnails once
                    prepared = time.perf_counter() - t0
                    pg.goto(link)  # now as a user sees it every later time
                    t0 = time.perf_counter()
                    pg.locator(sel).first.wait_for()
                    row = {
                        "first_visit_s": round(prepared, 1),
                        "drawn_s": round(time.perf_counter() - t0 + drawn(pg, sel), 2),
                    }
                    row["hover_to_thumbnail_s"] = hover_time(pg, sel + " canvas", THUMB_LOADED, TOOLTIP_SHOWN)
                    print(f"  Embeddings page, {split} split: {json.dumps(row)}", flush=True)
                    out[f"page-{split}"] = row
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--parts",
        nargs="+",
        default=["renderers", "page", "search", "umap"],
        choices=["renderers", "page", "search", "umap"],
    )
    p.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz",
        help="CIFAR-10 JPEG folder or .tar.gz, for real thumbnails",
    )
    p.add_argument(
        "--renderers",
        nargs="+",
        default=["pydeck", "plotly", "atlas"],
        choices=["pydeck", "plotly", "atlas"],
        help="renderers part: which to measure",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000, 1_000_000])
    p.add_argument(
        "--run",
        type=Path,
        default=None,
        help="a trained run folder: also search its CIFAR-10 train embeddings (search part)",
    )
    args = p.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    results: dict = {}
    for part in args.parts:
        print(f"{part}:", flush=True)
        if part == "renderers":
            results[part] = renderers(args.data, tuple(args.renderers))
        elif part == "page":
            results[part] = page(args.data)
        elif part == "search":
            results[part] = search(args.sizes, run=args.run)
        else:
            results[part] = umap_startup()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
