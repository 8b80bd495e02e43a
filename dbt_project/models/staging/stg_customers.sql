with source as (
    select * from {{ source('raw', 'customers') }}
),

renamed as (
    select
        customer_id,
        email,
        upper(country) as country,
        city,
        acquisition_channel,
        signed_up_at,
        traits
    from source
)

select * from renamed
