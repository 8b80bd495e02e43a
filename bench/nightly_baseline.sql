-- B4's baseline: the seven segments of dbt_project/models/segments, computed by hand in plain
-- DuckDB SQL over raw.events and raw.customers, at the "now" in the session variable
-- bench_now. Each table baseline.<segment> has the same rows (and columns) as the dbt model.
-- bench/nightly.py checks that every segment has exactly the members the nightly job gives it,
-- and fails if the project has a segment this script does not compute.
--
-- What a hand-written script does that the models do not: one pass over the events for the
-- per-customer facts several segments share, JSON read only from the few events that need it,
-- and window scans restricted to the window.

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
