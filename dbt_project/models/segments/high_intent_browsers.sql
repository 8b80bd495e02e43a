with views as (
    select * from {{ ref('stg_events') }}
    where
        event_type = 'product_view'
        and occurred_at > {{ segops_now() }} - interval '1 hour'
        and occurred_at <= {{ segops_now() }}
),

by_category as (
    select
        customer_id,
        category,
        count(*) as product_views
    from views
    where category is not null
    group by customer_id, category
),

final as (
    select
        customer_id,
        category,
        product_views
    from by_category
    where product_views >= 3
    qualify row_number() over (
        partition by customer_id order by product_views desc, category
    ) = 1
)

select * from final
