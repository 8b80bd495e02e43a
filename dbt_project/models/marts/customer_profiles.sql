with customers as (
    select * from {{ ref('stg_customers') }}
),

-- not materialized: two CTEs read it, and DuckDB would otherwise compute every column of the
-- staging view (order_value's JSON included) for all events once, before either filters
events as not materialized (
    select * from {{ ref('stg_events') }}
    where occurred_at <= {{ segops_now() }}
),

activity as (
    select
        customer_id,
        min(occurred_at) as first_seen_at,
        max(occurred_at) as last_seen_at,
        count(*) as events
    from events
    group by customer_id
),

-- a separate pass over purchases only, so order values are read from just those events' JSON
purchases as (
    select
        customer_id,
        count(*) as orders,
        sum(order_value) as lifetime_revenue,
        max(occurred_at) as last_purchase_at
    from events
    where event_type = 'purchase'
    group by customer_id
),

final as (
    select
        customers.customer_id,
        customers.country,
        customers.city,
        customers.acquisition_channel,
        customers.signed_up_at,
        activity.first_seen_at,
        activity.last_seen_at,
        coalesce(activity.events, 0) as events,
        coalesce(purchases.orders, 0) as orders,
        coalesce(purchases.lifetime_revenue, 0) as lifetime_revenue,
        purchases.last_purchase_at
    from customers
    left join activity on customers.customer_id = activity.customer_id
    left join purchases on customers.customer_id = purchases.customer_id
)

select * from final
