"""The `guestfs-sim` command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guestfs-sim",
        description="A simulated vCenter: every subdirectory of --root is one powered-on VM whose guest '/' it is.",
    )
    parser.add_argument("--root", required=True, metavar="DIR", help="one subdirectory per VM")
    parser.add_argument("--listen", default="127.0.0.1:8989", metavar="HOST:PORT")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("guestfs-sim: the simulator is not built yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
