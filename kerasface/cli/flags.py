"""Command-line flags generated from the settings schema (:mod:`kerasface.config`), and the runtime flags.

:func:`add_settings_flags` gives every field of a settings dataclass one flag,
from its :func:`~kerasface.config.setting` metadata: the help text, choices,
type (``X | None`` parses ``X``), a ``--x`` / ``--no-x`` pair for booleans, the
fold-list parser for fold tuples, older spellings as deprecated aliases. Every
flag defaults to ``None`` ("keep the preset's value"); :func:`settings_overrides`
reads them back as keyword arguments for ``preset.override(...)``.
:func:`add_runtime_flags` / :func:`runtime_from_args`: ``--strategy``,
``--mixed-precision``, ``--jit-compile`` (how a run executes, not a setting).
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from kerasface.config import SETTING_GROUPS, check_command_setting, setting_info

__all__ = ["PRECISIONS", "STRATEGIES", "DeprecatedSpelling", "add_runtime_flags", "add_settings_flags", "deprecation",
           "flag_names", "parse_folds", "ranged", "runtime_from_args", "settings_overrides"]

#: ``kerasface.training.distribute.STRATEGIES`` / ``PRECISIONS`` (a test keeps them equal; the
#: training package imports TensorFlow, the parser must not).
STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("off", "auto", "bfloat16", "float16")


def deprecation(message: str) -> None:
    """One ``kerasface: deprecated: ...`` line on stderr."""
    print(f"kerasface: deprecated: {message}", file=sys.stderr)


def parse_folds(text: str) -> tuple[int, ...]:
    """``"10"``, ``"1-9"``, ``"1,3,5-7"`` -> sorted fold numbers (from 1)."""
    out: set[int] = set()
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            a, b = int(lo), int(hi) if sep else int(lo)
            if a < 1 or b < a:
                raise ValueError
            out.update(range(a, b + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad fold list {text!r}: use e.g. 10, 1-9 or 1,3,5-7 (folds start at 1)") from None
    if not out:
        raise argparse.ArgumentTypeError(f"empty fold list {text!r}")
    return tuple(sorted(out))


class DeprecatedSpelling(argparse.Action):
    """A flag whose spelling (an alias) or value is an older release's: warns once, stores today's value."""

    def __init__(self, option_strings, dest, aliases=(), renamed_values=None, bare=None, allowed=None, **kwargs):
        self.aliases, self.renamed_values, self.bare, self.allowed = set(aliases), renamed_values or {}, bare, allowed
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.aliases:
            deprecation(f"{option_string} is now {self.option_strings[0]}; the old spelling goes in the next release")
        if values is None:  # a bare flag that used to be a switch
            deprecation(f"a bare {option_string} is now {option_string} {self.bare}")
            values = self.bare
        if values in self.renamed_values:
            new = self.renamed_values[values]
            deprecation(f"{option_string} {values} is now {option_string} {new}")
            values = new
        if self.allowed is not None and values not in self.allowed:  # checked here: argparse's check would
            parser.error(f"argument {option_string}: invalid choice: {values!r} "  # refuse the old values
                         f"(choose from {', '.join(map(str, self.allowed))})")
        setattr(namespace, self.dest, values)


def flag_names(field: dataclasses.Field) -> list[str]:
    """The flag spellings of a schema field (``[]`` for one without a flag): today's first, then the aliases."""
    info = setting_info(field)
    if info.flag is None:
        return []
    return [info.flag or "--" + field.name.replace("_", "-"), *info.aliases]


def _help(info, preset, name: str) -> str:
    text = info.help + (f"; {info.describe_range()}" if info.describe_range() else "")
    if preset is not None:
        value = getattr(preset, name)
        text += f" (preset: {'unset' if value is None else value})"
    return text.replace("%", "%%")  # argparse formats help texts with %


def add_settings_flags(parser: argparse.ArgumentParser, schema, preset=None) -> None:
    """One flag per field of ``schema`` (a settings dataclass), in argument groups named by the metadata.

    ``preset``: its values are named in the help texts. Every flag's default is ``None``.
    """
    types = schema.field_types()
    fields = [f for f in dataclasses.fields(schema) if flag_names(f)]
    used = {setting_info(f).group for f in fields}
    groups = {g: parser.add_argument_group(g) for g in SETTING_GROUPS if g in used}
    for f in fields:
        names = flag_names(f)
        info = setting_info(f)
        group = groups[info.group]
        kw = {"dest": f.name, "default": None, "help": _help(info, preset, f.name)}
        if types[f.name] is bool:
            group.add_argument(*names, action="store_true", **kw)
            group.add_argument("--no-" + names[0][2:], dest=f.name, action="store_false", default=None,
                               help=f"the opposite of {names[0]}")
            continue
        kw["metavar"] = info.metavar
        kw["type"] = parse_folds if info.folds else types[f.name]
        if info.choices:
            kw.update(choices=info.choices, metavar=info.metavar or "{" + ",".join(info.choices) + "}")
        if info.aliases or info.renamed_values or info.bare:
            kw.update(action=DeprecatedSpelling, aliases=info.aliases, bare=info.bare, allowed=kw.pop("choices", None),
                      renamed_values={k: v for k, v in (info.renamed_values or {}).items() if isinstance(k, str)})
            if info.bare:
                kw["nargs"] = "?"
        group.add_argument(*names, **kw)


def settings_overrides(args: argparse.Namespace, schema) -> dict:
    """``{field: value}`` of the flags given on the command line (flags left out are None: the preset stays)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(schema)
            if flag_names(f) and getattr(args, f.name, None) is not None}


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """``--strategy``, ``--mixed-precision``, ``--jit-compile`` (how a run executes; may change on resume)."""
    g = parser.add_argument_group("runtime (hardware; not part of the preset, may change on resume)")
    g.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="default: one device; mirrored: every GPU of this machine (the batch size is the global "
                        "batch, split across them); multiworker: several machines, from TF_CONFIG "
                        "(docs/distributed.md)")
    g.add_argument("--mixed-precision", choices=PRECISIONS, default="off",
                   help="compute in float16 (GPU) or bfloat16 (CPUs with AVX512-BF16/AMX) with float32 weights, "
                        "embeddings and losses; auto: float16 with a GPU, bfloat16 if the CPU has it, else off "
                        "(default off)")
    g.add_argument("--jit-compile", action="store_true", default=False, help="compile the training step with XLA")


def runtime_from_args(args: argparse.Namespace):
    """The :class:`kerasface.training.distribute.Runtime` of the parsed runtime flags."""
    # here, not at the top: the training package imports TensorFlow
    from kerasface.training.distribute import Runtime

    return Runtime(strategy=args.strategy, mixed_precision=args.mixed_precision, jit_compile=args.jit_compile)


def ranged(name: str, cast=int):
    """An argparse ``type``: ``cast`` the text, then check it against ``kerasface.config.COMMAND_SETTINGS[name]``
    (a value out of range is an argparse error: one line naming the flag, exit status 2)."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {cast.__name__} value: {text!r}") from None
        try:
            return check_command_setting(name, value, flag="value")
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e}".replace("value must", "must", 1)) from None

    parse.__name__ = cast.__name__  # argparse names the type in its messages
    return parse
