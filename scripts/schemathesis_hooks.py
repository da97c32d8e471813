"""Schemathesis hooks for scripts/schemathesis.sh: the rules between fields that the OpenAPI
document states in words but JSON Schema cannot express (one bound depends on another field,
or on which source a ticket comes from). Only schema-valid (positive) cases are adjusted, so
that "valid data is accepted" is checked against the real rule; invalid cases are left alone.
Each rule here is also enforced by the server with a 400/422 naming the field."""

from datetime import datetime, timezone

import schemathesis
from schemathesis import GenerationMode


def _to_ms(value):
    """A time parameter (epoch ms, YYYY-MM-DD or RFC 3339) in ms, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1000)


def _int(value):
    """An integer given as a number or (in a query string) as text, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _body(case):
    return case.body if isinstance(case.body, dict) else None


def _apikey(case):
    # A provider key is scoped to a provider.
    b = _body(case)
    if b is not None and b.get("role") == "provider" and b.get("provider_id") is None:
        b["role"] = "admin"


def _ticket(case):
    # `api` (the default) needs a title; `customer_form` a description and contact.
    b = _body(case)
    if b is None:
        return
    if b.get("source") == "customer_form":
        for key, value in (("description", "noise"), ("contact_name", "Ann"), ("contact_phone", "+1 555")):
            if b.get(key) is None:
                b[key] = value
    elif b.get("title") is None:
        b["title"] = "Noise"


def _provider(case):
    # An OEM has no parent; agents and providers need one (the seeded OEM is `oem`).
    b = _body(case)
    if b is None:
        return
    if b.get("kind") == "oem":
        b.pop("parent_id", None)
    elif b.get("parent_id") is None:
        b["parent_id"] = "oem"


def _technician(case):
    # A shift starts before it ends.
    b = _body(case)
    if b is not None and b.get("shift_start_min", 480) >= b.get("shift_end_min", 1020):
        b["shift_start_min"], b["shift_end_min"] = 480, 1020


def _sla(case):
    # The on-site window is at least the response window.
    b = _body(case)
    if b is None:
        return
    onsite, response = _int(b.get("onsite_secs")), _int(b.get("response_secs"))
    if onsite is not None and response is not None and onsite < response:
        b["onsite_secs"] = response


def _transition(case):
    # Assigning names the technician (the seeded one is `t1`).
    b = _body(case)
    if b is not None and b.get("to") == "assigned" and b.get("technician_id") is None:
        b["technician_id"] = "t1"


def _period(case):
    # `from` is not after `to` (which defaults to now).
    q = case.query
    if not isinstance(q, dict) or "from" not in q:
        return
    start = _to_ms(_int(q["from"]) if _int(q["from"]) is not None else q["from"])
    end = _to_ms(_int(q["to"]) if _int(q["to"]) is not None else q["to"]) if "to" in q else int(datetime.now(timezone.utc).timestamp() * 1000)
    if start is not None and end is not None and start > end:
        del q["from"]


def _surges(case):
    # The judged weeks are among the weeks shown.
    q = case.query
    if not isinstance(q, dict):
        return
    recent, weeks = _int(q.get("recent")), _int(q.get("weeks", 12))
    if recent is not None and weeks is not None and recent > weeks:
        q["recent"] = weeks


RULES = {
    ("POST", "/api/v1/apikeys"): [_apikey],
    ("POST", "/api/v1/tickets"): [_ticket],
    ("POST", "/api/v1/providers"): [_provider],
    ("POST", "/api/v1/technicians"): [_technician],
    ("PUT", "/api/v1/sla/policies"): [_sla],
    ("POST", "/api/v1/tickets/{id}/transitions"): [_transition],
    ("GET", "/api/v1/analytics/surges"): [_surges],
}


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return case
    key = (case.operation.method.upper(), case.operation.path)
    for rule in RULES.get(key, []):
        rule(case)
    if case.operation.path.startswith(("/api/v1/analytics/", "/api/v1/telemetry")):
        _period(case)
    return case
