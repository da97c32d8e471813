#!/usr/bin/env python3
"""MQTT interoperability checks, run against Prognos and, for comparison, Mosquitto.

The scenarios are those of the Eclipse Paho interoperability suites (client_test.py for
MQTT 3.1.1, client_test5.py for MQTT 5): basic publish/subscribe at every QoS, retained
messages, offline queueing, will messages, overlapping subscriptions, keep-alive expiry,
redelivery on reconnect, zero-length client ids, subscribe failure, `$` topics, unsubscribe,
and for MQTT 5 user properties, the not-authorised reason code, no-local, retain-as-published
and shared subscriptions. This is our own code on paho-mqtt (PyPI); the Paho suites
themselves are not packaged. Keep-alive expiry and redelivery need a client that stops
answering, which paho-mqtt cannot do, so those two speak raw MQTT over a socket.

The broker under test must let an anonymous client publish and subscribe to the test topics
and refuse subscriptions to `nosubscribe` (as the Paho suite's `-s -n nosubscribe` expects).

    python3 scripts/mqtt_interop.py --port 1883 [--port5 1884] [--json out.json]

Prints one line per scenario and exits 0 only when every scenario passed. Every wait is
bounded; the whole run takes about a minute.
"""

import argparse
import json
import socket
import struct
import sys
import threading
import time
import traceback
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
TOPICS = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
WILD = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
NOSUB = "nosubscribe"
WAIT = 5.0


