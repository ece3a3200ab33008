"""A run's evaluation: kNN and a linear probe on its frozen backbone (``simclr-evaluate``).

kNN (cosine, k=200, T=0.1) and a linear probe on backbone features h, for a run's checkpoint
and, with ``--baseline``, for a randomly initialised backbone of the same architecture: the
difference is what self-supervised training learned.

:func:`evaluate_job` is the app's "evaluate" background job (:mod:`simclr_core.explorer.jobs`): it evaluates
several runs one by one in the worker process, saving each result as soon as it is known.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from simclr_core.data import datasets as data
from simclr_core.embeddings import checkpoint_key, checkpoint_meta, embed_split, extract, load_encoder
from simclr_core.errors import UserError
from simclr_core.evaluation.classifiers import confusion_matrix, knn_classify, linear_probe, topk_accuracy
from simclr_core.evaluation.compare import result_label
from simclr_core.explorer.specs import EvaluateSpec
from simclr_core.hardware import resolve_device
from simclr_core.runs.rundir import RunDir


def _features(
    run: RunDir, split: str, *, checkpoint: str, random_init: bool, device: str, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(features h, labels, class names) of a split; a whole split goes through the per-checkpoint cache."""
    if limit is None:
        e = embed_split(run, split, "h", checkpoint=checkpoint, device=device, random_init=random_init)
        return torch.from_numpy(e.embeddings), torch.from_numpy(e.labels), e.classes
    cfg = run.config()
    return _extract(
        run,
        data.split_of(cfg.data, split, subset=limit, seed=cfg.run.seed),
        checkpoint=checkpoint,
        random_init=random_init,
        device=device,
    )


