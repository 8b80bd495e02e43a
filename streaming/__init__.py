"""The real-time path: Pub/Sub in, validated events stored, real-time segments re-evaluated."""