class Client:
    """A paho client that records what arrives, with bounded waits."""

    def __init__(self, port, client_id, version=mqtt.MQTTv311, clean=True):
        self.port = port
        self.version = version
        kwargs = {}
        if version == mqtt.MQTTv311:
            kwargs["clean_session"] = clean
        self.clean = clean
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=version,
            **kwargs,
        )
        self.lock = threading.Lock()
        self.messages = []
        self.subacks = []
        self.unsubacks = []
        self.connack = None
        self.disconnected = threading.Event()
        self.c.on_message = self._message
        self.c.on_subscribe = self._subscribe
        self.c.on_unsubscribe = self._unsubscribe
        self.c.on_connect = self._connect
        self.c.on_disconnect = lambda *a: self.disconnected.set()

    def _message(self, _c, _u, m):
        with self.lock:
            self.messages.append(m)

    def _subscribe(self, _c, _u, mid, reasons, _p):
        with self.lock:
            self.subacks.append((mid, [int(r.value) if hasattr(r, "value") else int(r) for r in reasons]))

    def _unsubscribe(self, _c, _u, mid, reasons, _p):
        with self.lock:
            self.unsubacks.append(mid)

    def _connect(self, _c, _u, flags, reason, _p):
        self.connack = (reason, flags.session_present)

    def connect(self, keepalive=60, will=None, properties=None):
        if will:
            self.c.will_set(*will)
        self.connack = None
        self.disconnected.clear()
        kwargs = {}
        if self.version == mqtt.MQTTv5:
            kwargs["clean_start"] = self.clean
            if properties is not None:
                kwargs["properties"] = properties
        self.c.connect(HOST, self.port, keepalive=keepalive, **kwargs)
        self.c.loop_start()
        wait(lambda: self.connack is not None, "CONNACK")
        if self.connack[0].is_failure:
            raise AssertionError(f"connect refused: {self.connack[0]}")
        return self

    def subscribe(self, filters, **kwargs):
        if self.version == mqtt.MQTTv5:
            # MQTT 5 subscriptions carry options; a bare QoS becomes options with that QoS.
            def opts(f):
                return (f[0], f[1] if isinstance(f[1], mqtt.SubscribeOptions) else mqtt.SubscribeOptions(qos=f[1]))
            filters = [opts(f) for f in filters] if isinstance(filters, list) else opts(filters)
        before = len(self.subacks)
        result, _mid = self.c.subscribe(filters, **kwargs)
        assert result == mqtt.MQTT_ERR_SUCCESS, result
        wait(lambda: len(self.subacks) > before, "SUBACK")
        return self.subacks[-1][1]

    def unsubscribe(self, filters):
        before = len(self.unsubacks)
        self.c.unsubscribe(filters)
        wait(lambda: len(self.unsubacks) > before, "UNSUBACK")

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos > 0:
            info.wait_for_publish(WAIT)
            assert info.is_published(), f"no ack for QoS {qos} publish to {topic}"
        return info

    def disconnect(self):
        self.c.disconnect()
        self.disconnected.wait(WAIT)
        self.c.loop_stop()

    def drop(self):
        """Closes the socket without DISCONNECT (the will fires)."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def count(self):
        with self.lock:
            return len(self.messages)


def wait(predicate, what, limit=WAIT):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def settle(seconds=0.5):
    time.sleep(seconds)


def uid(stem):
    return f"{stem}-{uuid.uuid4().hex[:8]}"


# ---- raw MQTT 3.1.1, for clients that must stop answering ----

def _remaining(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def _string(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def raw_connect(port, client_id, keepalive, clean=True, will=None):
    flags = 0x02 if clean else 0
    payload = _string(client_id)
    if will:
        flags |= 0x04 | (will[2] << 3)
        payload += _string(will[0]) + struct.pack("!H", len(will[1])) + will[1]
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    sock = socket.create_connection((HOST, port), timeout=WAIT)
    sock.sendall(bytes([0x10]) + _remaining(len(body)) + body)
    kind, data = raw_read(sock)
    assert kind == 0x20 and data[1] == 0, f"CONNACK {kind:#x} {data!r}"
    return sock


def raw_read(sock):
    head = _exact(sock, 1)[0]
    mult, n = 1, 0
    while True:
        b = _exact(sock, 1)[0]
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return head, _exact(sock, n)


def _exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def raw_subscribe(sock, pkid, flt, qos):
    body = struct.pack("!H", pkid) + _string(flt) + bytes([qos])
    sock.sendall(bytes([0x82]) + _remaining(len(body)) + body)
    kind, data = raw_read(sock)
    assert kind == 0x90, f"SUBACK expected, got {kind:#x}"
    return data[2:]


# ---- MQTT 3.1.1 scenarios ----

def basic(port, _port5):
    a = Client(port, uid("basic")).connect()
    a.disconnect()
    a.connect()
    assert a.subscribe((TOPICS[0], 2)) == [2]
    for qos in (0, 1, 2):
        a.publish(TOPICS[0], f"qos {qos}".encode(), qos)
    wait(lambda: a.count() == 3, "3 messages")
    got = sorted(m.qos for m in a.messages)
    assert got == [0, 1, 2], f"delivered at QoS {got}, expected the published QoS [0, 1, 2]"
    a.disconnect()
    # A second CONNECT on the same connection is a protocol violation: the server closes it.
    sock = raw_connect(port, uid("twice"), 60)
    body = _string("MQTT") + bytes([4, 2]) + struct.pack("!H", 60) + _string("x")
    sock.sendall(bytes([0x10]) + _remaining(len(body)) + body)
    sock.settimeout(WAIT)
    try:
        closed = sock.recv(1) == b""
    except (ConnectionError, socket.timeout, OSError):
        closed = True
    assert closed, "the server kept a connection that sent CONNECT twice"


def retained(port, _port5):
    a = Client(port, uid("retain")).connect()
    for i, qos in ((1, 0), (2, 1), (3, 2)):
        a.publish(TOPICS[i], f"qos {qos}".encode(), qos, retain=True)
    settle(0.3)
    a.subscribe((WILD[5], 2))
    wait(lambda: a.count() == 3, "3 retained messages")
    assert all(m.retain for m in a.messages)
    a.disconnect()
    b = Client(port, uid("retain")).connect()
    for i, qos in ((1, 0), (2, 1), (3, 2)):
        b.publish(TOPICS[i], b"", qos, retain=True)
    settle(0.3)
    b.subscribe((WILD[5], 2))
    settle(0.5)
    assert b.count() == 0, [m.topic for m in b.messages]
    b.disconnect()


def offline_queueing(port, _port5):
    aid = uid("offline")
    a = Client(port, aid, clean=False).connect()
    a.subscribe((WILD[5], 2))
    a.disconnect()
    b = Client(port, uid("sender")).connect()
    for i, qos in ((1, 0), (2, 1), (3, 2)):
        b.publish(TOPICS[i], f"qos {qos}".encode(), qos)
    b.disconnect()
    a2 = Client(port, aid, clean=False).connect()
    wait(lambda: a2.count() >= 2, "queued messages")
    settle(0.3)
    assert a2.count() in (2, 3), a2.count()
    a2.disconnect()
    Client(port, aid, clean=True).connect().disconnect()


def will_message(port, _port5):
    b = Client(port, uid("will-watch")).connect()
    b.subscribe((TOPICS[2], 2))
    a = Client(port, uid("will")).connect(keepalive=2, will=(TOPICS[2], b"client not disconnected", 1))
    settle(0.2)
    a.drop()
    wait(lambda: b.count() == 1, "the will message", limit=8)
    assert b.messages[0].payload == b"client not disconnected"
    b.disconnect()


def overlapping_subscriptions(port, _port5):
    a = Client(port, uid("overlap")).connect()
    a.subscribe([(WILD[6], 2), (WILD[0], 1)])
    a.publish(TOPICS[3], b"overlapping topic filters", 2)
    wait(lambda: a.count() >= 1, "a message")
    settle(0.5)
    qos = sorted(m.qos for m in a.messages)
    assert qos in ([2], [1, 2]), qos
    a.disconnect()


def keepalive(port, _port5):
    b = Client(port, uid("ka-watch")).connect()
    b.subscribe((TOPICS[4], 2))
    # Keep-alive 2 s and then silence: the server must close it within 1.5 × and fire the will.
    sock = raw_connect(port, uid("ka"), 2, will=(TOPICS[4], b"keepalive expiry", 1))
    started = time.monotonic()
    wait(lambda: b.count() == 1, "the will after keep-alive expiry", limit=15)
    print(f"  keep-alive 2 s: will after {time.monotonic() - started:.1f} s", flush=True)
    sock.close()
    b.disconnect()


def redelivery_on_reconnect(port, _port5):
    bid = uid("redeliver")
    sock = raw_connect(port, bid, 60, clean=False)
    assert raw_subscribe(sock, 1, WILD[6], 2) == b"\x02"
    a = Client(port, uid("sender")).connect()
    a.publish(TOPICS[1], b"qos 1", 1)
    a.publish(TOPICS[3], b"qos 2", 2)
    a.disconnect()
    # Read the two PUBLISHes and never acknowledge them.
    got = [raw_read(sock)[0] & 0xF0 for _ in range(2)]
    assert got == [0x30, 0x30], got
    sock.close()
    settle(0.3)
    again = raw_connect(port, bid, 60, clean=False)
    again.settimeout(WAIT)
    redelivered = []
    for _ in range(2):
        head, _ = raw_read(again)
        redelivered.append(head)
    assert all(h & 0xF0 == 0x30 and h & 0x08 for h in redelivered), [hex(h) for h in redelivered]
    again.close()
    Client(port, bid, clean=True).connect().disconnect()


def zero_length_clientid(port, _port5):
    # paho-mqtt refuses to send this CONNECT itself, so it goes over a raw socket: the server
    # must answer "identifier rejected" (2) or close.
    body = _string("MQTT") + bytes([4, 0]) + struct.pack("!H", 60) + _string("")
    sock = socket.create_connection((HOST, port), timeout=WAIT)
    sock.sendall(bytes([0x10]) + _remaining(len(body)) + body)
    try:
        kind, data = raw_read(sock)
        refused = kind == 0x20 and data[1] != 0
    except (ConnectionError, socket.timeout, OSError):
        refused = True
    sock.close()
    assert refused, "a zero-length client id with a persistent session was accepted"
    Client(port, "", clean=True).connect().disconnect()


def subscribe_failure(port, _port5):
    a = Client(port, uid("subfail")).connect()
    codes = a.subscribe((NOSUB, 2))
    assert codes == [0x80], f"SUBACK {codes}, expected [0x80]"
    # The connection stays usable.
    assert a.subscribe((TOPICS[0], 1)) == [1]
    a.disconnect()


def dollar_topics(port, _port5):
    b = Client(port, uid("dollar")).connect()
    b.subscribe((WILD[5], 2))
    settle(0.5)
    with b.lock:
        b.messages.clear()
    p = Client(port, uid("dollar-pub")).connect()
    try:
        p.publish("$" + TOPICS[1], b"", 1)
    except AssertionError:
        pass  # a server may refuse $ topics; nothing may arrive either way
    settle(0.5)
    assert b.count() == 0, [m.topic for m in b.messages]
    b.disconnect()


def unsubscribe(port, _port5):
    a = Client(port, uid("unsub")).connect()
    a.subscribe([(TOPICS[0], 1), (TOPICS[1], 1)])
    a.unsubscribe(TOPICS[0])
    # Unsubscribing from a filter that was never subscribed still gets its UNSUBACK.
    a.unsubscribe("Never/subscribed")
    a.publish(TOPICS[0], b"gone", 1)
    a.publish(TOPICS[1], b"kept", 1)
    wait(lambda: a.count() >= 1, "the kept subscription's message")
    settle(0.3)
    assert [m.topic for m in a.messages] == [TOPICS[1]], [m.topic for m in a.messages]
    a.disconnect()


# ---- MQTT 5 scenarios ----

def v5_basic_user_properties(_port, port5):
    a = Client(port5, uid("v5"), version=mqtt.MQTTv5).connect()
    a.subscribe((TOPICS[0], 2))
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("site", "plant-1")
    for qos in (0, 1, 2):
        a.publish(TOPICS[0], f"qos {qos}".encode(), qos, properties=props)
    wait(lambda: a.count() == 3, "3 messages")
    got = getattr(a.messages[0].properties, "UserProperty", None)
    assert got == [("site", "plant-1")], got
    a.disconnect()


def v5_subscribe_not_authorized(_port, port5):
    a = Client(port5, uid("v5-deny"), version=mqtt.MQTTv5).connect()
    codes = a.subscribe((NOSUB, 2))
    assert codes[0] >= 0x80, codes
    a.disconnect()


def v5_no_local(_port, port5):
    a = Client(port5, uid("v5-nolocal"), version=mqtt.MQTTv5).connect()
    a.subscribe((TOPICS[0], mqtt.SubscribeOptions(qos=1, noLocal=True)))
    b = Client(port5, uid("v5-other"), version=mqtt.MQTTv5).connect()
    a.publish(TOPICS[0], b"mine", 1)
    b.publish(TOPICS[0], b"theirs", 1)
    wait(lambda: a.count() >= 1, "the other client's message")
    settle(0.3)
    assert [m.payload for m in a.messages] == [b"theirs"], [m.payload for m in a.messages]
    a.disconnect()
    b.disconnect()


def v5_retain_as_published(_port, port5):
    a = Client(port5, uid("v5-rap"), version=mqtt.MQTTv5).connect()
    a.subscribe((TOPICS[2], mqtt.SubscribeOptions(qos=1, retainAsPublished=True)))
    a.publish(TOPICS[2], b"retained", 1, retain=True)
    wait(lambda: a.count() >= 1, "the message")
    assert a.messages[0].retain, "retain flag not kept"
    a.publish(TOPICS[2], b"", 1, retain=True)
    a.disconnect()


def v5_shared_subscription(_port, port5):
    group = uid("g")
    x = Client(port5, uid("v5-share"), version=mqtt.MQTTv5).connect()
    y = Client(port5, uid("v5-share"), version=mqtt.MQTTv5).connect()
    for c in (x, y):
        assert c.subscribe((f"$share/{group}/{TOPICS[3]}", 1))[0] < 0x80
    p = Client(port5, uid("v5-pub"), version=mqtt.MQTTv5).connect()
    for i in range(20):
        p.publish(TOPICS[3], f"{i}".encode(), 1)
    wait(lambda: x.count() + y.count() >= 20, "20 shared messages")
    settle(0.3)
    assert x.count() + y.count() == 20, (x.count(), y.count())
    assert x.count() > 0 and y.count() > 0, (x.count(), y.count())
    for c in (x, y, p):
        c.disconnect()


V311 = [
    basic, retained, offline_queueing, will_message, overlapping_subscriptions, keepalive,
    redelivery_on_reconnect, zero_length_clientid, subscribe_failure, dollar_topics, unsubscribe,
]
V5 = [
    v5_basic_user_properties, v5_subscribe_not_authorized, v5_no_local,
    v5_retain_as_published, v5_shared_subscription,
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="MQTT 3.1.1 port")
    ap.add_argument("--port5", type=int, help="MQTT 5 port (MQTT 5 scenarios skipped without it)")
    ap.add_argument("--name", default="broker", help="label in the output")
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--known-gaps", default="",
                    help="comma-separated scenarios known to fail: reported, not counted in the exit status")
    args = ap.parse_args()
    results = {}
    tests = V311 + (V5 if args.port5 else [])
    for test in tests:
        started = time.monotonic()
        try:
            test(args.port, args.port5)
            outcome, detail = "passed", ""
        except Exception as exc:  # a failed scenario must not stop the others
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        results[test.__name__] = {"outcome": outcome, "detail": detail,
                                  "seconds": round(time.monotonic() - started, 2)}
        print(f"{args.name}: {test.__name__}: {outcome} {detail}".rstrip(), flush=True)
    passed = sum(r["outcome"] == "passed" for r in results.values())
    print(f"{args.name}: {passed}/{len(results)} scenarios passed", flush=True)
    gaps = {g for g in args.known_gaps.split(",") if g}
    unknown = gaps - set(results)
    if unknown:
        print(f"{args.name}: --known-gaps names no scenario: {sorted(unknown)}", flush=True)
        return 2
    for name in sorted(gaps):
        if results[name]["outcome"] == "passed":
            print(f"{args.name}: {name} is listed as a known gap but passed: remove it", flush=True)
    unexpected = [n for n, r in results.items() if r["outcome"] != "passed" and n not in gaps]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"broker": args.name, "passed": passed, "total": len(results),
                       "results": results}, f, indent=2)
    if unexpected:
        print(f"{args.name}: unexpected failures: {unexpected}", flush=True)
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
