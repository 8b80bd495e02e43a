"""dbt models as Dagster assets: raw → staging → marts → segments, with dbt tests as checks.

dagster-dbt makes dbt's data tests asset checks but leaves its unit tests out; each model with
unit tests gets one more check, `unit_tests`, reported by the same `dbt build` that runs them.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtProject,
    dbt_assets,
)
from dagster_dbt.asset_utils import get_manifest_and_translator_from_dbt_assets

from orchestration.nightly.dbt_runner import UNIT_TESTS_CHECK, DbtResource


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

    def segops_dbt_models(context: dg.AssetExecutionContext, dbt: DbtResource):
        """Build and test every model; a failing segment fails on its own, not the whole run.

        A pinned SEGOPS_NOW reaches the models through the profile's `segops.dbt_clock` plugin.
        """
        yield from dbt.build(context)

    from_dbt = dbt_assets(manifest=project.manifest_path,
                          dagster_dbt_translator=translator)(segops_dbt_models)
    manifest, _, _ = get_manifest_and_translator_from_dbt_assets([from_dbt])
    # dagster-dbt's own op, with the unit-test checks beside its data-test checks (which may
    # target sources outside the op, hence arbitrary check specs, as dagster-dbt allows them).
    return dg.multi_asset(
        name=from_dbt.op.name,
        specs=list(from_dbt.specs),
        check_specs=[*from_dbt.check_specs, *unit_test_checks(manifest, translator)],
        can_subset=True,
        op_tags=from_dbt.op.tags,
        allow_arbitrary_check_specs=True,
    )(segops_dbt_models)


def unit_test_checks(manifest: Mapping[str, Any],
                     translator: DagsterDbtTranslator) -> list[dg.AssetCheckSpec]:
    """A `unit_tests` check for every model that has dbt unit tests."""
    models = sorted({model for unit_test in manifest.get("unit_tests", {}).values()
                     for model in unit_test["depends_on"]["nodes"]})
    return [
        dg.AssetCheckSpec(
            UNIT_TESTS_CHECK,
            asset=translator.get_asset_key(manifest["nodes"][model]),
            description="The model's dbt unit tests: given input rows and a pinned now, the "
                        "expected rows.",
        )
        for model in models
    ]
