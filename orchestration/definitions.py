"""The SegOps code location: what `dagster dev -w workspace.yaml` loads."""

from orchestration.build import build_definitions
from segops.settings import load_settings

defs = build_definitions(load_settings())
