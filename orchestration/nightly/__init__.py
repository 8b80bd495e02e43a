"""The nightly batch: dbt models as assets, one membership asset per segment, the job and its
schedule."""
