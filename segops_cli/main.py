"""The `segops` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from segops.clock import parse_timestamp, utc_now
from segops.errors import SegOpsError
from segops.settings import Settings, load_settings

console = Console(width=None if sys.stdout.isatty() else 120)
READABLE_ERRORS = (SegOpsError, FileNotFoundError)


def cmd_generate(args: argparse.Namespace, settings: Settings) -> None:
    """Into PostgreSQL's (empty) live tables, generated in memory and copied there."""
    from demo import synthetic
    from segops.live_copy import occupied_tables

    if args.if_empty and occupied_tables(settings.postgres_dsn):
        console.print("PostgreSQL already holds a shop: nothing generated")
        return
    summary = synthetic.generate_into_postgres(
        settings.postgres_dsn, customers=args.customers, seed=args.seed,
        now=parse_timestamp(args.now) if args.now else utc_now(),
        events_per_customer=args.events_per_customer)
    console.print(
        f"generated {summary.customers:,} customers and {summary.events:,} events "
        f"in {summary.seconds:.1f}s into PostgreSQL"
    )


def cmd_segments(args: argparse.Namespace, settings: Settings) -> None:
    from segops_cli.reports import print_segments

    print_segments(settings, console, sample=args.sample)


def cmd_init(args: argparse.Namespace, settings: Settings) -> None:
    from segops.live_connection import connect
    from segops.live_schema import ensure_live_schema
    from segops.pubsub import describe_target, ensure_pubsub

    with connect(settings.postgres_dsn) as pg:
        ensure_live_schema(pg)
    console.print("live tables ready in PostgreSQL")
    created = ensure_pubsub(settings)
    console.print(
        f"Pub/Sub ready on {describe_target()}: "
        + (", ".join(created) if created else "topics and subscription already existed")
    )


def cmd_import_warehouse(args: argparse.Namespace, settings: Settings) -> None:
    from segops.live_copy import copy_to_postgres

    copied = copy_to_postgres(args.path, settings.postgres_dsn, if_empty=args.if_empty)
    if not copied:
        console.print("PostgreSQL already holds the live tables: nothing copied")
    for table, rows in copied.items():
        console.print(f"{table}: {rows:,} rows")


def cmd_stream(args: argparse.Namespace, settings: Settings) -> None:
    from segops.pubsub import check_topic, subscription_path
    from streaming.live_consumer import LiveConsumer, default_consumer_id
    from streaming.source import PubSubSource
    from streaming.stream_loop import ConsumerConfig

    for topic in (settings.events_topic, settings.changes_topic):
        check_topic(settings, topic)  # fail fast, and readably, when Pub/Sub is not there
    config = ConsumerConfig(batch_size=args.batch_size, batch_wait_seconds=args.batch_wait,
                            consumer_id=args.consumer_id or default_consumer_id())
    consumer = LiveConsumer(settings, config)
    # SIGTERM and Ctrl-C drain: finish the batch, commit, ack, exit 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: consumer.stop())
    consumer.run(PubSubSource(subscription_path(settings)), until_idle=args.until_idle)


def cmd_produce(args: argparse.Namespace, settings: Settings) -> None:
    from demo.producer import publish
    from demo.traffic import ShopTraffic, known_customers

    traffic = ShopTraffic(known_customers(args.customers), seed=args.seed, clock=utc_now)
    report = publish(settings, traffic, rate=args.rate, duration=args.duration)
    console.print(
        f"published {report.published:,} events in {report.seconds:.1f}s "
        f"({report.rate:,.0f}/s), {report.failed} failed"
    )


def cmd_story(args: argparse.Namespace, settings: Settings) -> None:
    from contextlib import nullcontext

    from demo.emulator import PubSubEmulator
    from demo.story import tell

    own_emulator = "PUBSUB_EMULATOR_HOST" not in os.environ
    with PubSubEmulator() if own_emulator else nullcontext() as emulator:
        if emulator:
            os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
            console.print(f"started the Pub/Sub emulator on {emulator.host}")
        if not tell(settings, console):
            raise SystemExit(1)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from demo.tour import run_tour

    run_tour(settings, console, customers=args.customers)


