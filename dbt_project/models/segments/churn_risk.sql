with events as (
    select * from {{ ref('stg_events') }}
    where occurred_at <= {{ segops_now() }}
),

activity as (
    select
        customer_id,
        count(case when event_type = 'purchase' then 1 end) as purchases,
        max(occurred_at) as last_seen_at
    from events
    group by customer_id
),

final as (
    select
        customer_id,
        purchases,
        last_seen_at
    from activity
    where
        purchases >= 2
        and last_seen_at < {{ segops_now() }} - interval '30 days'
)

select * from final
