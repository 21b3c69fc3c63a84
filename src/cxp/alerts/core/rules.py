"""Typed, versioned alert rule definitions and their JSON import/export format."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from cxp.alerts.core.routing import parse_quiet_hours
from cxp.alerts.errors import RuleInvalid

RULESET_FORMAT = "cxp.alerts.rules/v1"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scope(_Strict):
    """Which entities a rule watches; unset fields do not restrict."""

    product_id: str | None = None
    segment: str | None = None
    account_id: str | None = None
    device_id: str | None = None
    touchpoint: str | None = None


class SilenceParams(_Strict):
    """A device not heard from for k × its product's heartbeat interval.

    With `min_share`, the rule watches products instead of devices: it fires for a product when at least that
    share of its activated devices in scope (and at least `min_devices` of them) are silent.
    """

    kind: Literal["silence"] = "silence"
    k: float = Field(default=3.0, gt=0)
    min_share: float | None = Field(default=None, gt=0, le=1)
    min_devices: int = Field(default=1, ge=1)


class TouchpointParams(_Strict):
    """A touchpoint's success rate or latency worse than a threshold or than its own baseline.

    The baseline test is a one-sided two-proportion z-test (pooled) of the window's success rate
    against the preceding `baseline_h` hours', at level `alpha`, and only when the drop is at least
    `min_drop` (a significant but tiny drop is not worth a page).
    """

    kind: Literal["touchpoint"] = "touchpoint"
    window_h: int = Field(default=1, ge=1, le=168)
    min_n: int = Field(default=20, ge=1)
    max_failure_rate: float | None = Field(default=None, gt=0, lt=1)
    max_mean_latency_ms: float | None = Field(default=None, gt=0)
    baseline_h: int = Field(default=0, ge=0, le=24 * 28)
    alpha: float = Field(default=0.001, gt=0, lt=0.5)
    min_drop: float = Field(default=0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _some_test(self) -> TouchpointParams:
        if self.max_failure_rate is None and self.max_mean_latency_ms is None and self.baseline_h == 0:
            raise ValueError("set max_failure_rate, max_mean_latency_ms or baseline_h")
        return self


# Rules computed by the analytics services are evaluated on a cadence, not on every pass: when the period they
# look at changed (a new hour for incidents, a new day for the others) or `every_s` has passed since the last time.


class IncidentParams(_Strict):
    """The disruption detector (analytics disruptions) found an incident that is still open; its recovery clears
    the alert. One alert per product × touchpoint × error code; `alpha` (the binomial test's level against the
    pooled rate), `min_devices`, `min_share` are the detector's."""

    kind: Literal["incident"] = "incident"
    min_devices: int = Field(default=5, ge=1)
    min_share: float = Field(default=0.02, ge=0, le=1)
    alpha: float = Field(default=1e-5, gt=0, lt=1)
    every_s: int = Field(default=3600, ge=60, le=7 * 86400)


class HealthParams(_Strict):
    """A product's, segment's or account's health score (the last whole ISO week) outside its band
    [`min_score`, `max_score`], down `max_weekly_drop` points or more against the week before, or (`band_drop`)
    in a worse health band (green → amber → red) than the week before."""

    kind: Literal["health"] = "health"
    level: Literal["product", "segment", "account", "fleet"] = "product"
    min_score: float | None = Field(default=None, ge=0, le=100)
    max_score: float | None = Field(default=None, ge=0, le=100)
    max_weekly_drop: float | None = Field(default=None, gt=0, le=100)
    band_drop: bool = False
    every_s: int = Field(default=21600, ge=60, le=7 * 86400)

    @model_validator(mode="after")
    def _some_test(self) -> HealthParams:
        if self.min_score is None and self.max_score is None and self.max_weekly_drop is None and not self.band_drop:
            raise ValueError("set min_score, max_score, max_weekly_drop or band_drop")
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise ValueError("min_score must be ≤ max_score")
        return self


class ChurnParams(_Strict):
    """A device enters the top `top_n` of the churn-risk ranking (analytics churn risk), with a risk of at least
    `min_risk`; it clears when the device leaves it."""

    kind: Literal["churn"] = "churn"
    top_n: int = Field(default=20, ge=1, le=10_000)
    min_risk: float = Field(default=0, ge=0, le=100)
    every_s: int = Field(default=21600, ge=60, le=7 * 86400)


class VoiceParams(_Strict):
    """NPS (or CSAT) of the last `period_days` full days fell against the `period_days` before by more than the
    95 % margin of error of the difference, √(margin₁² + margin₂²); both periods need `min_n` answers."""

    kind: Literal["voice"] = "voice"
    measure: Literal["nps", "csat"] = "nps"
    by: Literal["product", "segment", "fleet"] = "product"
    period_days: int = Field(default=28, ge=1, le=366)
    min_n: int = Field(default=30, ge=2)
    every_s: int = Field(default=21600, ge=60, le=7 * 86400)