def cmd_up(args: argparse.Namespace, settings: Settings) -> None:
    from demo.platform import run_platform

    run_platform(console, rate=args.rate, port=args.port, consumers=args.consumers)


def cmd_preview(args: argparse.Namespace, settings: Settings) -> None:
    if (args.target is None) == (args.sql is None):
        raise SegOpsError("give a segment name or a .sql file, or --sql, but not both")
    if args.watch:
        watch_preview(args, settings)
        return
    from segops.live_reach import open_soon

    opening = open_soon(settings)  # before the imports and the compilation below
    from segops.preview import resolve_target, run_preview
    from segops_cli.reports import print_preview

    target = resolve_target(settings, args.target, args.sql)
    result = run_preview(settings, target, parse_timestamp(args.at) if args.at else utc_now(),
                         opening=opening)
    if args.json:
        print(json.dumps(result.to_dict(), default=str, indent=1))
    else:
        print_preview(result, console)


def watch_preview(args: argparse.Namespace, settings: Settings) -> None:
    import threading

    from segops_cli.reports import print_preview
    from segops_cli.watch import Save, watch

    path = Path(args.target or "")
    if path.suffix != ".sql" or not path.is_file():
        raise SegOpsError("--watch follows a .sql file: give its path")

    def saved(save: Save) -> None:
        print_preview(save.result, console)
        if save.entered is not None:
            console.print(
                f"since the last save: [green]+{len(save.entered):,} entered[/green] "
                f"{', '.join(sorted(save.entered)[:5])}  [red]-{len(save.left):,} left[/red] "
                f"{', '.join(sorted(save.left)[:5])}", highlight=False)
        console.print(f"[dim]watching {path}; Ctrl-C stops[/dim]")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        watch(settings, path, on_save=saved, stop=stop,
              on_error=lambda why: console.print(f"[red]error:[/red] {why}", highlight=False),
              clock=(lambda: parse_timestamp(args.at)) if args.at else utc_now)
    except KeyboardInterrupt:
        stop.set()


