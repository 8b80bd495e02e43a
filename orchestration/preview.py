"""`segops preview` in the Dagster UI: a job whose run config names the segment or its SQL."""

import dagster as dg

from segops.clock import parse_timestamp, utc_now
from segops.errors import SegOpsError
from segops.preview import resolve_target, run_preview
from segops.settings import Settings


class PreviewConfig(dg.Config):
    """Exactly one of `segment` and `sql`; `at` evaluates at another "now" (RFC 3339)."""

    segment: str | None = None
    sql: str | None = None
    at: str | None = None


def build_preview_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(description="Live reach, overlap and enter/exit diff of a segment, read-only.")
    def segment_preview(context: dg.OpExecutionContext, config: PreviewConfig) -> dg.Output:
        if (config.segment is None) == (config.sql is None):
            raise dg.Failure(description="give `segment` (a name or a .sql path) or `sql`")
        try:
            target = resolve_target(settings, config.segment, config.sql)
            at = parse_timestamp(config.at) if config.at else utc_now()
            result = run_preview(settings, target, at)
        except (SegOpsError, FileNotFoundError) as error:
            raise dg.Failure(description=str(error)) from None
        context.log.info(f"{result.name}: {result.reach} customers ({result.share:.2%})")
        return dg.Output(
            result.to_dict(),
            metadata={
                "preview": dg.MetadataValue.md(result.to_markdown()),
                "reach": dg.MetadataValue.int(result.reach),
                "share": dg.MetadataValue.float(result.share),
                "evaluated_at": result.evaluated_at.isoformat(sep=" "),
            },
        )

    @dg.job(
        name="preview_segment",
        description="Preview a segment before it ships; the result is this run's metadata.",
        executor_def=dg.in_process_executor,
    )
    def preview_job():
        segment_preview()

    return preview_job
