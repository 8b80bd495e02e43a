{#
    The one "now" every segment uses. A dbt var pins it for a whole run (tests, point-in-time
    rebuilds); otherwise a session variable set by the real-time evaluator or preview
    (`set variable segops_now = timestamp '...'`) decides, falling back to the wall clock.
#}
{% macro segops_now() -%}
    {{ return(adapter.dispatch('segops_now', 'segops')()) }}
{%- endmacro %}

{% macro default__segops_now() -%}
    {%- if var('segops_now', none) is not none -%}
        cast('{{ var("segops_now") }}' as timestamp)
    {%- else -%}
        cast(current_timestamp as timestamp)
    {%- endif -%}
{%- endmacro %}

{% macro duckdb__segops_now() -%}
    {%- if var('segops_now', none) is not none -%}
        cast('{{ var("segops_now") }}' as timestamp)
    {%- else -%}
        coalesce(
            cast(getvariable('segops_now') as timestamp),
            cast(now() at time zone 'UTC' as timestamp)
        )
    {%- endif -%}
{%- endmacro %}
