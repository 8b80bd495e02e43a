-- B4's baseline: the nightly job's work by hand, on a copy of the same warehouse. The seven
-- segments of dbt_project/models/segments in plain DuckDB SQL over raw.events and
-- raw.customers (the lake's), at the "now" in the session variable bench_now; then membership
-- kept as the job keeps it, in the PostgreSQL attached as `live`. Each table
-- baseline.<segment> has the same rows (and columns) as the dbt model. bench/nightly.py checks
-- that every segment has exactly the members the nightly job gives it, that the script
-- recorded as many changes, and fails if the project has a segment this script does not
-- compute.
--
-- What a hand-written script does that the models do not: one pass over the events for the
-- per-customer facts several segments share, JSON read only from the few events that need it,
-- window scans restricted to the window, and every segment's members copied into PostgreSQL in
-- one COPY, diffed against membership there in one statement.

create schema if not exists baseline;

-- Per customer, up to now: last event, purchases, last purchase, first sign-up.
create or replace temp table activity as
select
    customer_id,
    max(occurred_at) as last_seen_at,
    count(*) filter (where event_type = 'purchase') as purchases,
    max(occurred_at) filter (where event_type = 'purchase') as last_purchase_at,
    min(occurred_at) filter (where event_type = 'signup') as signed_up_at
from raw.events
where occurred_at <= getvariable('bench_now')
group by customer_id;

-- Purchases of the last 90 days, with their value (vip_quarterly, recent_purchasers).
create or replace temp table purchases_90d as
select customer_id, occurred_at, try_cast(properties ->> 'order_value' as decimal(18, 2)) as order_value
from raw.events
where event_type = 'purchase'
  and occurred_at >= getvariable('bench_now') - interval '90 days'
  and occurred_at <= getvariable('bench_now');

-- Latest add-to-cart 30 minutes to 24 hours ago, nothing bought at or after it. A customer's
-- latest cart overall is in that window only if their latest cart of the last 24 hours is.
create or replace table baseline.cart_abandoners as
with last_day_carts as (
    select
        customer_id,
        occurred_at as last_cart_at,
        properties ->> 'category' as category,
        try_cast(properties ->> 'price' as decimal(18, 2))
            * coalesce(try_cast(properties ->> 'quantity' as integer), 1) as cart_value
    from raw.events
    where event_type = 'add_to_cart'
      and occurred_at >= getvariable('bench_now') - interval '24 hours'
      and occurred_at <= getvariable('bench_now')
    qualify row_number() over (
        partition by customer_id order by occurred_at desc, event_id desc
    ) = 1
)
select carts.customer_id, carts.last_cart_at, carts.category, carts.cart_value
from last_day_carts as carts
left join activity using (customer_id)
where carts.last_cart_at <= getvariable('bench_now') - interval '30 minutes'
  and (activity.last_purchase_at is null or activity.last_purchase_at < carts.last_cart_at);

-- Two or more purchases ever, nothing at all in the last 30 days.
create or replace table baseline.churn_risk as
select customer_id, purchases, last_seen_at
from activity
where purchases >= 2
  and last_seen_at < getvariable('bench_now') - interval '30 days';

-- Customers in Germany, Austria or Switzerland.
create or replace table baseline.dach_customers as
select customer_id, upper(country) as country, city
from raw.customers
where upper(country) in ('DE', 'AT', 'CH');

-- Three or more views of one category in the last hour; the most viewed category.
create or replace table baseline.high_intent_browsers as
select customer_id, properties ->> 'category' as category, count(*) as product_views
from raw.events
where event_type = 'product_view'
  and occurred_at > getvariable('bench_now') - interval '1 hour'
  and occurred_at <= getvariable('bench_now')
  and (properties ->> 'category') is not null
group by customer_id, category
having count(*) >= 3
qualify row_number() over (partition by customer_id order by product_views desc, category) = 1;

-- Signed up in the last 7 days, never purchased.
create or replace table baseline.new_signups_no_purchase as
select customer_id, signed_up_at
from activity
where signed_up_at >= getvariable('bench_now') - interval '7 days'
  and purchases = 0;

-- At least one purchase in the last 3 days.
create or replace table baseline.recent_purchasers as
select
    customer_id,
    max(occurred_at) as last_purchase_at,
    count(*) as orders_3d,
    coalesce(sum(order_value), 0) as revenue_3d
from purchases_90d
where occurred_at >= getvariable('bench_now') - interval '3 days'
group by customer_id;

-- The top 5 % of buyers by revenue in the last 90 days (ties broken by customer_id).
create or replace table baseline.vip_quarterly as
with revenue as (
    select customer_id, sum(order_value) as revenue_90d, count(*) as orders_90d
    from purchases_90d
    group by customer_id
    having sum(order_value) > 0
),

ranked as (
    select
        customer_id,
        revenue_90d,
        orders_90d,
        row_number() over (order by revenue_90d desc, customer_id) as spend_rank,
        cume_dist() over (order by revenue_90d desc, customer_id) as spend_percentile
    from revenue
)

select customer_id, revenue_90d, orders_90d, spend_rank
from ranked
where spend_percentile <= 0.05;

drop table activity;
drop table purchases_90d;

-- Membership. Every segment's members with their attributes, as the job's writer gives them
-- (the model's other columns as JSON), staged in PostgreSQL.
call postgres_execute('live', '
    create unlogged table if not exists segops.script_found (
        segment text, customer_id text, attributes jsonb);
    truncate segops.script_found');

insert into live.segops.script_found
select 'cart_abandoners', customer_id, to_json(struct_pack(last_cart_at, category, cart_value))
from baseline.cart_abandoners
union all
select 'churn_risk', customer_id, to_json(struct_pack(purchases, last_seen_at))
from baseline.churn_risk
union all
select 'dach_customers', customer_id, to_json(struct_pack(country, city))
from baseline.dach_customers
union all
select 'high_intent_browsers', customer_id, to_json(struct_pack(category, product_views))
from baseline.high_intent_browsers
union all
select 'new_signups_no_purchase', customer_id, to_json(struct_pack(signed_up_at))
from baseline.new_signups_no_purchase
union all
select 'recent_purchasers', customer_id, to_json(struct_pack(last_purchase_at, orders_3d, revenue_3d))
from baseline.recent_purchasers
union all
select 'vip_quarterly', customer_id, to_json(struct_pack(revenue_90d, orders_90d, spend_rank))
from baseline.vip_quarterly;

-- The nightly segments (dach_customers, vip_quarterly) brought to their members: exits
-- deleted, enters inserted, attributes updated, every enter and exit appended to the history.
call postgres_execute('live', $$
    with found as (
        select * from segops.script_found
        where segment in ('dach_customers', 'vip_quarterly')
    ),
    held as (
        select * from segops.segment_membership
        where segment in ('dach_customers', 'vip_quarterly')
    ),
    delta as (
        select
            coalesce(f.customer_id, h.customer_id) as customer_id,
            coalesce(f.segment, h.segment) as segment,
            case when h.customer_id is null then 'enter'
                 when f.customer_id is null then 'exit' else 'update' end as change,
            coalesce(f.attributes, h.attributes) as attributes
        from found as f full join held as h using (segment, customer_id)
        where h.customer_id is null or f.customer_id is null
           or h.attributes is distinct from f.attributes
    ),
    exited as (
        delete from segops.segment_membership as m using delta as d
        where d.change = 'exit' and (m.customer_id, m.segment) = (d.customer_id, d.segment)
    ),
    updated as (
        update segops.segment_membership as m set attributes = d.attributes from delta as d
        where d.change = 'update' and (m.customer_id, m.segment) = (d.customer_id, d.segment)
    ),
    entered as (
        insert into segops.segment_membership
            (customer_id, segment, entered_at, source, attributes)
        select customer_id, segment, $$ || '''' || getvariable('bench_now') || '''' || $$, 'batch',
            attributes
        from delta where change = 'enter'
    )
    insert into segops.segment_membership_changes
        (customer_id, segment, change, changed_at, source, attributes)
    select customer_id, segment, change, $$ || '''' || getvariable('bench_now') || '''' || $$,
        'batch', attributes
    from delta where change <> 'update' order by customer_id, segment
$$);

-- The real-time segments are the stream's: their difference from what it holds is counted, as
-- the job's parity check does, and not written.
create or replace temp table realtime_drift as
select * from postgres_query('live', $$
    select segment, count(*) as differ
    from (select segment, customer_id from segops.script_found
          where segment not in ('dach_customers', 'vip_quarterly')) as f
    full join (select segment, customer_id from segops.segment_membership
               where segment not in ('dach_customers', 'vip_quarterly')) as h
        using (segment, customer_id)
    where f.customer_id is null or h.customer_id is null
    group by segment
$$);

