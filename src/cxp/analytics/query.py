"""The question every analytics service answers: which devices (scope) over which UTC days (window)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from cxp.analytics.errors import InvalidParameter


@dataclass(frozen=True)
class AnalyticsQuery:
    """Scope filters (None = all) and the period `start`/`end` (UTC days, inclusive; None = the service's default).

    Frozen and hashable: the API builds it once per request and its result cache keys on it.
    """

    product: str | None = None
    segment: str | None = None
    account: str | None = None
    device: str | None = None
    # A set of device ids (e.g. the members of one persona); None = no such restriction.
    devices: frozenset[str] | None = None
    start: date | None = None
    end: date | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise InvalidParameter(f"start ({self.start}) is after end ({self.end})")

    @property
    def is_all_devices(self) -> bool:
        """No device filter: every registered device."""
        return (
            self.product is None
            and self.segment is None
            and self.account is None
            and self.device is None
            and self.devices is None
        )

    def ending(self, end: date | None) -> AnalyticsQuery:
        """The same scope over the default period ending `end` (no explicit start)."""
        return replace(self, start=None, end=end)


ALL_DEVICES = AnalyticsQuery()
