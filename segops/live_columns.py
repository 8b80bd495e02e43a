"""The columns the live tables in PostgreSQL and the warehouse (file or lake) have in common:
what every copy between them moves. A module of its own so readers import no driver."""

# table -> the columns both stores have
COPIED = {
    "raw.customers": ("customer_id", "email", "country", "city", "acquisition_channel",
                      "signed_up_at", "traits"),
    "raw.customer_traits": ("customer_id", "trait", "set_at", "value", "source", "recorded_at"),
    "raw.events": ("customer_id", "event_id", "event_type", "occurred_at", "properties",
                   "ingested_at"),
    "segops.segment_membership": ("customer_id", "segment", "entered_at", "source",
                                  "attributes"),
    "segops.segment_membership_changes": ("customer_id", "change_id", "segment", "change",
                                          "changed_at", "source", "attributes", "recorded_at",
                                          "published_at"),
}
