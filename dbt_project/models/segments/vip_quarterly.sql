with purchases as (
    select * from {{ ref('stg_events') }}
    where
        event_type = 'purchase'
        and occurred_at >= {{ segops_now() }} - interval '90 days'
        and occurred_at <= {{ segops_now() }}
),

revenue as (
    select
        customer_id,
        sum(order_value) as revenue_90d,
        count(*) as orders_90d
    from purchases
    group by customer_id
    having sum(order_value) > 0
),

ranked as (
    select
        customer_id,
        revenue_90d,
        orders_90d,
        row_number() over (order by revenue_90d desc, customer_id) as spend_rank,
        -- customer_id breaks ties, so cume_dist is rank / buyers and the tier size is exact
        cume_dist() over (order by revenue_90d desc, customer_id) as spend_percentile
    from revenue
),

final as (
    select
        customer_id,
        revenue_90d,
        orders_90d,
        spend_rank
    from ranked
    where spend_percentile <= 0.05
)

select * from final
