with customers as (
    select * from {{ ref('stg_customers') }}
),

events as (
    select * from {{ ref('stg_events') }}
    where occurred_at <= {{ segops_now() }}
),

activity as (
    select
        customer_id,
        min(occurred_at) as first_seen_at,
        max(occurred_at) as last_seen_at,
        count(*) as events,
        count(case when event_type = 'purchase' then 1 end) as orders,
        coalesce(sum(case when event_type = 'purchase' then order_value end), 0)
            as lifetime_revenue,
        max(case when event_type = 'purchase' then occurred_at end) as last_purchase_at
    from events
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
        coalesce(activity.orders, 0) as orders,
        coalesce(activity.lifetime_revenue, 0) as lifetime_revenue,
        activity.last_purchase_at
    from customers
    left join activity on customers.customer_id = activity.customer_id
)

select * from final
