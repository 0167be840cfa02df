"""The ``kerasface`` command: parser assembly, dispatch, logging, errors -> exit status.

Commands: ``train`` (any preset), ``train-triplet``, ``train-classify``, ``verify``, ``embed``, ``find``,
``evaluate``, ``presets``, ``summary``, ``lowlight-grid``, ``align``, ``pack``; one module of :mod:`kerasface.cli` each
(``add_arguments(parser)`` and ``run(args) -> exit status``; the three train commands share
:mod:`kerasface.cli.train`). Building the parser imports neither Keras nor TensorFlow: a command
imports what it needs when it runs, after :func:`kerasface.cli.quiet.import_tensorflow` has
silenced TensorFlow's start-up lines (``--verbose`` keeps them).

``kerasface train --preset NAME`` runs a preset of any trainer: :func:`main` first reads
``--preset`` alone (:func:`preset_in`), then builds the parser with the flags of that preset's
trainer and parses the command line as it is.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kerasface.cli import align, embed, evaluate, exit_codes, find, lowlight_grid, pack, presets, summary, train, verify
from kerasface.cli.quiet import configure_logging, import_tensorflow
from kerasface.io import first_line
from kerasface.runtime import onednn_state, prefer_onednn

__all__ = ["build_parser", "main", "preset_in"]

#: ``{command: module}`` of the commands other than the train commands, in ``--help`` order.
COMMANDS = {"verify": verify, "embed": embed, "find": find, "evaluate": evaluate, "presets": presets,
            "summary": summary, "lowlight-grid": lowlight_grid, "align": align, "pack": pack}
DESCRIPTION = ("Face recognition in Keras 3 / TensorFlow: verify two photos, embed a folder, find a face in a "
               "gallery; train a preset, evaluate a saved model, align and pack faces. "
               "`kerasface COMMAND --help` lists a command's flags.")
#: Commands that run without TensorFlow.
LIGHT_COMMANDS = {"presets"}


def _verbose_flag(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="also print TensorFlow's start-up and C++ log lines and kerasface's debug lines")


def build_parser(preset: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; the train commands get the flags of ``preset``'s trainer (default: their own)."""
    parser = argparse.ArgumentParser(
        prog="kerasface", description=DESCRIPTION, epilog=exit_codes.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _verbose_flag(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, text in train.COMMANDS.items():
        p = sub.add_parser(command, help=text, epilog=exit_codes.epilog(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        train.add_arguments(p, command, preset)
        _verbose_flag(p, argparse.SUPPRESS)  # SUPPRESS: `kerasface --verbose train` keeps it
    for command, module in COMMANDS.items():
        p = sub.add_parser(command, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        _verbose_flag(p, argparse.SUPPRESS)
    return parser


def preset_in(argv: list[str]) -> str | None:
    """The ``--preset`` of a train command line (None for other commands or without one), read alone."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--verbose", action="store_true")
    pre.add_argument("command", nargs="?")
    pre.add_argument("--preset")
    try:
        known, _ = pre.parse_known_args(argv)
    except argparse.ArgumentError:  # e.g. --preset without a name: the whole parser says so
        return None
    return known.preset if known.command in train.COMMANDS else None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(preset_in(argv)).parse_args(argv)
    configure_logging(args.verbose)
    prefer_onednn()  # before TensorFlow is imported; TF_ENABLE_ONEDNN_OPTS=0 keeps Eigen's kernels (kerasface.runtime)
    if args.command in train.COMMANDS:
        logging.getLogger("kerasface").info("TensorFlow CPU kernels: %s", onednn_state())
    label = getattr(args, "label", args.command)
    try:
        if args.command not in LIGHT_COMMANDS:
            import_tensorflow(args.verbose)
        return (train if args.command in train.COMMANDS else COMMANDS[args.command]).run(args)
    except KeyboardInterrupt:
        print(f"\nkerasface {label}: interrupted; run the same command again to resume", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"kerasface {label}: error: {e}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    except FloatingPointError as e:  # a NaN/inf loss stopped training; the run folder keeps the last good epoch
        print(f"kerasface {label}: error: {e}", file=sys.stderr)
        return exit_codes.NON_FINITE_LOSS
    except Exception as e:  # anything else: one line with the error's type; --verbose shows the traceback
        if args.verbose:
            raise
        print(f"kerasface {label}: error: {type(e).__name__}: {first_line(e)} (an unexpected error; run with --verbose "
              "for the traceback)", file=sys.stderr)
        return exit_codes.FAILURE


if __name__ == "__main__":
    sys.exit(main())