def cmd_replay(args: argparse.Namespace, settings: Settings) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from streaming.replay import replay

    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TimeRemainingColumn(), console=console,
    ) as progress:
        task = progress.add_task(f"replaying {args.file.name}", total=None)
        report = replay(
            settings, args.file, batch_size=args.batch_size,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    console.print(
        f"{report.lines:,} lines: {report.stored:,} events stored, {report.duplicates:,} "
        f"already stored, {report.dead_lettered:,} dead-lettered; real-time segments "
        f"{report.enters:,} enters, {report.exits:,} exits"
    )
    if args.no_nightly:
        return
    console.print("reconciling every segment with the nightly job")
    run_nightly(settings)


def cmd_nightly(args: argparse.Namespace, settings: Settings) -> None:
    run_nightly(settings)


def run_nightly(settings: Settings) -> None:
    """The nightly job now, recorded in Dagster's instance; its info lines say what changed."""
    from orchestration.run_now import run_job

    started = time.monotonic()
    result = run_job(settings, "nightly_segments",
                     run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
    failed = [event.step_key for event in result.get_step_failure_events()]
    skipped = [event.step_key for event in result.get_step_skipped_events()]
    not_run = (f"; skipped, since a dbt model they need failed (dbt's error is in the log "
               f"above): {', '.join(skipped)}" if skipped else "")
    if not result.success:
        raise SegOpsError(f"the nightly job failed (steps: {', '.join(failed) or 'none'})"
                          f"{not_run}; see run {result.run_id} in Dagster for why")
    console.print(f"{'[yellow]' if skipped else ''}nightly job done in "
                  f"{time.monotonic() - started:.1f}s (run {result.run_id[:8]}){not_run}",
                  highlight=False)


def cmd_diff(args: argparse.Namespace, settings: Settings) -> None:
    from segops.live_reach import open_soon

    opening = open_soon(settings)  # before the imports and the compilation below
    from rich.markdown import Markdown

    from segops_cli.diff import as_json, as_markdown, diff_segments, merge_base

    at = parse_timestamp(args.at) if args.at else utc_now()
    diffs = diff_segments(settings, args.base or merge_base(settings), at, opening=opening)
    if args.format == "json":
        print(as_json(diffs))
    elif args.format == "markdown":
        print(as_markdown(diffs, at))
    else:
        console.print(Markdown(as_markdown(diffs, at)))


def cmd_events(args: argparse.Namespace, settings: Settings) -> None:
    from segops.event_report import event_types, with_last_seen
    from segops.live_state import read_live_state
    from segops.tracking_plan import load_plan
    from segops_cli.reports import print_event_types

    plan = load_plan(settings.tracking_plan)
    with read_live_state(settings.postgres_dsn) as con:
        reports = with_last_seen(con, event_types(con, plan, utc_now()))
    if args.json:
        print(json.dumps([report.to_dict() for report in reports], indent=1))
    else:
        print_event_types(reports, console)


def cmd_load_customers(args: argparse.Namespace, settings: Settings) -> None:
    from segops.customer_files import load_customers_into_postgres

    report = load_customers_into_postgres(settings.postgres_dsn, args.file, utc_now())
    for where, why in report.rejected:
        console.print(f"[red]{args.file.name}, {where}:[/red] {why}", highlight=False)
    console.print(
        f"{report.applied:,} of {report.rows:,} rows applied, {len(report.changed):,} customers "
        f"changed (their real-time segments are re-evaluated by the stream's next batch)"
        + (f"; {len(report.rejected):,} rows rejected" if report.rejected else ""),
        highlight=False,
    )
    if report.rejected:
        raise SystemExit(1)


def cmd_members(args: argparse.Namespace, settings: Settings) -> None:
    from segops_cli.members import membership_frame, write_members

    at = parse_timestamp(args.at) if args.at else None
    write_members(membership_frame(settings, args.segment, at), args.format, args.output)


def cmd_history(args: argparse.Namespace, settings: Settings) -> None:
    from segops_cli.reports import print_history

    print_history(settings, args.customer, console)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], None]] = {
    "generate": cmd_generate,
    "segments": cmd_segments,
    "init": cmd_init,
    "stream": cmd_stream,
    "import-warehouse": cmd_import_warehouse,
    "produce": cmd_produce,
    "story": cmd_story,
    "demo": cmd_demo,
    "up": cmd_up,
    "preview": cmd_preview,
    "replay": cmd_replay,
    "nightly": cmd_nightly,
    "diff": cmd_diff,
    "events": cmd_events,
    "load-customers": cmd_load_customers,
    "members": cmd_members,
    "history": cmd_history,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segops", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--verbose", action="store_true", help="log every micro-batch")
    sub = parser.add_subparsers(dest="command", required=True)

    generate = sub.add_parser("generate", help="write synthetic shop customers and events")
    generate.add_argument("--customers", type=int, default=20_000)
    generate.add_argument("--events-per-customer", type=float, default=10.0)
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--now", help="anchor time (RFC 3339); default: now")
    generate.add_argument("--if-empty", action="store_true",
                          help="only if PostgreSQL holds no shop yet")

    segments = sub.add_parser("segments", help="every segment with its refresh mode and size")
    segments.add_argument("--sample", type=int, default=0, help="show N members of each")

    sub.add_parser("init", help="create the live tables in PostgreSQL and the Pub/Sub topics")

    imported = sub.add_parser("import-warehouse", help="copy a single-file DuckDB warehouse's "
                              "customers, events and membership into PostgreSQL's live tables")
    imported.add_argument("path", type=Path, help="the warehouse file (warehouse.duckdb)")
    imported.add_argument("--if-empty", action="store_true",
                          help="copy nothing, without an error, when PostgreSQL holds rows")

    stream = sub.add_parser("stream", help="run the streaming consumer")
    stream.add_argument("--until-idle", type=float, help="exit after this many idle seconds")
    stream.add_argument("--batch-size", type=int, default=1000)
    stream.add_argument("--batch-wait", type=float, default=0.1, help="seconds per batch")
    stream.add_argument("--consumer-id", help="this consumer's name in the heartbeats "
                        "(default: host-pid)")

    produce = sub.add_parser("produce", help="publish live synthetic shop traffic")
    produce.add_argument("--rate", type=float, default=50.0, help="events per second")
    produce.add_argument("--duration", type=float, default=60.0, help="seconds")
    produce.add_argument("--customers", type=int, default=20_000, help="customer id range")
    produce.add_argument("--seed", type=int, default=11)

    sub.add_parser("story", help="publish a scripted real-time story and narrate the changes")

    demo = sub.add_parser("demo", help="the whole product once: a generated shop in PostgreSQL "
                          "and the lake, the nightly job, a real-time story, the segments")
    demo.add_argument("--customers", type=int, default=20_000)

    up = sub.add_parser("up", help="run emulator, PostgreSQL (the project's own under "
                        "data/postgres unless SEGOPS_POSTGRES_DSN names one), consumers, Dagster "
                        "and demo traffic together")
    up.add_argument("--rate", type=float, default=20.0, help="demo events per second")
    up.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    up.add_argument("--consumers", type=int, default=2,
                    help="streaming consumers on the subscription")

    preview = sub.add_parser("preview", help="live reach of a segment before it ships")
    preview.add_argument("target", nargs="?", help="segment name or path to a .sql file")
    preview.add_argument("--sql", help="inline SQL (dbt Jinja allowed)")
    preview.add_argument("--at", help="evaluate at this time (RFC 3339) instead of now")
    preview.add_argument("--json", action="store_true", help="machine-readable output")
    preview.add_argument("--watch", action="store_true",
                         help="preview a .sql file again on every save, with who moved")

    replay = sub.add_parser("replay", help="backfill historical events from NDJSON (.gz ok)")
    replay.add_argument("file", type=Path)
    replay.add_argument("--batch-size", type=int, default=5_000)
    replay.add_argument("--no-nightly", action="store_true",
                        help="skip the nightly job that reconciles afterwards")

    sub.add_parser("nightly", help="rebuild every segment now, as the nightly schedule does")

    diff = sub.add_parser("diff", help="what changed segments would do to membership, "
                                       "for a pull request")
    diff.add_argument("--base", help="Git ref to compare with (default: the merge base with main)")
    diff.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    diff.add_argument("--at", help="evaluate at this time (RFC 3339) instead of now")

    events = sub.add_parser("events", help="every event type seen or planned: volume, last "
                                           "seen, what the tracking plan found wrong")
    events.add_argument("--json", action="store_true", help="machine-readable output")

    load = sub.add_parser("load-customers",
                          help="upsert customers' traits from a CSV or Parquet file")
    load.add_argument("file", type=Path)

    members = sub.add_parser("members", help="a segment's members, now or at a past time")
    members.add_argument("segment")
    members.add_argument("--at", help="point in time (RFC 3339)")
    members.add_argument("--format", choices=("csv", "json", "parquet"), default="csv")
    members.add_argument("--output", type=Path, help="file to write (default: stdout)")

    history = sub.add_parser("history", help="a customer's enters and exits")
    history.add_argument("customer")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.verbose:
        for name in ("segops", "streaming"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        COMMANDS[args.command](args, load_settings())
    except READABLE_ERRORS as error:
        if args.debug:
            raise
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)

