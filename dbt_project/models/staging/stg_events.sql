-- identify events set customers' traits (stg_customers), they are not behaviour
with source as (
    select * from {{ source('raw', 'events') }}
    where event_type <> 'identify'
),

typed as (
    select
        event_id,
        customer_id,
        event_type,
        occurred_at,
        properties ->> 'product_id' as product_id,
        properties ->> 'category' as category,
        try_cast(properties ->> 'price' as decimal(18, 2)) as price,
        try_cast(properties ->> 'quantity' as integer) as quantity,
        properties ->> 'order_id' as order_id,
        try_cast(properties ->> 'order_value' as decimal(18, 2)) as order_value,
        properties
    from source
)

select * from typed
