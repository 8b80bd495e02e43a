with customers as (
    select * from {{ ref('stg_customers') }}
),

final as (
    select
        customer_id,
        country,
        city
    from customers
    where country in ('DE', 'AT', 'CH')
)

select * from final
