-- only the last day matters: a cart older than 24 hours never qualifies, and a purchase
-- before the window cannot be after a cart inside it
with events as (
    select * from {{ ref('stg_events') }}
    where
        occurred_at >= {{ segops_now() }} - interval '24 hours'
        and occurred_at <= {{ segops_now() }}
),

latest_cart as (
    select
        customer_id,
        occurred_at as last_cart_at,
        category,
        price * coalesce(quantity, 1) as cart_value
    from events
    where event_type = 'add_to_cart'
    qualify row_number() over (
        partition by customer_id order by occurred_at desc, event_id desc
    ) = 1
),

purchases as (
    select
        customer_id,
        max(occurred_at) as last_purchase_at
    from events
    where event_type = 'purchase'
    group by customer_id
),

final as (
    select
        latest_cart.customer_id,
        latest_cart.last_cart_at,
        latest_cart.category,
        latest_cart.cart_value
    from latest_cart
    left join purchases on latest_cart.customer_id = purchases.customer_id
    where
        latest_cart.last_cart_at >= {{ segops_now() }} - interval '24 hours'
        and latest_cart.last_cart_at <= {{ segops_now() }} - interval '30 minutes'
        and (
            purchases.last_purchase_at is null
            or purchases.last_purchase_at < latest_cart.last_cart_at
        )
)

select * from final
