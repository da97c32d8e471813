"""Schemathesis hooks for scripts/schemathesis.sh: the rules between fields that the OpenAPI
document states in words but JSON Schema cannot express (one bound depends on another field,
or on which source a ticket comes from). A generated body or query that breaks such a rule is
mended with valid values (only fields of the right type are touched, so an invalid case keeps
its violation), so that "valid data is accepted" is checked against the real rule, in every
phase (the stateful one too). Each rule is also enforced by the server with a 400/422 naming
the field."""

import re
from datetime import datetime, timezone

ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

import schemathesis


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


def _json_int(value):
    """An integer in a JSON body (2 or 2.0; never text, which would be a type error)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if value == int(value) else None


def _body(case):
    return case.body if isinstance(case.body, dict) else None


class _Case:
    """What the rules look at: the body or the query of one generated request."""

    def __init__(self, body=None, query=None):
        self.body = body
        self.query = query


def _valid_id(value):
    """A schema-valid id (an invalid one is a negative case's violation: left alone)."""
    return isinstance(value, str) and ID.match(value) is not None


def _apikey(case):
    # A provider key needs its provider, a technician key its technician; no other role
    # takes either, and a provider key no technician.
    b = _body(case)
    if b is None:
        return
    role = b.get("role")
    if not isinstance(role, str):
        return
    if role == "provider" and b.get("provider_id") is None:
        b["role"] = role = "admin"
    if role == "technician" and b.get("technician_id") is None:
        b["role"] = role = "admin"
    unbound = {"admin", "scheduler", "engineer"}
    for field in ("provider_id", "technician_id"):
        takes = role == "technician" or (role == "provider" and field == "provider_id")
        if role in unbound | {"provider"} and not takes and _valid_id(b.get(field)):
            b[field] = None


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
    parent = b.get("parent_id")
    if b.get("kind") == "oem":
        # Only a valid id is dropped: an invalid one is the violation of an invalid case.
        if isinstance(parent, str) and ID.match(parent):
            b.pop("parent_id")
    elif b.get("parent_id") is None:
        b["parent_id"] = "oem"


def _technician(case):
    # A shift starts before it ends.
    b = _body(case)
    if b is None:
        return
    start, end = _json_int(b.get("shift_start_min", 480)), _json_int(b.get("shift_end_min", 1020))
    # Mended only when each value is within its own bounds.
    if start is not None and end is not None and 0 <= start <= 1439 and 1 <= end <= 1440 and start >= end:
        b["shift_start_min"], b["shift_end_min"] = 480, 1020


def _sla(case):
    # The on-site window is at least the response window.
    b = _body(case)
    if b is None:
        return
    onsite, response = _json_int(b.get("onsite_secs")), _json_int(b.get("response_secs"))
    valid = lambda v: v is not None and 1 <= v <= 31_536_000  # noqa: E731
    if valid(onsite) and valid(response) and onsite < response:
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
    if recent is not None and weeks is not None and 1 <= weeks < recent <= 520:
        q["recent"] = weeks


def _telemetry(case):
    # A bucket width that would make more than the engine's limit of buckets over the range
    # is refused; the default width (the range over `points`) always fits.
    q = case.query
    if not isinstance(q, dict) or not isinstance(q.get("step"), str):
        return
    step = q["step"].lstrip("0")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(step[-1:], None)
    secs = _int(step[:-1]) * unit if unit and _int(step[:-1]) else _int(step)
    end = _to_ms(_int(q["to"]) if _int(q.get("to")) is not None else q.get("to")) if "to" in q else None
    if end is None:
        end = int(datetime.now(timezone.utc).timestamp() * 1000)
    start = _to_ms(_int(q["from"]) if _int(q.get("from")) is not None else q.get("from")) if "from" in q else None
    if start is None:
        start = end - 86_400_000
    if secs and (end - start) / (secs * 1000) > 1_000_000:
        del q["step"]


RULES = {
    ("GET", "/api/v1/telemetry"): [_telemetry],
    ("POST", "/api/v1/apikeys"): [_apikey],
    ("POST", "/api/v1/tickets"): [_ticket],
    ("POST", "/api/v1/providers"): [_provider],
    ("POST", "/api/v1/technicians"): [_technician],
    ("PUT", "/api/v1/sla/policies"): [_sla],
    ("POST", "/api/v1/tickets/{id}/transitions"): [_transition],
    ("GET", "/api/v1/analytics/surges"): [_surges],
}


def _apply(operation, case):
    if operation is None:
        return
    for rule in RULES.get((operation.method.upper(), operation.path), []):
        rule(case)
    if operation.path.startswith(("/api/v1/analytics/", "/api/v1/telemetry")):
        _period(case)


# The coverage and fuzzing phases pass whole cases through `map_case`; the stateful phase
# draws bodies and queries through `map_body` and `map_query`.
@schemathesis.hook
def map_case(context, case):
    _apply(case.operation, case)
    return case


@schemathesis.hook
def map_body(context, body):
    _apply(context.operation, _Case(body=body))
    return body


@schemathesis.hook
def map_query(context, query):
    _apply(context.operation, _Case(query=query))
    return query
