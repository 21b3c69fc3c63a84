"""The analytics package's exceptions."""


class AnalyticsError(ValueError):
    """Root of analytics errors: a question that cannot be answered as asked (the caller's input)."""
