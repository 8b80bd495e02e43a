"""Human-readable views of the catalog and membership, for the CLI."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from segops.catalog import Catalog, Segment
from segops.clock import utc_now
from segops.event_report import EventTypeReport
from segops.heartbeat import Heartbeat, latest_heartbeat
from segops.live_state import read_live_state
from segops.membership import customer_history
from segops.preview import PreviewResult
from segops.settings import Settings


def print_segments(settings: Settings, console: Console, sample: int = 0) -> None:
    """Every segment: refresh mode, size, last change and how long ago that was."""
    catalog = Catalog.load(settings.manifest_path)
    with read_live_state(settings.postgres_dsn) as con:
        stats = {
            row[0]: row[1:]
            for row in con.execute(
                """
                select s.segment, coalesce(m.size, 0), s.last_change
                from (select segment, max(changed_at) as last_change
                      from segops.segment_membership_changes group by segment) as s
                left join (select segment, count(*) as size
                           from segops.segment_membership group by segment) as m using (segment)
                """
            ).fetchall()
        }
        heartbeat = latest_heartbeat(con)
        last_batch = con.execute(
            "select max(changed_at) from segops.segment_membership_changes where source = 'batch'"
        ).fetchone()[0]
        samples = {
            name: con.execute(
                """
                select customer_id, attributes from segops.segment_membership
                where segment = ? order by customer_id limit ?
                """,
                [name, sample],
            ).fetchall()
            for name in catalog.segments
        } if sample else {}
    now = utc_now()
    table = Table(title="Segments")
    for header, width in (("segment", 24), ("refresh", 8), ("members", 9), ("last change", 11)):
        table.add_column(header, min_width=width, no_wrap=True,
                         justify="right" if header in ("members", "last change") else "left")
    table.add_column("freshness", no_wrap=True, min_width=20)
    table.add_column("description", overflow="ellipsis", no_wrap=True, max_width=56)
    for name, segment in catalog.segments.items():
        size, last_change = stats.get(name, (0, None))
        refresh = segment.refresh or "?"
        if segment.problems:
            refresh = f"[red]{refresh} (invalid)[/red]"
        table.add_row(
            name,
            refresh,
            f"{size:,}",
            f"{_age(now - last_change)} ago" if last_change else "never",
            _freshness(segment, heartbeat, last_batch, now),
            segment.description.strip().splitlines()[0] if segment.description else "",
        )
    console.print(table)
    for name, rows in samples.items():
        console.print(f"[bold]{name}[/bold]")
        for customer_id, attributes in rows:
            console.print(f"  {customer_id}  {json.loads(attributes) if attributes else ''}")


def _freshness(segment: Segment, heartbeat: Heartbeat | None, last_batch, now) -> str:
    """How current the membership is: the live stream's state, or the last nightly run."""
    if segment.is_realtime and heartbeat is not None:
        if segment.name in heartbeat.failed_segments:
            return "[red]failed in the stream[/red]"
        if heartbeat.is_stale(now):
            return f"[yellow]stream stale {_age(heartbeat.age(now))}[/yellow]"
        return f"[green]live[/green] ({_age(now - heartbeat.evaluated_at)})"
    return f"nightly, {_age(now - last_batch)} ago" if last_batch else "not built yet"


def _age(delta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def print_preview(result: PreviewResult, console: Console) -> None:
    console.print(
        f"[bold]{result.name}[/bold] at {result.evaluated_at:%Y-%m-%d %H:%M:%S} UTC: "
        f"[bold]{result.reach:,}[/bold] customers, {result.share:.2%} of {result.customers:,} "
        f"({result.seconds * 1000:,.0f} ms)"
    )
    if result.enters is not None:
        console.print(
            f"compared with its current membership: [green]+{result.enters:,} would enter[/green]"
            f" {', '.join(result.enter_sample)}  [red]-{result.exits:,} would exit[/red]"
            f" {', '.join(result.exit_sample)}"
        )
    if result.sample:
        table = Table(title="sample")
        table.add_column("customer_id")
        table.add_column("attributes")
        for customer_id, attributes in result.sample:
            table.add_row(customer_id, attributes or "")
        console.print(table)
    if result.overlap:
        table = Table(title="overlap with current segments")
        table.add_column("segment")
        table.add_column("shared members", justify="right")
        table.add_column("of this reach", justify="right")
        for name, shared in result.overlap:
            table.add_row(name, f"{shared:,}", f"{shared / result.reach:.1%}")
        console.print(table)


def print_history(settings: Settings, customer_id: str, console: Console) -> None:
    with read_live_state(settings.postgres_dsn) as con:
        history = customer_history(con, customer_id)
    if history.empty:
        console.print(f"{customer_id} never entered a segment")
        return
    table = Table(title=f"{customer_id}: enters and exits")
    for column in ("changed_at", "segment", "change", "source"):
        table.add_column(column)
    for row in history.itertuples(index=False):
        colour = "green" if row.change == "enter" else "red"
        table.add_row(f"{row.changed_at:%Y-%m-%d %H:%M:%S}", row.segment,
                      f"[{colour}]{row.change}[/{colour}]", row.source)
    console.print(table)


def print_event_types(reports: list[EventTypeReport], console: Console) -> None:
    table = Table(title="Event types (violations: the last day)")
    for header in ("event_type", "planned", "last hour", "last day", "last seen", "violations"):
        table.add_column(header, justify="right" if header.startswith("last ") else "left",
                         no_wrap=True)
    for report in reports:
        table.add_row(
            report.event_type,
            "yes" if report.planned else "[yellow]no[/yellow]",
            f"{report.last_hour:,}",
            f"{report.last_day:,}",
            f"{report.last_seen:%Y-%m-%d %H:%M:%S}" if report.last_seen else "never",
            ", ".join(f"{kind} {count:,}" for kind, count in report.violations.items()),
        )
    console.print(table)
