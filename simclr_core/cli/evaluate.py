"""Evaluate frozen representations: ``simclr-evaluate --run NAME`` (:func:`simclr_core.evaluation.run.evaluate_run`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from tqdm import tqdm

from simclr_core.cli.common import Parser, run_cli
from simclr_core.evaluation.run import check_settings, evaluate_run, save_result
from simclr_core.hardware import resolve_device
from simclr_core.runs.rundir import open_run


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of results."""
    cols = ["run", "checkpoint", "epoch", "knn_top1", "knn_top5", "probe_top1", "probe_top5"]
    rows = [[str(r.get(c, "")) if not isinstance(r.get(c), float) else f"{r[c]:.2f}" for c in cols] for r in results]
    rows = [
        [
            ("random-init" if c == "checkpoint" and v == "random-init" else v.split("/")[-1])
            for c, v in zip(cols, row, strict=True)
        ]
        for row in rows
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols)] + [fmt.format(*r) for r in rows])


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="simclr-evaluate", description=__doc__.splitlines()[0])
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


@contextlib.contextmanager
def _epoch_bar(what: str) -> Iterator[Callable[[int, int, float], None]]:
    """A bar on stderr of the linear probe's epochs and train loss (in a terminal only, as training's),
    for ``evaluate_run``'s ``probe_progress``. Drawn from the first epoch on: the minutes of embedding
    before it are not the probe's, and with ``--no-probe`` there is none."""
    bars: list[tqdm] = []

    def epoch(done: int, total: int, loss: float) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=what, unit="epoch", dynamic_ncols=True, file=sys.stderr, disable=None))
        bars[0].set_postfix_str(f"train loss {loss:.3f}", refresh=False)
        bars[0].update(done - bars[0].n)

    try:
        yield epoch
    finally:
        for bar in bars:
            bar.close()


def main(argv: list[str] | None = None) -> int:
    def go() -> int:
        args = build_parser().parse_args(argv)
        check_settings(args.k, args.probe_epochs, args.max_bank)
        resolve_device(args.device)  # a GPU that is not there is said at once, cached embeddings or not
        run = open_run(args.runs_dir, args.run)
        kw = dict(
            bank_split=args.bank_split,
            query_split=args.query_split,
            k=args.k,
            probe=not args.no_probe,
            probe_epochs=args.probe_epochs,
            max_bank=args.max_bank,
            device=args.device,
        )
        results = []
        if not args.random_init:
            with _epoch_bar(f"{run.name}: linear probe") as bar:
                results.append(evaluate_run(run, checkpoint=args.checkpoint, probe_progress=bar, **kw))
        if args.random_init or args.baseline:
            with _epoch_bar(f"{run.name} (random-init): linear probe") as bar:
                results.append(evaluate_run(run, random_init=True, probe_progress=bar, **kw))
        print(format_table(results))
        try:
            for r in results:
                save_result(run, r)
        except OSError as e:  # a read-only run folder: the numbers above are still right
            print(f"note: not saved to {run.eval_path} ({e.strerror or e}); they are shown only here", file=sys.stderr)
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
