{#
    A view is replaced in one statement, one commit to the lake's catalog, instead of the
    create-rename-rename-drop of dbt-duckdb's view materialization: two commits a view, on
    every nightly for every real-time segment. Readers see the old view or the new one.
#}
{% materialization view, adapter='duckdb' %}
    {%- set built = create_or_replace_view() -%}
    {%- do adapter.commit() -%}
    {{ return(built) }}
{% endmaterialization %}

{% macro duckdb__create_view_as(relation, sql) -%}
    {%- if config.get('contract').enforced -%}
        {{ get_assert_columns_equivalent(sql) }}
    {%- endif -%}
    {%- set sql_header = config.get('sql_header', none) -%}
    {{ sql_header if sql_header is not none }}
    create or replace view {{ relation }} as (
        {{ sql }}
    );
{%- endmacro %}
