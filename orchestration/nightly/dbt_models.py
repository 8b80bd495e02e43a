"""dbt models as Dagster assets: raw → staging → marts → segments, with dbt tests as checks."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtProject,
    dbt_assets,
)

from orchestration.nightly.dbt_runner import DbtResource


class SegOpsTranslator(DagsterDbtTranslator):
    """Keys and groups follow the project's folders: staging/stg_events, segments/vip_quarterly."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey(dbt_resource_props["fqn"][1:])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props["fqn"]
        return fqn[1] if len(fqn) > 2 else "default"


def build_dbt_assets(project: DbtProject) -> dg.AssetsDefinition:
    translator = SegOpsTranslator(
        settings=DagsterDbtTranslatorSettings(enable_source_tests_as_checks=True)
    )

    @dbt_assets(manifest=project.manifest_path, dagster_dbt_translator=translator)
    def segops_dbt_models(context: dg.AssetExecutionContext, dbt: DbtResource):
        """Build and test every model; a failing segment fails on its own, not the whole run.

        A pinned SEGOPS_NOW reaches the models through the profile's `segops.dbt_clock` plugin.
        """
        yield from dbt.build(context)

    return segops_dbt_models