class PipelineParams(_Strict):
    """A pipeline metric over its limit.

    `dead_letters`: messages dead-lettered in the last `window_s` s; `rollup_backlog`: dirty device-days waiting
    for a refresh; `ingest_lag_ms`: per gateway that reported within `window_s`, its p99 receive → commit latency;
    `gateway_silent_s`: per gateway seen in the last day, seconds since its last stats report.
    """

    kind: Literal["pipeline"] = "pipeline"
    metric: Literal["dead_letters", "rollup_backlog", "ingest_lag_ms", "gateway_silent_s"] = "dead_letters"
    window_s: int = Field(default=300, ge=10)
    max_value: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _silence_limit(self) -> PipelineParams:
        if self.metric == "gateway_silent_s" and self.max_value <= 0:
            raise ValueError("gateway_silent_s needs max_value > 0 (seconds without a stats report)")
        return self


Params = Annotated[
    SilenceParams | TouchpointParams | IncidentParams | HealthParams | ChurnParams | VoiceParams | PipelineParams,
    Field(discriminator="kind"),
]


class _Policy(_Strict):
    """Quiet hours (UTC, `HH:MM-HH:MM`) hold back notifications below `quiet_min_severity`; `max_per_hour` delays
    the rest of a burst. Held notifications are delivered later, in order, never dropped."""

    quiet_hours: str | None = None
    quiet_min_severity: Literal["info", "warning", "critical"] = "critical"
    max_per_hour: int | None = Field(default=None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _quiet_ok(self) -> _Policy:
        if self.quiet_hours is not None:
            try:
                parse_quiet_hours(self.quiet_hours)
            except ValueError as exc:
                raise ValueError(f"quiet_hours: HH:MM-HH:MM in UTC ({exc})") from exc
        return self

    def policy(self) -> dict:
        """The delivery policy stored with each notification."""
        return self.model_dump(include={"quiet_hours", "quiet_min_severity", "max_per_hour"})


class WebhookChannel(_Policy):
    """Where notifications of a rule go; the signing secret is a named file, never part of the rule."""

    url: str = Field(pattern=r"^https?://")
    secret_ref: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    format: Literal["json", "slack"] = "json"


class EmailChannel(_Policy):
    """E-mail notifications to one address through the configured SMTP server."""

    email: str = Field(pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+$", max_length=254)


Channel = WebhookChannel | EmailChannel


class Rule(_Strict):
    """One alert rule; `version` is assigned by the repository (a changed definition is a new version)."""

    name: str
    version: int | None = None
    description: str = ""
    severity: Literal["info", "warning", "critical"] = "warning"
    enabled: bool = True
    scope: Scope = Field(default_factory=Scope)
    params: Params
    hold_down_s: int = Field(default=300, ge=0, le=7 * 86400)
    channels: tuple[Channel, ...] = ()

    @model_validator(mode="after")
    def _name_ok(self) -> Rule:
        if not _NAME.match(self.name):
            raise ValueError("name: lowercase letters, digits, '_', '.', '-' (≤ 64)")
        return self

    @property
    def kind(self) -> str:
        """The rule's type."""
        return self.params.kind

    def definition(self) -> dict:
        """The versioned content: everything but the version itself."""
        return self.model_dump(mode="json", exclude={"version"})


class RuleSet(_Strict):
    """The import/export document."""

    format: Literal["cxp.alerts.rules/v1"] = RULESET_FORMAT
    rules: tuple[Rule, ...]


_RULESET = TypeAdapter(RuleSet)


def parse_ruleset(text: str | bytes) -> RuleSet:
    """A rule set from JSON text, or RuleInvalid naming what is wrong."""
    try:
        ruleset = _RULESET.validate_json(text)
    except ValidationError as exc:
        raise RuleInvalid(_describe(exc)) from exc
    names = [r.name for r in ruleset.rules]
    if len(set(names)) != len(names):
        raise RuleInvalid("rule names must be unique within a rule set")
    return ruleset


def parse_rule(data: dict) -> Rule:
    """One rule from a decoded JSON object."""
    try:
        return Rule.model_validate(data)
    except ValidationError as exc:
        raise RuleInvalid(_describe(exc)) from exc


def dump_ruleset(rules: list[Rule]) -> str:
    """The export document, stable key order."""
    doc = RuleSet(rules=tuple(rules)).model_dump(mode="json")
    return json.dumps(doc, indent=2, sort_keys=True)


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
