"""Human-readable views of the catalog and membership, for the CLI."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from segops.catalog import Catalog
from segops.clock import utc_now
from segops.settings import Settings
from segops.warehouse import connect


def print_segments(settings: Settings, console: Console, sample: int = 0) -> None:
    """Every segment: refresh mode, size, last change and how long ago that was."""
    catalog = Catalog.load(settings.manifest_path)
    with connect(settings.warehouse, read_only=True) as con:
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
    table.add_column("description", overflow="ellipsis", no_wrap=True, max_width=64)
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
            segment.description.strip().splitlines()[0] if segment.description else "",
        )
    console.print(table)
    for name, rows in samples.items():
        console.print(f"[bold]{name}[/bold]")
        for customer_id, attributes in rows:
            console.print(f"  {customer_id}  {json.loads(attributes) if attributes else ''}")


def _age(delta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
