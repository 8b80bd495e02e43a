"""The `segops` command line, on top of the core, the batch path, the real-time path and the
demo tooling."""
