"""Command-line plumbing shared by ``train``, ``evaluate`` and ``embed``: flags from the config dataclasses."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields

from simclr_core.config import TrainConfig, flag, option, read_file, sections, sets_fields
from simclr_core.errors import UserError
from simclr_core.resolve import auto_note

_TYPES = {"str": str, "int": int, "float": float}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other user error of the CLIs."""

    def error(self, message: str):  # noqa: D102 - overrides argparse's usage dump
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_config_args(parser: argparse.ArgumentParser, only: Iterable[str] | None = None) -> None:
    """Add one ``--flag`` per field of the config sections (all, or those named in ``only``).

    Defaults are suppressed so that :func:`config_from_args` knows which flags were given.
    """
    for section, cls in sections().items():
        if only is not None and section not in only:
            continue
        group = parser.add_argument_group(f"{section} ({(cls.__doc__ or section).splitlines()[0].rstrip('.')})")
        for f in fields(cls):
            default = f.default if f.default is not MISSING else None
            auto = auto_note(section, f.name)
            help_ = (
                f.metadata["help"]
                + ("" if default is None else f" [default: {default}]")
                + (f" [{auto}]" if auto else "")
            ).replace("%", "%%")  # argparse formats help with %: "15%" must stay text
            choices = f.metadata.get("choices")
            base = str(f.type).replace(" | None", "")
            name = option(f)
            if base == "bool":
                group.add_argument(
                    flag(name), dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_
                )
            else:
                group.add_argument(
                    flag(name),
                    dest=name,
                    type=_or_auto(_TYPES[base]) if f.metadata.get("auto") else _TYPES[base],
                    default=argparse.SUPPRESS,
                    choices=choices,
                    help=help_,
                    metavar=None if choices else f.name.split("_")[-1].upper(),
                )


def _or_auto(kind: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type taking a ``kind`` value or the word "auto" (kept as is: validate makes it None)."""

    def parse(text: str) -> object:
        if text == "auto":
            return text
        try:
            return kind(text)
        except ValueError:
            noun = {int: "an integer", float: "a number"}.get(kind, "a value")  # type: ignore[call-overload]
            raise argparse.ArgumentTypeError(f"must be {noun} or auto, got {text!r}") from None

    return parse


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """A TrainConfig from ``--config FILE`` (if any) overridden by the flags given.

    Returns:
        (config, the options given as flags: :func:`~simclr_core.config.option` names)
    """
    path = getattr(args, "config", None)
    cfg = TrainConfig()
    if path:
        d = read_file(path)
        if not sets_fields(d):  # a recipe's title and figures alone: the run would train every default, silently
            print(
                f"warning: {path} sets no training setting (only a recipe: block or empty sections), so every "
                "setting is its default; add sections such as data:, model: or optim: (see configs/)",
                file=sys.stderr,
            )
        cfg = TrainConfig.from_dict(d)
    given = set()
    for section, cls in sections().items():
        part = getattr(cfg, section)
        for f in fields(cls):
            if hasattr(args, option(f)):
                setattr(part, f.name, getattr(args, option(f)))
                given.add(option(f))
    cfg.validate()
    return cfg, given


def config_flags(cfg: TrainConfig) -> list[str]:
    """The command-line flags that give ``cfg``: one per field that differs from its default, so that
    ``config_from_args`` of them returns ``cfg`` again (the command that repeats a run)."""
    argv: list[str] = []
    for section, cls in sections().items():
        part = getattr(cfg, section)
        for f in fields(cls):
            value = getattr(part, f.name)
            if f.default is not MISSING and value == f.default:
                continue
            if value is None and f.metadata.get("auto"):
                argv += [flag(option(f)), "auto"]
                continue
            if value is None:  # a field whose default is set has no flag for "unset"
                raise UserError(f"{section}.{f.name} = None has no command-line flag; leave it at its default")
            if isinstance(value, bool):
                argv.append(flag(option(f)) if value else "--no-" + flag(option(f))[2:])
            else:
                argv += [flag(option(f)), str(value)]
    return argv


def run_cli(fn: Callable[[], int]) -> int:
    """Run a CLI body: a UserError becomes one line on stderr and exit status 2."""
    try:
        return fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
