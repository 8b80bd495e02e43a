"""The raw events against the tracking plan in the Dagster UI: a check that reports unplanned
types and violations over the last day, and a sensor that observes the volume per type (which
the UI plots) and reports the same check between nightly runs."""

import dagster as dg

from orchestration.nightly.raw import raw_events
from orchestration.resources import WarehouseResource
from segops.clock import utc_now
from segops.event_report import EventTypeReport, event_types
from segops.live_connection import PostgresUnreachable
from segops.tracking_plan import PlanError, load_plan

TRACKING_PLAN = "tracking_plan"


def plan_check_result(reports: list[EventTypeReport]) -> dg.AssetCheckResult:
    unplanned = {r.event_type: r.last_day for r in reports if not r.planned and r.last_day}
    violations = {f"{r.event_type}: {kind}": count
                  for r in reports for kind, count in r.violations.items()}
    return dg.AssetCheckResult(
        asset_key=raw_events.key,
        check_name=TRACKING_PLAN,
        passed=not unplanned and not violations,
        severity=dg.AssetCheckSeverity.WARN,
        description=(f"{len(unplanned)} unplanned event types and "
                     f"{sum(violations.values())} violations in the last day"),
        metadata={"unplanned_types": dg.MetadataValue.json(unplanned),
                  "violations": dg.MetadataValue.json(violations)},
    )


@dg.asset_check(asset=raw_events.key, name=TRACKING_PLAN,
                description="Unplanned event types and tracking-plan violations, last day.")
def tracking_plan_check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    try:
        plan = load_plan()
    except PlanError as error:
        raise dg.Failure(description=str(error)) from None
    with warehouse.read_live_state() as con:
        return plan_check_result(event_types(con, plan, utc_now()))


@dg.sensor(
    name="event_types_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Observes the events per type in the last hour and checks them against the "
    "tracking plan.",
)
def event_types_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource
                       ) -> dg.SensorResult | dg.SkipReason:
    try:
        plan = load_plan()
        with warehouse.read_live_state() as con:
            reports = event_types(con, plan, utc_now())
    except PlanError as error:
        return dg.SkipReason(str(error))
    except PostgresUnreachable as error:
        return dg.SkipReason(str(error))
    check = plan_check_result(reports)
    return dg.SensorResult(asset_events=[
        dg.AssetObservation(
            asset_key=raw_events.key,
            metadata={f"last_hour/{r.event_type}": dg.MetadataValue.int(r.last_hour)
                      for r in reports},
        ),
        dg.AssetCheckEvaluation(
            asset_key=raw_events.key, check_name=TRACKING_PLAN, passed=bool(check.passed),
            severity=check.severity, description=check.description, metadata=check.metadata,
        ),
    ])
