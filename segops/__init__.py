"""SegOps core: what the batch and real-time paths share."""
