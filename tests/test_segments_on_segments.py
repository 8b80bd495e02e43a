"""Real-time segments built on other segments: on a real-time one (its SQL inlined, so time and
events move both together) and on a nightly one (read as its last build left it, from the
lake; the nightly run hands the stream the customers it changed). The live state is in
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from demo.traffic import event
from orchestration.build import build_definitions
from segops.clock import utc_now
from tests.live_helpers import nightly, started
from tests.projects import project_with_segments, realtime_yml
from tests.stream_helpers import incoming, members, rows

VIP_CARTS = """
select carts.customer_id, carts.cart_value, vips.revenue_90d
from {{ ref('cart_abandoners') }} as carts
inner join {{ ref('vip_quarterly') }} as vips on carts.customer_id = vips.customer_id
"""
BROWSING_CARTS = """
select carts.customer_id
from {{ ref('cart_abandoners') }} as carts
inner join {{ ref('high_intent_browsers') }} as browsers
    on carts.customer_id = browsers.customer_id
"""


@pytest.fixture
def project(manifest, live_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    return project_with_segments(tmp_path, monkeypatch, {
        "vip_carts": (VIP_CARTS, realtime_yml("vip_carts")),
        "browsing_carts": (BROWSING_CARTS, realtime_yml("browsing_carts")),
    })


def test_a_segment_on_a_real_time_segment_follows_time_and_events_with_it(project):
    start = utc_now().replace(microsecond=0)
    clock = [start]
    with started(project, clock=lambda: clock[0]) as consumer:
        consumer.process([
            incoming(event("ada", "add_to_cart", start - timedelta(minutes=29),
                           category="home", price=20.0)),
            *(incoming(event("ada", "product_view", start - timedelta(minutes=50),
                             category="home", price=20.0)) for _ in range(3)),
        ])
        assert members(project, "browsing_carts") == {}
        clock[0] = start + timedelta(minutes=1, seconds=1)  # the cart turns 30 minutes old
        consumer.process([])
        assert set(members(project, "browsing_carts")) == {"ada"}
        clock[0] = start + timedelta(minutes=10, seconds=1)  # the views turn an hour old
        consumer.process([])
    assert members(project, "browsing_carts") == {}
    assert "ada" in members(project, "cart_abandoners")


def test_on_postgres_a_segment_on_a_nightly_segment_reads_its_table_in_the_lake(project):
    """Also what the nightly job promises such a segment: it is reconciled after the nightly
    segment it reads, and its parity check passes."""
    now = utc_now().replace(microsecond=0)
    buyers = [event(f"buyer{number}", "purchase", now - timedelta(days=3), order_value=10.0,
                    order_id=f"b{number}") for number in range(19)]
    with started(project) as consumer:
        consumer.process([incoming(e) for e in [
            *buyers,
            event("vip", "purchase", now - timedelta(days=2), order_value=500.0, order_id="o1"),
            event("vip", "add_to_cart", now - timedelta(minutes=40), category="home",
                  price=30.0)]])
        assert "vip_carts" in consumer.segments.failed, "no vip_quarterly in the lake yet"
        assert rows(project, "select segment from segops.segment_membership where "
                             "customer_id = 'vip' order by 1") == [("cart_abandoners",),
                                                                   ("recent_purchasers",)]

        graph = build_definitions(project).resolve_asset_graph()
        assert dg.AssetKey(["membership", "vip_quarterly"]) in graph.get(
            dg.AssetKey(["membership", "vip_carts"])).parent_keys, "reconciled after what it reads"
        result = nightly(project)  # builds vip_quarterly in the lake, queues who moved
        assert result.success
        assert rows(project, "select customer_id, reason from segops.reevaluate_queue") == [
            ("vip", "nightly:vip_quarterly")]
        parity = {check.check_name: check for check in result.get_asset_check_evaluations()
                  if check.asset_key == dg.AssetKey(["membership", "vip_carts"])}["parity"]
        assert parity.passed, parity.description
        consumer.segments.failed.clear()
        consumer.process([])  # the next batch takes the queue and reads the lake's table
    assert rows(project, "select customer_id from segops.segment_membership "
                         "where segment = 'vip_carts'") == [("vip",)]
    assert rows(project, "select count(*) from segops.reevaluate_queue") == [(0,)]
