"""The base of every error SegOps reports to a person as a sentence rather than a traceback."""


class SegOpsError(Exception):
    """An expected failure with a message that says what to do."""
