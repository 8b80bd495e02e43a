"""Customers' traits: the current profile in `raw.customers`, every change in
`raw.customer_traits`.

Traits arrive by `identify` events on the stream and by loads of a file (`segops
load-customers`, or the Dagster asset `raw/customers`). Each trait keeps the value set latest
(an identify's `occurred_at`, a load's time), so a late identify never overwrites a newer one and
applying the same changes in any order gives the same profile. A customer first seen in a trait
change is created; one whose profile predates the history gets it recorded as a baseline before
its first change, so the history answers what any customer's traits were at a past time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

TYPED_TRAITS = ("email", "country", "city", "acquisition_channel", "signed_up_at")
BASELINE = "baseline"
BASELINE_AT = datetime(1, 1, 1)


@dataclass(frozen=True)
class TraitChange:
    customer_id: str
    traits: Mapping[str, Any]  # JSON values; signed_up_at as RFC 3339 text
    set_at: datetime
    source: str  # identify:<event_id>, load:<file>


def apply_trait_changes(con: duckdb.DuckDBPyConnection, changes: Iterable[TraitChange]
                        ) -> list[str]:
    """Record `changes` and bring the profiles of their customers up to date, inside the
    caller's transaction; the customers whose profile changed."""
    rows = [
        (change.customer_id, trait, json.dumps(value, default=str), change.set_at,
         change.source)
        for change in changes for trait, value in change.traits.items()
    ]
    if not rows:
        return []
    batch = pa.table(dict(zip(("customer_id", "trait", "value", "set_at", "source"),
                              map(list, zip(*rows, strict=True)), strict=True)))
    con.register("_trait_rows", batch)
    try:
        con.execute("create or replace temp table _traits_of as "
                    "select distinct customer_id from _trait_rows")
        _record_baselines(con)
        con.execute(
            """
            insert into raw.customer_traits (customer_id, trait, value, set_at, source)
            select customer_id, trait, value::json, set_at, source from _trait_rows
            """
        )
    finally:
        con.unregister("_trait_rows")
    return _refresh_profiles(con)


def _record_baselines(con: duckdb.DuckDBPyConnection) -> None:
    """The current profile, as the first entry of the history of each customer about to change
    who has none yet (loaded or generated before traits were recorded)."""
    typed = " union all ".join(
        f"select customer_id, '{trait}' as trait, to_json({trait}) as value from base"
        for trait in TYPED_TRAITS
    )
    con.execute(
        f"""
        insert into raw.customer_traits (customer_id, trait, value, set_at, source)
        with base as (
            select * from raw.customers as c
            where customer_id in (select customer_id from _traits_of)
              and not exists (select 1 from raw.customer_traits as h
                              where h.customer_id = c.customer_id)
        ),
        traits as (
            {typed}
            union all
            select customer_id, key, json_extract(traits, '$."' || key || '"')
            from base, unnest(json_keys(traits)) as extra(key)
        )
        select customer_id, trait, value, $at, '{BASELINE}' from traits
        where value is not null and value::varchar <> 'null'
        """,
        {"at": BASELINE_AT},
    )


def _refresh_profiles(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Rebuild the profiles of `_traits_of` from their history; replace those that differ."""
    typed = ",\n".join(
        f"max(value ->> '$') filter (where trait = '{trait}') as {trait}"
        for trait in TYPED_TRAITS if trait != "signed_up_at"
    )
    typed_names = ", ".join(f"'{trait}'" for trait in TYPED_TRAITS)
    con.execute(
        f"""
        create or replace temp table _profiles as
        with history as (
            select * from raw.customer_traits
            where customer_id in (select customer_id from _traits_of)
        ),
        latest as (
            select customer_id, trait, arg_max(value, (set_at, source)) as value
            from history group by customer_id, trait
        ),
        extras as (
            select customer_id, json_group_object(trait, value) as traits
            from latest where trait not in ({typed_names})
            group by customer_id
        ),
        first_seen as (
            select customer_id, min(set_at) as at from history
            where source <> '{BASELINE}' group by customer_id
        )
        select
            latest.customer_id,
            {typed},
            coalesce(
                max(try_cast(value ->> '$' as timestamptz) at time zone 'UTC')
                    filter (where trait = 'signed_up_at'),
                any_value(first_seen.at)
            ) as signed_up_at,
            any_value(extras.traits) as traits
        from latest
        left join extras using (customer_id)
        left join first_seen using (customer_id)
        group by latest.customer_id
        """
    )
    columns = ", ".join(("customer_id", *TYPED_TRAITS, "traits"))
    differs = " or ".join(
        [f"p.{trait} is distinct from c.{trait}" for trait in TYPED_TRAITS]
        + ["p.traits::varchar is distinct from c.traits::varchar"]
    )
    changed = [row[0] for row in con.execute(
        f"""
        select p.customer_id from _profiles as p
        left join raw.customers as c using (customer_id)
        where c.customer_id is null or {differs}
        order by p.customer_id
        """
    ).fetchall()]
    if changed:
        con.execute("delete from raw.customers where customer_id in (select unnest($ids))",
                    {"ids": changed})
        con.execute(
            f"insert into raw.customers ({columns}) select {columns} from _profiles "
            "where customer_id in (select unnest($ids))",
            {"ids": changed},
        )
    return changed


def traits_at(con: duckdb.DuckDBPyConnection, customer_id: str, at: datetime) -> dict[str, Any]:
    """A customer's traits as they were at `at`, from the history (empty if it has none)."""
    return {trait: json.loads(value) for trait, value in con.execute(
        """
        select trait, arg_max(value, (set_at, source))::varchar from raw.customer_traits
        where customer_id = ? and set_at <= ? group by trait
        """,
        [customer_id, at],
    ).fetchall() if value != "null"}
