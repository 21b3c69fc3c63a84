"""The simulation of one device-day: a time-ordered queue of actions that emit event records."""

from __future__ import annotations

import heapq
import math
import random
from datetime import UTC, datetime
from typing import Any

from cxp.contract.models import LifecycleStage, Severity
from cxp.device_sim.device_state import ActiveIncident, DeviceContext, DeviceState, Record, usage_multiplier
from cxp.device_sim.fleet import (
    DAY_MS,
    EXCELLENT_RECOVERY_H,
    HOUR_MS,
    PLANTED_ERROR_RATE,
    stable_seed,
    to_ms,
    unit_hash,
)
from cxp.device_sim.kano import (
    CES_PER_CSAT,
    CHURN_LEAD_DAYS,
    CSAT_NEUTRAL_SHIFT,
    FEATURE_SURVEY_PROB,
    HABIT_DECAY,
    NPS_NEUTRAL_SHIFT,
    NPS_PER_CSAT,
    PARADOX_DAYS,
    PARADOX_LIFT,
    PARADOX_MILD_FAILURES,
    PROMPT_PROB,
    churn_hazard,
)
from cxp.device_sim.ladder import CLIMBER_CHURN_FACTOR
from cxp.device_sim.referrals import referral_factor
from cxp.device_sim.specs import Touchpoint, poisson

MINUTE_MS = 60_000
# How much a severity makes a customer reach for support.
_SUPPORT_WEIGHT = {Severity.INFO: 0.0, Severity.WARNING: 0.3, Severity.ERROR: 1.0, Severity.CRITICAL: 2.0}
_SEVERITIES = (Severity.WARNING, Severity.ERROR, Severity.CRITICAL)
_SEVERITY_WEIGHTS = (0.3, 0.6, 0.1)
_CHURN_REASONS = ("not_using", "price", "switched_brand", "moved")


