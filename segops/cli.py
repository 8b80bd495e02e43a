"""The `segops` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

from segops.catalog import ManifestMissing
from segops.clock import parse_timestamp, utc_now
from segops.dbt import DbtError
from segops.membership import SegmentContractError
from segops.settings import Settings, load_settings
from segops.warehouse import WarehouseBusy

console = Console()
READABLE_ERRORS = (
    ManifestMissing,
    SegmentContractError,
    WarehouseBusy,
    DbtError,
    FileNotFoundError,
)


def cmd_generate(args: argparse.Namespace, settings: Settings) -> None:
    from segops import synthetic
    from segops.warehouse import connect

    now = parse_timestamp(args.now) if args.now else utc_now()
    with connect(settings.warehouse) as con:
        summary = synthetic.generate(
            con,
            customers=args.customers,
            seed=args.seed,
            now=now,
            events_per_customer=args.events_per_customer,
        )
    console.print(
        f"generated {summary.customers:,} customers and {summary.events:,} events "
        f"in {summary.seconds:.1f}s into {settings.warehouse}"
    )


def cmd_segments(args: argparse.Namespace, settings: Settings) -> None:
    from segops.reports import print_segments

    print_segments(settings, console, sample=args.sample)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], None]] = {
    "generate": cmd_generate,
    "segments": cmd_segments,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segops", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    generate = sub.add_parser("generate", help="write synthetic shop customers and events")
    generate.add_argument("--customers", type=int, default=20_000)
    generate.add_argument("--events-per-customer", type=float, default=10.0)
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--now", help="anchor time (RFC 3339); default: now")

    segments = sub.add_parser("segments", help="every segment with its refresh mode and size")
    segments.add_argument("--sample", type=int, default=0, help="show N members of each")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        COMMANDS[args.command](args, load_settings())
    except READABLE_ERRORS as error:
        if args.debug:
            raise
        console.print(f"[red]error:[/red] {error}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
