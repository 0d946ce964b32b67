"""The `keras-distill` command.

Subcommands (`demo`, `train-teacher`, `distill`, `scratch`, `evaluate`,
`report`, `export`, `bench`) are added as the project grows; today the
command prints its version and says which subcommands exist.
"""

import argparse
import sys

SUBCOMMANDS = ()


def build_parser():
    """Returns the `argparse` parser of the `keras-distill` command."""
    from keras_distill import __version__

    parser = argparse.ArgumentParser(
        prog="keras-distill",
        description="Knowledge distillation for Keras 3 on TensorFlow.",
    )
    parser.add_argument(
        "--version", action="version", version=f"keras-distill {__version__}"
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv=None):
    """Runs the command; returns its exit status.

    Args:
        argv: The arguments, without the program name. Defaults to
            `sys.argv[1:]`.

    Returns:
        0 on success, 2 on a usage error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        print(
            "\nNo subcommands are available yet in this version; use the "
            "Python API (keras_distill.Distiller).",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