class DeviceDay:
    """The simulation of one device-day: a time-ordered queue of actions that emit records."""

    __slots__ = ("ctx", "st", "rng", "day_start", "day_end", "lo", "heap", "out", "support_today", "used")

    def __init__(self, ctx: DeviceContext, st: DeviceState, day: int) -> None:
        self.ctx = ctx
        self.st = st
        self.rng = random.Random(stable_seed(ctx.fleet.seed, "day", ctx.device.index, day))
        self.day_start = day * DAY_MS
        self.day_end = self.day_start + DAY_MS
        self.lo = max(self.day_start, ctx.t0)
        self.heap: list[tuple[int, int, tuple[Any, ...]]] = []
        self.out: list[Record] = []
        self.support_today = False
        self.used: list[tuple[int, str, bool]] = []

    # -- queue and output ---------------------------------------------------------------------------------

    def push(self, t: int, action: tuple[Any, ...]) -> None:
        st = self.st
        st.order += 1
        # Follow-ups past midnight wait in the carried state for the next day's simulation.
        heapq.heappush(self.heap if t < self.day_end else st.pending, (t, st.order, action))

    def emit(self, t: int, kind: str, fields: dict[str, Any]) -> None:
        d: dict[str, Any] = {"seq": 0, "ts": None, "kind": kind}
        d.update(fields)
        self.emit_dict(t, d)

    def emit_dict(self, t: int, d: dict[str, Any]) -> None:
        """Emit an event dict that already starts with seq, ts and kind keys (the hot path)."""
        st = self.st
        d["seq"] = st.seq
        d["ts"] = datetime.fromtimestamp(t / 1000, UTC)  # from_ms, inlined on the hot path
        st.seq += 1
        self.out.append((t, d))

    # -- the day --------------------------------------------------------------------------------------------

    def run(self) -> list[Record]:
        st = self.st
        if st.stopped:
            return self.out
        for k in st.recent_err:
            st.recent_err[k] *= 0.75
        st.recent_total *= 0.75
        for k in st.recent_ok:
            st.recent_ok[k] *= 0.75
        for k in st.habit:
            st.habit[k] *= HABIT_DECAY
        st.recent_incident *= 0.75
        st.recent_support *= 0.75
        if self.ctx.churn_ms is None:
            self._churn_hazard()
        while st.pending and st.pending[0][0] < self.day_end:
            heapq.heappush(self.heap, heapq.heappop(st.pending))
        hb_t, hb_step = self._schedule()
        heap, day_end = self.heap, self.day_end
        # Heartbeats are most events and perfectly regular, so they merge in from a cursor instead of
        # going through the heap; at equal times the heartbeat goes first.
        while not st.stopped:
            if heap and (hb_t >= day_end or heap[0][0] < hb_t):
                t, _, action = heapq.heappop(heap)
                # A powered-off device reports nothing; cancelling happens in the app, so it still counts.
                if st.outage_from <= t < st.outage_until and action[0] not in ("outage_end", "churn"):
                    continue
                getattr(self, "_do_" + action[0])(t, *action[1:])
            elif hb_t < day_end:
                if not st.outage_from <= hb_t < st.outage_until:
                    self._do_hb(hb_t)
                hb_t += hb_step
            else:
                break
        if st.stopped:
            st.pending.clear()
        return self.out

    def _churn_hazard(self) -> None:
        """Draw today's experience churn: a decision to leave, followed by fading use and the churn itself."""
        ctx, st = self.ctx, self.st
        p, terms = churn_hazard(
            truth=ctx.truth,
            recent_err=st.recent_err,
            habit=st.habit,
            recent_incident=st.recent_incident,
            recent_support=st.recent_support,
            sensitivity=ctx.persona.error_sensitivity * ctx.fleet.experience_churn,
        )
        if ctx.ladder is not None and ctx.ladder.climber:
            p *= CLIMBER_CHURN_FACTOR
        if p <= 0.0 or self.day_start < ctx.t0:
            return
        # Its own RNG, so that a device without failures lives exactly the day it would without the hazard.
        rng = random.Random(stable_seed(ctx.fleet.seed, "hazard", ctx.device.index, self.day_start // DAY_MS))
        if rng.random() >= p:
            return
        lo, hi = CHURN_LEAD_DAYS
        churn_ms = self.day_start + int((lo + (hi - lo) * rng.random()) * DAY_MS)
        # No new churn past the fleet period (timelines may run on past it).
        if churn_ms >= to_ms(ctx.fleet.end):
            return
        ctx.churn_ms = churn_ms
        ctx.decay_start_ms = self.day_start
        ctx.churn_kind = "cancelled" if rng.random() < ctx.persona.cancel_share else "silent"
        ctx.stops_at_churn = ctx.churn_kind == "cancelled"
        ctx.churn_cause = "experience"
        st.churn_drivers = {k: round(v, 5) for k, v in sorted(terms.items(), key=lambda kv: -kv[1])}

    def _schedule(self) -> tuple[int, int]:
        """Queue the day's actions; returns the first heartbeat time and the heartbeat interval."""
        ctx, st, rng = self.ctx, self.st, self.rng
        prod, persona = ctx.product, ctx.persona
        day_start, lo = self.day_start, self.lo
        act = ctx.t0
        if ctx.onboarding and day_start <= act < self.day_end:
            setup = act + int((2 + 18 * rng.random()) * MINUTE_MS)
            self.push(act, ("lifecycle", LifecycleStage.UNBOXED, None))
            self.push(setup, ("lifecycle", LifecycleStage.SETUP, None))
            self.push(setup + int((1 + 9 * rng.random()) * MINUTE_MS), ("pair", 1))

        if rng.random() < ctx.profile.outage_prob_day:
            o_start = day_start + int(rng.random() * DAY_MS)
            o_end = o_start + int((0.5 + 7.5 * rng.random()) * HOUR_MS)
            # No outage on the activation day, so onboarding always completes.
            onboarding_today = ctx.onboarding and day_start <= act < self.day_end
            if o_start >= lo and o_start >= st.outage_until and not onboarding_today:
                st.outage_from, st.outage_until = o_start, o_end
                self.push(o_end, ("outage_end",))

        hb = prod.heartbeat_interval_s * 1000
        phase = int(ctx.profile.heartbeat_phase_s * 1000)
        first_hb = lo + (phase - lo) % hb

        if ctx.churn_ms is not None and ctx.stops_at_churn and day_start <= ctx.churn_ms < self.day_end:
            self.push(max(ctx.churn_ms, lo), ("churn",))

        mult = usage_multiplier(ctx, day_start + DAY_MS // 2)
        weekend = (day_start // DAY_MS + 3) % 7 >= 5
        wk = prod.weekend_factor if weekend else 1.0
        active = mult > 0 and rng.random() < ctx.p_active * min(wk, 1.0) * math.sqrt(mult)
        times: list[int] = []
        if active:
            n = max(1, poisson(rng, prod.uses_per_active_day * persona.uses_factor * wk * math.sqrt(mult)))
            for _ in range(n):
                hour = rng.choices(range(24), cum_weights=ctx.hour_cum)[0]
                ts = day_start + hour * HOUR_MS + int(rng.random() * HOUR_MS)
                tp = rng.choices(ctx.session_tps, cum_weights=ctx.session_cum)[0]
                if ctx.ladder is not None:
                    tp = ctx.ladder.resolve(tp, ts)
                if ts >= lo and (ctx.churn_ms is None or ts < ctx.churn_ms):
                    times.append(ts)
                    self.push(ts, ("use", tp))

        for tp in ctx.periodic:
            if st.next_due[tp.name] >= self.day_end:
                continue
            if tp.reboots:
                ts = day_start + int((2 + 2 * rng.random()) * HOUR_MS)
            elif times:
                ts = times[int(rng.random() * len(times))] + int(rng.random() * 30 * MINUTE_MS)
            else:
                continue
            # Only today: a run spilling past midnight would be scheduled again by tomorrow's plan.
            if lo <= ts < self.day_end and ts >= st.next_due[tp.name]:
                self.push(ts, ("periodic", tp))

        # An in-app feature survey, decided by a hash and drawn from its own RNG like the prompts: the rest of the
        # day is the same with or without it.
        day = day_start // DAY_MS
        if unit_hash(ctx.fleet.seed, "feature", ctx.device.index, day) < FEATURE_SURVEY_PROB and lo < self.day_end:
            frng = random.Random(stable_seed(ctx.fleet.seed, "feature", ctx.device.index, day))
            about = ctx.product.touchpoints[int(frng.random() * len(ctx.product.touchpoints))].name
            self.push(lo + int(frng.random() * (self.day_end - lo)), ("feature_survey", about))

        if times:
            some = times[int(rng.random() * len(times))]
            if rng.random() < persona.plan_change_prob_week / 7 / ctx.p_active:
                self.push(some + int(rng.random() * 10 * MINUTE_MS), ("plan",))
            refer = persona.referral_prob_week / 7 / ctx.p_active
            if ctx.fleet.referral_experience:
                refer *= referral_factor(recent_err=st.recent_err, recent_incident=st.recent_incident)
            if rng.random() < refer:
                self.push(some + int(rng.random() * 20 * MINUTE_MS), ("refer",))
            if rng.random() < persona.survey_prob_week / 7 / ctx.p_active:
                self.push(max(times) + int((2 + 28 * rng.random()) * MINUTE_MS), ("survey", None))
        return first_hb, hb

    # -- actions --------------------------------------------------------------------------------------------

    def _do_hb(self, t: int) -> None:
        ctx, st, rng = self.ctx, self.st, self.rng
        prod = ctx.product
        hours = (t - st.last_meter_ms) / HOUR_MS
        st.last_meter_ms = t
        st.energy_wh += prod.standby_w * hours
        bat = prod.battery
        if bat is not None and st.battery is not None:
            st.battery = max(0.0, st.battery - bat.idle_drain_pct_per_h * hours)
            if st.battery < bat.low_pct:
                if bat.recharge_touchpoint is None and not st.battery_warned:
                    st.battery_warned = True
                    self.emit(t, "error", {"code": "BATTERY_LOW", "severity": Severity.WARNING})
                    self.push(t + int((1 + 6 * rng.random()) * DAY_MS), ("battery_replaced",))
                elif bat.recharge_touchpoint is not None and not st.recharge_pending and usage_multiplier(ctx, t) > 0:
                    st.recharge_pending = True
                    self.push(t + int((10 + 170 * rng.random()) * MINUTE_MS), ("recharge",))
        r = rng.random
        fixed = st.fixed_metrics
        if fixed is None:
            fixed = {name: round(value, 3) for name, value in st.counters.items()}
            fixed.update(st.settings)
            st.fixed_metrics = fixed
        metrics = dict(fixed)
        if prod.gauges:
            # A device beats at the same minutes every day, so the daily cycle is computed once per slot.
            tod = t % DAY_MS
            cycle = ctx.gauge_cycle.get(tod)
            if cycle is None:
                hour = tod / HOUR_MS
                cycle = ctx.gauge_cycle[tod] = tuple(
                    (
                        g.name,
                        g.mean + g.amplitude * math.cos(2 * math.pi * (hour - g.peak_hour) / 24),
                        g.sd * 2.449,
                        g.decimals,
                    )
                    for g in prod.gauges
                )
            for name, level, scale, decimals in cycle:
                # Sum of two uniforms scaled to unit sd: normal-looking noise at a fraction of gauss()'s cost.
                metrics[name] = round(level + scale * (r() + r() - 1.0), decimals)
        signal = ctx.profile.signal_base_dbm + 2.5 * (r() + r() - 1.0) * 2.449
        d: dict[str, Any] = {"seq": 0, "ts": None, "kind": "state"}
        if st.battery is not None:
            d["battery_pct"] = round(st.battery, 2)
        d["signal_dbm"] = round(min(-20.0, max(-120.0, signal)), 1)
        d["uptime_s"] = float((t - st.boot_ms) // 1000)
        d["energy_wh"] = round(st.energy_wh, 2)
        d["metrics"] = metrics
        self.emit_dict(t, d)

    def _use(self, t: int, tp: Touchpoint, *, quantity: float | None = None) -> tuple[bool, str | None]:
        """One use of a touchpoint, with a possible failure; returns (success, error code)."""
        ctx, st, rng = self.ctx, self.st, self.rng
        p = tp.base_error_rate * ctx.profile.error_proneness
        if tp.name == ctx.planted:
            p += PLANTED_ERROR_RATE
        incident = None
        for inc in ctx.incidents.get(tp.name, ()):
            if inc.start_ms <= t < inc.end_ms and inc.inc.error_rate > p:
                incident, p = inc, inc.inc.error_rate
        fail = rng.random() < min(p, 0.95)
        latency = tp.target_latency_ms * ctx.latency_factor * rng.lognormvariate(-0.06, 0.35)
        q = quantity
        if q is None and tp.quantity is not None:
            q = tp.quantity.sample(rng)
        if tp.duration_per_quantity_s and q is not None:
            duration = q * tp.duration_per_quantity_s * rng.lognormvariate(-0.02, 0.2)
        else:
            duration = tp.typical_duration_s * rng.lognormvariate(-0.08, 0.4)
        if fail:
            latency *= 2 + 6 * rng.random()
            duration *= 0.5 * rng.random()
            if q is not None and tp.quantity is not None:
                # A failed use delivers part of the job (a ride cut short, a half cup).
                q = round(q * 0.5 * rng.random(), tp.quantity.decimals)
        # Field order follows the contract model so that a dict payload matches the model's own dump.
        d: dict[str, Any] = {
            "seq": 0,
            "ts": None,
            "kind": "usage",
            "touchpoint": tp.name,
            "duration_s": round(min(duration, 86_400.0), 2),
        }
        if q is not None:
            d["quantity"] = float(q)
            d["unit"] = tp.quantity.unit if tp.quantity else "unit"
        d["success"] = not fail
        d["latency_ms"] = round(min(latency, 3_600_000.0), 1)
        self.emit_dict(t, d)
        st.last_latency_ratio[tp.name] = latency / tp.target_latency_ms
        self.used.append((t, tp.name, fail))
        self._apply_effects(t, tp, q, fail)
        # An in-app prompt after some uses asks about that touchpoint; decided by a hash, so the day's RNG
        # stream (and everything else the device does) is the same with or without the prompt.
        u, prob = unit_hash(ctx.fleet.seed, "prompt", ctx.device.index, t), PROMPT_PROB[fail]
        if u < prob and tp.trigger != "support":
            self.push(t + int((1 + 19 * u / prob) * MINUTE_MS), ("prompt", tp.name))
        if not fail:
            st.recent_ok[tp.name] = st.recent_ok.get(tp.name, 0.0) + 1.0
            return True, None
        if incident is not None:
            st.recent_incident += 1.0
            st.incident_failures[incident.inc.incident_id] = st.incident_failures.get(incident.inc.incident_id, 0) + 1
            st.incident_first_failure.setdefault(incident.inc.incident_id, t)
            code, severity = incident.inc.code, incident.inc.severity
            if incident.inc.incident_id not in st.incident_hits:
                st.incident_hits.add(incident.inc.incident_id)
                self.push(incident.end_ms + int(rng.random() * 10 * MINUTE_MS), ("incident_recovered", incident))
        else:
            code = tp.error_codes[int(rng.random() * len(tp.error_codes))]
            severity = rng.choices(_SEVERITIES, _SEVERITY_WEIGHTS)[0]
            if rng.random() < 0.6:
                self.push(t + 1000 + int(rng.expovariate(1 / 600) * 1000), ("recovered", code, tp.name))
        self.emit(t, "error", {"code": code, "severity": severity, "touchpoint": tp.name})
        st.recent_err[tp.name] = st.recent_err.get(tp.name, 0.0) + 1.0
        st.habit[tp.name] = st.habit.get(tp.name, 0.0) + 1.0
        st.recent_total += 1.0
        if (
            tp.trigger != "support"
            and not self.support_today
            and rng.random() < ctx.persona.support_propensity * _SUPPORT_WEIGHT[severity] * 0.5
        ):
            self.support_today = True
            self.push(t + int((5 + 115 * rng.random()) * MINUTE_MS), ("support", tp.name, code))
        return False, code

    def _apply_effects(self, t: int, tp: Touchpoint, q: float | None, fail: bool) -> None:
        st = self.st
        if q is None and fail:
            return
        amount = 1.0 if q is None else q
        if tp.energy_wh:
            st.energy_wh += tp.energy_wh * amount
        if tp.battery_pct and st.battery is not None:
            st.battery = min(100.0, max(0.0, st.battery + tp.battery_pct * amount))
        for name, per in tp.counters:
            st.counters[name] = st.counters.get(name, 0.0) + per * amount
            st.fixed_metrics = None
        if fail:
            return
        for name in tp.resets:
            st.counters[name] = 0.0
            st.fixed_metrics = None
        if tp.sets and q is not None:
            st.settings[tp.sets] = q
            st.fixed_metrics = None
        if tp.reboots:
            st.boot_ms = t
        bat = self.ctx.product.battery
        if (
            bat is not None
            and bat.recharge_touchpoint is not None
            and st.battery is not None
            and st.battery < bat.low_pct
            and not st.recharge_pending
        ):
            st.recharge_pending = True
            self.push(t + int((20 + 160 * self.rng.random()) * MINUTE_MS), ("recharge",))

    def _do_use(self, t: int, tp: Touchpoint) -> None:
        self._use(t, tp)

    def _do_lifecycle(self, t: int, stage: LifecycleStage, detail: dict[str, str] | None) -> None:
        self.emit(t, "lifecycle", {"stage": stage, "detail": detail or {}})

    def _do_pair(self, t: int, attempt: int) -> None:
        ctx, rng = self.ctx, self.rng
        tp = ctx.tps.get("app_pairing")
        ok = True
        code = None
        if tp is not None and attempt < 4:
            ok, code = self._use(t, tp)
        if ok:
            acc = ctx.fleet.account(ctx.device.account_id)
            detail = {"plan": self.st.plan, "channel": acc.acquisition}
            if acc.referred_by:
                detail["referred_by"] = acc.referred_by
            self.emit(t, "lifecycle", {"stage": LifecycleStage.ACTIVATED, "detail": detail})
        elif attempt < 3:
            self.push(t + int((1 + 4 * rng.random()) * MINUTE_MS), ("pair", attempt + 1))
        else:
            # Three failed tries: the customer calls support, which gets the device paired.
            self.push(t + int((5 + 25 * rng.random()) * MINUTE_MS), ("support", "app_pairing", code or "PAIRING"))
            self.push(t + int((40 + 40 * rng.random()) * MINUTE_MS), ("pair", 4))

    def _do_periodic(self, t: int, tp: Touchpoint) -> None:
        ok, _ = self._use(t, tp)
        period = tp.period_days * DAY_MS
        self.st.next_due[tp.name] = t + (int(period * (0.9 + 0.2 * self.rng.random())) if ok else DAY_MS // 2)

    def _do_plan(self, t: int) -> None:
        ctx, st, rng = self.ctx, self.st, self.rng
        tp = ctx.tps.get("plan_checkout")
        if tp is not None and not self._use(t, tp)[0]:
            return
        plans = ctx.product.plans
        if len(plans) < 2:
            return
        i = plans.index(st.plan) if st.plan in plans else 0
        up = rng.random() < ctx.persona.upgrade_share
        j = i + 1 if (up and i + 1 < len(plans)) or i == 0 else i - 1
        self.emit(t, "lifecycle", {"stage": LifecycleStage.PLAN_CHANGED, "detail": {"from": st.plan, "to": plans[j]}})
        st.plan = plans[j]

    def _do_refer(self, t: int) -> None:
        tp = self.ctx.tps.get("referral_share")
        if tp is not None and not self._use(t, tp)[0]:
            return
        self.emit(t, "lifecycle", {"stage": LifecycleStage.REFERRED, "detail": {"via": "referral_share"}})

    def _do_support(self, t: int, about: str, code: str) -> None:
        tp = self.ctx.tps.get("support_chat")
        self.st.recent_support += 1.0
        if tp is not None:
            self._use(t, tp)
        self.emit(
            t, "lifecycle", {"stage": LifecycleStage.SUPPORT_CONTACTED, "detail": {"touchpoint": about, "code": code}}
        )
        if self.rng.random() < 0.5:
            self.push(t + int((5 + 55 * self.rng.random()) * MINUTE_MS), ("survey", "support_chat"))

    def _do_recharge(self, t: int) -> None:
        ctx, st = self.ctx, self.st
        st.recharge_pending = False
        bat = ctx.product.battery
        tp = ctx.tps.get(bat.recharge_touchpoint) if bat and bat.recharge_touchpoint else None
        if tp is None or st.battery is None:
            return
        full_kwh = tp.quantity.mean if tp.quantity else 0.5
        ok, _ = self._use(t, tp, quantity=round((100.0 - st.battery) / 100.0 * full_kwh, 3))
        if ok:
            st.battery = 100.0

    def _do_battery_replaced(self, t: int) -> None:
        self.st.battery = 100.0
        self.st.battery_warned = False
        self.emit(t, "recovery", {"code": "BATTERY_LOW"})

    def _do_recovered(self, t: int, code: str, touchpoint: str) -> None:
        self.emit(t, "recovery", {"code": code, "touchpoint": touchpoint})

    def _do_incident_recovered(self, t: int, incident: ActiveIncident) -> None:
        st, inc = self.st, incident.inc
        st.incident_hits.discard(inc.incident_id)
        mild = st.incident_failures.get(inc.incident_id, 0) <= PARADOX_MILD_FAILURES
        # the customer's own outage: from its first failure in the incident to its recovery
        excellent = t - st.incident_first_failure.get(inc.incident_id, t) <= EXCELLENT_RECOVERY_H * HOUR_MS
        if self.ctx.fleet.recovery_paradox and excellent and mild:
            st.paradox_until = max(st.paradox_until, t + PARADOX_DAYS * DAY_MS)
            st.paradox_lifts += 1
        self.emit(t, "recovery", {"code": incident.inc.code, "touchpoint": incident.inc.touchpoint})

    def _do_outage_end(self, t: int) -> None:
        self.st.boot_ms = t
        self.emit(t, "error", {"code": "POWER_LOSS", "severity": Severity.WARNING})

    def _do_churn(self, t: int) -> None:
        ctx, st, rng = self.ctx, self.st, self.rng
        stage = LifecycleStage.RETURNED if ctx.churn_kind == "returned" else LifecycleStage.CANCELLED
        reason = "reliability" if st.recent_total > 1.5 else _CHURN_REASONS[int(rng.random() * len(_CHURN_REASONS))]
        self.emit(t, "lifecycle", {"stage": stage, "detail": {"reason": reason}})
        st.stopped = True

    def _do_feature_survey(self, t: int, about: str) -> None:
        self._do_survey(t, about, random.Random(stable_seed(self.ctx.fleet.seed, "feature", self.ctx.device.index, t)))

    def _do_prompt(self, t: int, about: str) -> None:
        self._do_survey(t, about, random.Random(stable_seed(self.ctx.fleet.seed, "prompt", self.ctx.device.index, t)))

    def _do_survey(self, t: int, about: str | None, rng: random.Random | None = None) -> None:
        ctx, st = self.ctx, self.st
        rng = rng or self.rng
        persona = ctx.persona
        if ctx.churn_ms is not None and t >= ctx.churn_ms:
            return
        drift = 3.0 * (1.0 - usage_multiplier(ctx, t))
        # the planted recovery paradox lifts satisfaction for a while after an excellent recovery
        lift = PARADOX_LIFT if t < st.paradox_until else 0.0
        if about is None and self.used and rng.random() < 0.6:
            # Transactional survey about the latest thing the customer did.
            about = self.used[-1][1]
        sens = persona.error_sensitivity
        if about is None:
            nps_mean = persona.nps_mean + self._relationship_effect() + NPS_PER_CSAT * lift - drift
            nps = round(rng.gauss(nps_mean, persona.nps_sd))
            self.emit(t, "feedback", {"nps": min(10, max(0, nps))})
            return
        effect, failed = self._touchpoint_effect(about)
        # A slow success costs effort; a failure's latency is part of the failure's planted penalty.
        slow = 0.0 if failed else max(0.0, math.log2(max(st.last_latency_ratio.get(about, 1.0), 1e-9)))
        csat = round(rng.gauss(persona.csat_mean + effect + lift - 0.3 * slow - 0.3 * drift, persona.csat_sd))
        tp = ctx.tps.get(about)
        ces = None
        if tp is not None and (tp.category in ("app", "service") or rng.random() < 0.4):
            ces_effect = CES_PER_CSAT * (effect + lift + CSAT_NEUTRAL_SHIFT) - CSAT_NEUTRAL_SHIFT
            ces = round(rng.gauss(persona.ces_mean + ces_effect - 0.6 * sens * slow - 0.3 * drift, persona.ces_sd))
        fields: dict[str, Any] = {}
        if rng.random() < 0.2:
            nps_mean = persona.nps_mean + self._relationship_effect() + NPS_PER_CSAT * lift - drift
            fields["nps"] = min(10, max(0, round(rng.gauss(nps_mean, persona.nps_sd))))
        fields["csat"] = min(5, max(1, csat))
        if ces is not None:
            fields["ces"] = min(7, max(1, ces))
        fields["touchpoint"] = about
        self.emit(t, "feedback", fields)

    def _touchpoint_effect(self, about: str) -> tuple[float, bool]:
        """CSAT shift of a survey about a touchpoint (its planted reward or penalty); whether its last use failed."""
        ctx, st = self.ctx, self.st
        tt = ctx.truth.get(about)
        last = next((failed for _, name, failed in reversed(self.used) if name == about), None)
        if tt is None:
            return -CSAT_NEUTRAL_SHIFT, last is True
        sens = ctx.persona.error_sensitivity
        # Earlier failures at this touchpoint (decaying 25 %/day) still weigh, less than today's.
        earlier = 0.5 * min(st.recent_err.get(about, 0.0) - (1.0 if last else 0.0), 4.0)
        effect = -sens * tt.fail_penalty * (float(last is True) + max(earlier, 0.0))
        if last is False:
            effect += tt.success_reward
        return effect - CSAT_NEUTRAL_SHIFT, last is True

    def _relationship_effect(self) -> float:
        """NPS shift of a relationship question: the planted effects of what the customer lived recently."""
        ctx, st = self.ctx, self.st
        sens = ctx.persona.error_sensitivity
        effect = 0.0
        for name, tt in ctx.truth.items():
            effect += tt.success_reward * min(st.recent_ok.get(name, 0.0), 1.0)
            effect -= sens * tt.fail_penalty * 0.5 * min(st.recent_err.get(name, 0.0), 4.0)
        return NPS_PER_CSAT * effect - NPS_NEUTRAL_SHIFT
