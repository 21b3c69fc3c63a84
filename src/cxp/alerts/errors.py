"""The alerts package's one exception root."""

from __future__ import annotations


class AlertError(Exception):
    """Root of every alerts error."""


class RuleInvalid(AlertError):
    """A rule definition or rule set that does not validate."""


class AlertNotFound(AlertError):
    """No alert or rule with that id or name."""


class DeliveryFailed(AlertError):
    """A webhook receiver did not answer 2xx."""
