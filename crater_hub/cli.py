"""``crater-hub``: the command-line entry point, one subcommand per tool we ship."""

import argparse
import sys


def main(argv=None):
    """Dispatch to a subcommand; each one parses the rest of the command line itself."""
    parser = argparse.ArgumentParser(prog="crater-hub", description="crater_hub tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "localkube",
        add_help=False,
        help="run the embedded Kubernetes API (see 'crater-hub localkube --help')",
    )
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "localkube":
        from .localkube.__main__ import main as localkube_main

        return localkube_main(rest)
