"""The one exception the CLI turns into a one-line message (no traceback, non-zero exit)."""


class StudyError(Exception):
    """A problem with the user's input or environment: unknown study, malformed grid,
    unwritable output directory, unreachable scheduler."""
