with events as (
    select * from {{ ref('stg_events') }}
    where occurred_at <= {{ segops_now() }}
),

signups as (
    select
        customer_id,
        min(occurred_at) as signed_up_at
    from events
    where event_type = 'signup'
    group by customer_id
),

buyers as (
    select distinct customer_id
    from events
    where event_type = 'purchase'
),

final as (
    select
        signups.customer_id,
        signups.signed_up_at
    from signups
    left join buyers on signups.customer_id = buyers.customer_id
    where
        signups.signed_up_at >= {{ segops_now() }} - interval '7 days'
        and buyers.customer_id is null
)

select * from final
