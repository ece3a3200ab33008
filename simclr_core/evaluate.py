"""Evaluate frozen representations: ``python -m simclr_core.evaluate --run NAME``.

kNN (cosine, k=200, T=0.1) and a linear probe on backbone features h, for a run's checkpoint
and, with ``--baseline``, for a randomly initialised backbone of the same architecture: the
difference is what self-supervised training learned.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from simclr_core import data
from simclr_core.cli import Parser, run_cli
from simclr_core.embeddings import checkpoint_meta, embed_split, extract, load_encoder
from simclr_core.errors import UserError
from simclr_core.evaluation import confusion_matrix, knn_classify, linear_probe, topk_accuracy
from simclr_core.hardware import resolve_device
from simclr_core.runs import RunDir, open_run


def _features(run: RunDir, split: str, *, checkpoint: str, random_init: bool, device: str,
              limit: int | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(features h, labels, class names) of a split; a whole split goes through the per-checkpoint cache."""
    if limit is None:
        e = embed_split(run, split, "h", checkpoint=checkpoint, device=device, random_init=random_init)
        return torch.from_numpy(e.embeddings), torch.from_numpy(e.labels), e.classes
    cfg = run.config()
    return _extract(run, data.split_of(cfg.data, split, subset=limit, seed=cfg.run.seed),
                    checkpoint=checkpoint, random_init=random_init, device=device)


def _extract(run: RunDir, images: data.ImageSet, *, checkpoint: str, random_init: bool,
             device: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(features h, labels, class names) of some images, uncached."""
    dev = resolve_device(device)
    encoder, _ = load_encoder(run, checkpoint, dev, random_init=random_init)
    return extract(encoder, images.images, size=run.config().views.crop_size, device=dev), images.labels, images.classes


def evaluate_run(run: RunDir, *, checkpoint: str = "last", random_init: bool = False, bank_split: str | None = None,
                 query_split: str | None = None, k: int = 200, probe: bool = True, probe_epochs: int = 100,
                 max_bank: int | None = None, device: str = "auto") -> dict[str, Any]:
    """kNN and linear-probe accuracy (percent) of one checkpoint, or of a random-init baseline.

    Args:
        bank_split / query_split: default to the dataset's labelled train / test splits; with a
            single labelled split a fixed fifth of it is held out as the query set.
        max_bank: embed only a fixed random subset of the bank split (quick CPU evaluations).
    """
    cfg = run.config()
    _, default_bank, default_query = data.default_splits(cfg.data.dataset, cfg.data.data_path)
    bank_split = bank_split or default_bank
    if bank_split is None:
        raise UserError(f"{cfg.data.dataset} at {cfg.data.data_path} has no labels: kNN and the linear probe "
                        "need class sub-folders")
    query_split = query_split or default_query
    kw: dict[str, Any] = dict(checkpoint=checkpoint, random_init=random_init, device=device)
    if query_split is None:  # one labelled split: its held-out fifth (data.held_out) are the queries
        if max_bank is None:  # the whole split's cached rows, cut as data.held_out cuts the images
            x, y, classes = _features(run, bank_split, limit=None, **kw)
            rest, fifth = data.holdout(len(x))
            bank_x, bank_y, query_x, query_y = x[rest], y[rest], x[fifth], y[fifth]
        else:
            rest_images, fifth_images = data.held_out(cfg.data, bank_split)
            bank_x, bank_y, classes = _extract(run, rest_images.subset(max_bank, cfg.run.seed), **kw)
            query_x, query_y, _ = _extract(run, fifth_images, **kw)
        # a run that pre-trained on the fifth too has seen its queries: say so wherever the figures go
        query_split = f"{bank_split} (held-out fifth{', transductive' if cfg.data.transductive else ''})"
    else:
        bank_x, bank_y, classes = _features(run, bank_split, limit=max_bank, **kw)
        query_x, query_y, _ = _features(run, query_split, limit=None, **kw)
    meta = checkpoint_meta(run, checkpoint, random_init)
    result: dict[str, Any] = {
        "run": run.name, "classes": classes,
        "checkpoint": "random-init" if random_init else (meta["path"] or checkpoint),
        "epoch": meta["epoch"], "bank_split": bank_split, "query_split": query_split,
        "n_bank": len(bank_x), "n_query": len(query_x), "k": k, "time": time.time(),
    }
    scores, labels = knn_classify(bank_x, bank_y, query_x, query_y, k=k)
    acc = topk_accuracy(scores, labels, (1, 5))
    result.update(knn_top1=100.0 * acc[1], knn_top5=100.0 * acc[5],
                  knn_confusion=confusion_matrix(scores.argmax(1), labels, scores.shape[1]).tolist())
    if probe:
        result.update(linear_probe(bank_x, bank_y, query_x, query_y, epochs=probe_epochs, seed=cfg.run.seed))
    return result


def save_result(run: RunDir, result: dict[str, Any]) -> None:
    """Append a result to the run's ``eval.json`` (a list, newest last)."""
    run.add_eval_result(result)


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of results."""
    cols = ["run", "checkpoint", "epoch", "knn_top1", "knn_top5", "probe_top1", "probe_top5"]
    rows = [[str(r.get(c, "")) if not isinstance(r.get(c), float) else f"{r[c]:.2f}" for c in cols] for r in results]
    rows = [[("random-init" if c == "checkpoint" and v == "random-init" else v.split("/")[-1]) for c, v in
             zip(cols, row, strict=True)] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols)] + [fmt.format(*r) for r in rows])


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m simclr_core.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run name (a folder under --runs-dir)")
    p.add_argument("--runs-dir", default="checkpoints", help="folder of runs [default: checkpoints]")
    p.add_argument("--checkpoint", default="last", help="'last' or a checkpoint path [default: last]")
    p.add_argument("--random-init", action="store_true", help="evaluate a randomly initialised backbone only")
    p.add_argument("--baseline", action="store_true", help="also evaluate the random-init baseline")
    p.add_argument("--bank-split", help="labelled split for the kNN bank and probe training [default: train]")
    p.add_argument("--query-split", help="split to classify [default: test, or a held-out fifth]")
    p.add_argument("--k", type=int, default=200, help="kNN neighbours [default: 200]")
    p.add_argument("--no-probe", action="store_true", help="skip the linear probe")
    p.add_argument("--probe-epochs", type=int, default=100, help="linear-probe epochs [default: 100]")
    p.add_argument("--max-bank", type=int, help="use a fixed random subset of the bank split of this size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N [default: auto]")
    return p


def main(argv: list[str] | None = None) -> int:
    def go() -> int:
        args = build_parser().parse_args(argv)
        if args.k < 1 or args.probe_epochs < 1 or (args.max_bank is not None and args.max_bank < 2):
            raise UserError("--k and --probe-epochs must be positive, and --max-bank at least 2")
        run = open_run(args.runs_dir, args.run)
        kw = dict(bank_split=args.bank_split, query_split=args.query_split, k=args.k, probe=not args.no_probe,
                  probe_epochs=args.probe_epochs, max_bank=args.max_bank, device=args.device)
        results = []
        if not args.random_init:
            results.append(evaluate_run(run, checkpoint=args.checkpoint, **kw))
        if args.random_init or args.baseline:
            results.append(evaluate_run(run, random_init=True, **kw))
        print(format_table(results))
        try:
            for r in results:
                save_result(run, r)
        except OSError as e:  # a read-only run folder: the numbers above are still right
            print(f"note: not saved to {run.eval_path} ({e.strerror or e}); they are shown only here",
                  file=sys.stderr)
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