def _extract(
    run: RunDir, images: data.ImageSet, *, checkpoint: str, random_init: bool, device: str
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(features h, labels, class names) of some images, uncached."""
    dev = resolve_device(device)
    encoder, _ = load_encoder(run, checkpoint, dev, random_init=random_init)
    return extract(encoder, images.images, size=run.config().views.crop_size, device=dev), images.labels, images.classes


def evaluate_run(
    run: RunDir,
    *,
    checkpoint: str = "last",
    random_init: bool = False,
    bank_split: str | None = None,
    query_split: str | None = None,
    k: int = 200,
    probe: bool = True,
    probe_epochs: int = 100,
    max_bank: int | None = None,
    device: str = "auto",
    stage: Callable[[str], None] | None = None,
    probe_progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """kNN and linear-probe accuracy (percent) of one checkpoint, or of a random-init baseline.

    Args:
        bank_split / query_split: default to the dataset's labelled train / test splits; with a
            single labelled split a fixed fifth of it is held out as the query set.
        max_bank: embed only a fixed random subset of the bank split (quick CPU evaluations).
        stage: told what is being done ("embedding train", "kNN", "linear probe") as each step starts.
        probe_progress: told (epochs done, epochs, train loss) after each of the linear probe's epochs.
    """
    stage = stage or (lambda what: None)
    cfg = run.config()
    _, default_bank, default_query = data.default_splits(cfg.data.dataset, cfg.data.data_path)
    bank_split = bank_split or default_bank
    if bank_split is None:
        raise UserError(
            f"{cfg.data.dataset} at {cfg.data.data_path} has no labels: kNN and the linear probe need class sub-folders"
        )
    query_split = query_split or default_query
    kw: dict[str, Any] = dict(checkpoint=checkpoint, random_init=random_init, device=device)
    stage(f"embedding {bank_split}")
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
        stage(f"embedding {query_split}")
        query_x, query_y, _ = _features(run, query_split, limit=None, **kw)
    meta = checkpoint_meta(run, checkpoint, random_init)
    result: dict[str, Any] = {
        "run": run.name,
        "classes": classes,
        "checkpoint": "random-init" if random_init else (meta["path"] or checkpoint),
        "epoch": meta["epoch"],
        "checkpoint_label": meta["label"],  # "epoch 3, step 12 of 50" for a checkpoint a stop saved mid-epoch
        "bank_split": bank_split,
        "query_split": query_split,
        "n_bank": len(bank_x),
        "n_query": len(query_x),
        "k": k,
        "time": time.time(),
    }
    stage("kNN")
    scores, labels = knn_classify(bank_x, bank_y, query_x, query_y, k=k)
    acc = topk_accuracy(scores, labels, (1, 5))
    result.update(
        knn_top1=100.0 * acc[1],
        knn_top5=100.0 * acc[5],
        knn_confusion=confusion_matrix(scores.argmax(1), labels, scores.shape[1]).tolist(),
    )
    if probe:
        stage(f"linear probe ({probe_epochs} epochs)")
        result.update(
            linear_probe(
                bank_x, bank_y, query_x, query_y, epochs=probe_epochs, seed=cfg.run.seed, progress=probe_progress
            )
        )
    return result


def save_result(run: RunDir, result: dict[str, Any]) -> None:
    """Append a result to the run's ``eval.json`` (a list, newest last)."""
    run.add_eval_result(result)


def check_settings(k: int, probe_epochs: int, max_bank: int | None) -> None:
    """A UserError unless k and the probe's epochs are positive and a bank subset holds two images or more."""
    if k < 1 or probe_epochs < 1 or (max_bank is not None and max_bank < 2):
        raise UserError("--k and --probe-epochs must be positive, and --max-bank at least 2")


def job_spec(runs: list[RunDir], *, baseline: bool, k: int, probe_epochs: int, max_bank: int | None) -> EvaluateSpec:
    """The spec of an "evaluate" job (:func:`evaluate_job`). Each run's checkpoint key is part of it, so
    the same request for the same checkpoints is one job, and a new checkpoint makes a new one."""
    return EvaluateSpec(
        runs=[{"run": str(r.path), "ckpt": checkpoint_key(r.last_ckpt)} for r in runs],
        baseline=baseline,
        k=k,
        probe_epochs=probe_epochs,
        max_bank=max_bank,
    )


def evaluate_job(spec: dict[str, Any], progress: Callable[[str, int, int], None]) -> dict[str, Any]:
    """Evaluate every run of a :func:`job_spec` (and its random-init baseline if asked), saving each
    result to its run's ``eval.json`` as soon as it is known.

    A run that cannot be evaluated (a UserError: no checkpoint yet, no labels, ...) does not stop
    the others: its message is kept in the result.

    Progress: ``done``/``total`` count the models, except during a linear probe, where they count its
    epochs and the stage reads e.g. "run-a: linear probe epoch 37/100, train loss 0.842".

    Returns:
        ``{"evaluated": [{"model", "run", "knn_top1", "probe_top1"}, ...], "errors": [{"model", "run",
        "message"}, ...]}``, one entry per model, in the order evaluated.
    """
    s = EvaluateSpec.from_dict(spec)
    k, probe_epochs, max_bank = int(s.k), int(s.probe_epochs), s.max_bank
    check_settings(k, probe_epochs, max_bank)
    inits = (False, True) if s.baseline else (False,)
    todo = [(RunDir(r["run"]), rand) for r in s.runs for rand in inits]
    evaluated: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, (run, rand) in enumerate(todo):
        model = result_label({"run": run.name, "checkpoint": "random-init" if rand else "last"})

        def step(what: str, model: str = model, i: int = i) -> None:
            progress(f"{model}: {what}", i, len(todo))

        def epoch(done: int, total: int, loss: float, model: str = model) -> None:
            progress(f"{model}: linear probe epoch {done}/{total}, train loss {loss:.3f}", done, total)

        step("starting")
        try:
            result = evaluate_run(
                run,
                random_init=rand,
                k=k,
                probe_epochs=probe_epochs,
                max_bank=max_bank,
                stage=step,
                probe_progress=epoch,
            )
        except UserError as e:  # one run without a checkpoint must not stop the others
            errors.append({"model": model, "run": run.name, "message": str(e)})
            continue
        try:
            save_result(run, result)
        except OSError as e:  # a read-only or full run folder: give the figure and the fix, go on
            errors.append(
                {
                    "model": model,
                    "run": run.name,
                    "message": (
                        f"kNN top-1 {result['knn_top1']:.1f}%, but it could not be saved to {run.eval_path} "
                        f"({e.strerror or e}): free some space or make the folder writable, then evaluate again"
                    ),
                }
            )
            continue
        evaluated.append(
            {"model": model, "run": run.name, "knn_top1": result["knn_top1"], "probe_top1": result.get("probe_top1")}
        )
    progress("finished", len(todo), len(todo))
    return {"evaluated": evaluated, "errors": errors}
