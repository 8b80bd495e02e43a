with source as (
    select * from {{ source('raw', 'events') }}
),

typed as (
    select
        event_id,
        customer_id,
        event_type,
        occurred_at,
        properties ->> 'product_id' as product_id,
        properties ->> 'category' as category,
        try_cast(properties ->> 'price' as double) as price,
        try_cast(properties ->> 'quantity' as integer) as quantity,
        properties ->> 'order_id' as order_id,
        try_cast(properties ->> 'order_value' as double) as order_value
    from source
)

select * from typed
