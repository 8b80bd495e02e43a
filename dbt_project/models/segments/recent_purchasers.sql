with purchases as (
    select * from {{ ref('stg_events') }}
    where
        event_type = 'purchase'
        and occurred_at >= {{ segops_now() }} - interval '3 days'
        and occurred_at <= {{ segops_now() }}
),

final as (
    select
        customer_id,
        max(occurred_at) as last_purchase_at,
        count(*) as orders_3d,
        coalesce(sum(order_value), 0) as revenue_3d
    from purchases
    group by customer_id
)

select * from final
