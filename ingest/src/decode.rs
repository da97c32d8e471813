//! Topic and payload decoding: what a device sent → points, or a reason to dead-letter it.
//!
//! Topics: `prognos/v1/{device_id}/telemetry` (JSON object or array of objects),
//! `prognos/v1/{device_id}/senml` (RFC 8428 SenML JSON), `prognos/v1/{device_id}/status`.
//! A message is accepted whole or rejected whole: a half-stored message would be harder to
//! reason about than a dead letter that can be replayed after a fix.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use serde_json::Value;

/// Why a message went to the dead-letter store. The `as_str` names are the metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    UnknownTopic,
    Oversized,
    MalformedJson,
    BadShape,
    NonFinite,
    BadValue,
    BadMetricName,
    BadTimestamp,
    TimestampFuture,
    TimestampPast,
    Empty,
    /// The device used more distinct metric names than `Limits::max_metrics_per_device`.
    TooManyMetrics,
    /// `Limits::max_devices_tracked` devices are tracked already; a new one is not.
    TooManyDevices,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::UnknownTopic,
        Reason::Oversized,
        Reason::MalformedJson,
        Reason::BadShape,
        Reason::NonFinite,
        Reason::BadValue,
        Reason::BadMetricName,
        Reason::BadTimestamp,
        Reason::TimestampFuture,
        Reason::TimestampPast,
        Reason::Empty,
        Reason::TooManyMetrics,
        Reason::TooManyDevices,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownTopic => "unknown_topic",
            Reason::Oversized => "oversized",
            Reason::MalformedJson => "malformed_json",
            Reason::BadShape => "bad_shape",
            Reason::NonFinite => "non_finite",
            Reason::BadValue => "bad_value",
            Reason::BadMetricName => "bad_metric_name",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::TimestampFuture => "timestamp_future",
            Reason::TimestampPast => "timestamp_past",
            Reason::Empty => "empty",
            Reason::TooManyMetrics => "too_many_metrics",
            Reason::TooManyDevices => "too_many_devices",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

fn reject(reason: Reason, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// What a topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Telemetry,
    Senml,
    Status,
}

/// Splits `prognos/v1/{device}/{kind}`.
pub fn parse_topic(topic: &[u8]) -> Result<(&str, TopicKind), Rejection> {
    let topic = std::str::from_utf8(topic)
        .map_err(|_| reject(Reason::UnknownTopic, "topic is not UTF-8"))?;
    let mut parts = topic.split('/');
    let (Some("prognos"), Some("v1"), Some(device), Some(kind), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(reject(
            Reason::UnknownTopic,
            format!("unknown topic {topic:?}"),
        ));
    };
    if !is_valid_device_id(device) {
        return Err(reject(
            Reason::UnknownTopic,
            format!("bad device id in {topic:?}"),
        ));
    }
    let kind = match kind {
        "telemetry" => TopicKind::Telemetry,
        "senml" => TopicKind::Senml,
        "status" => TopicKind::Status,
        _ => {
            return Err(reject(
                Reason::UnknownTopic,
                format!("unknown topic {topic:?}"),
            ));
        }
    };
    Ok((device, kind))
}

fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn is_valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
}

/// One decoded sample.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPoint {
    pub metric: String,
    pub ts_us: i64,
    pub value: f64,
}

/// A decoded message: its points and, when the device numbered it, its sequence number.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    pub points: Vec<DecodedPoint>,
    pub seq: Option<u64>,
}

/// Bounds on what the decoder accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload_bytes: usize,
    /// How far ahead of the receive time a timestamp may be (clock skew).
    pub max_future_us: i64,
    /// How far behind the receive time a timestamp may be (store-and-forward backlog).
    pub max_past_us: i64,
    /// Distinct metric names one device may use (each is a series kept forever).
    pub max_metrics_per_device: usize,
    /// Devices whose metric names [`MetricNames`] tracks; bounds its memory together with
    /// `max_metrics_per_device` (about 16 bytes a name).
    pub max_devices_tracked: usize,
}

impl Default for Limits {
    fn default() -> Self {
        const DAY_US: i64 = 86_400_000_000;
        Limits {
            max_payload_bytes: 256 * 1024,
            max_future_us: 3_600_000_000,
            max_past_us: 400 * DAY_US,
            max_metrics_per_device: 1000,
            max_devices_tracked: 100_000,
        }
    }
}

/// The metric names each device has used, so that one device cannot create series without
/// bound (every name is a series in the data set and in the models). Names are kept as
/// 64-bit hashes under a key drawn at start (a device cannot aim collisions at it), so
/// memory is about 16 bytes a name: at most `max_devices_tracked × max_metrics_per_device`.
///
/// Not persisted: after a restart a device may again introduce up to the limit of names
/// it has not used since the start.
#[derive(Debug, Default)]
pub struct MetricNames {
    devices: HashMap<String, HashSet<u64>>,
    hasher: RandomState,
}

impl MetricNames {
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits a message's points whole or rejects it whole: every name it uses must be
    /// known for the device or fit within the device's limit.
    pub fn admit(
        &mut self,
        device: &str,
        points: &[DecodedPoint],
        limits: &Limits,
    ) -> Result<(), Rejection> {
        if !self.devices.contains_key(device) && self.devices.len() >= limits.max_devices_tracked {
            return Err(reject(
                Reason::TooManyDevices,
                format!(
                    "metric names of {} devices are tracked already (ingest.max_devices_tracked)",
                    self.devices.len()
                ),
            ));
        }
        let known = self.devices.entry(device.to_owned()).or_default();
        let mut new: Vec<u64> = points
            .iter()
            .map(|p| self.hasher.hash_one(p.metric.as_str()))
            .filter(|h| !known.contains(h))
            .collect();
        new.sort_unstable();
        new.dedup();
        if known.len() + new.len() > limits.max_metrics_per_device {
            let used = known.len();
            if used == 0 {
                // Nothing admitted: do not keep an empty entry that would hold a device slot.
                self.devices.remove(device);
            }
            return Err(reject(
                Reason::TooManyMetrics,
                format!(
                    "device uses {used} metric names and this message brings {} new ones; at most {} (ingest.max_metrics_per_device)",
                    new.len(),
                    limits.max_metrics_per_device
                ),
            ));
        }
        known.extend(new);
        Ok(())
    }

    /// Devices tracked.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Names tracked for `device`.
    pub fn names(&self, device: &str) -> usize {
        self.devices.get(device).map_or(0, HashSet::len)
    }
}

/// Decodes a telemetry or SenML payload received at `now_us` (µs since the Unix epoch).
pub fn decode_payload(
    kind: TopicKind,
    payload: &[u8],
    now_us: i64,
    limits: &Limits,
) -> Result<Decoded, Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(reject(
            Reason::Oversized,
            format!(
                "payload of {} bytes exceeds {}",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    // Status is free text (`online` / `offline`, a device's last will): nothing to store.
    if kind == TopicKind::Status {
        return Ok(Decoded::default());
    }
    let value: Value = serde_json::from_slice(payload).map_err(|e| json_error(payload, e))?;
    let decoded = match kind {
        TopicKind::Senml => decode_senml(&value, now_us)?,
        _ => decode_telemetry(&value, now_us)?,
    };
    if decoded.points.is_empty() {
        return Err(reject(Reason::Empty, "no metrics in message"));
    }
    for point in &decoded.points {
        if point.ts_us > now_us.saturating_add(limits.max_future_us) {
            return Err(reject(
                Reason::TimestampFuture,
                format!("timestamp {} µs is too far in the future", point.ts_us),
            ));
        }
        if point.ts_us < now_us.saturating_sub(limits.max_past_us) {
            return Err(reject(
                Reason::TimestampPast,
                format!("timestamp {} µs is too far in the past", point.ts_us),
            ));
        }
    }
    Ok(decoded)
}

fn json_error(payload: &[u8], e: serde_json::Error) -> Rejection {
    let text = e.to_string();
    // JSON has no NaN or Infinity; devices that print them anyway, or overflow a double,
    // fail to parse. Name that cause instead of a generic syntax error.
    let lossy = String::from_utf8_lossy(payload);
    if text.contains("number out of range") || lossy.contains("NaN") || lossy.contains("Infinity") {
        reject(Reason::NonFinite, text)
    } else {
        reject(Reason::MalformedJson, text)
    }
}

fn decode_telemetry(value: &Value, now_us: i64) -> Result<Decoded, Rejection> {
    let mut decoded = Decoded::default();
    match value {
        Value::Object(_) => decode_telemetry_object(value, now_us, &mut decoded)?,
        Value::Array(items) => {
            for item in items {
                decode_telemetry_object(item, now_us, &mut decoded)?;
            }
        }
        _ => {
            return Err(reject(
                Reason::BadShape,
                "telemetry must be a JSON object or an array of objects",
            ));
        }
    }
    Ok(decoded)
}

fn decode_telemetry_object(
    value: &Value,
    now_us: i64,
    decoded: &mut Decoded,
) -> Result<(), Rejection> {
    let Value::Object(object) = value else {
        return Err(reject(Reason::BadShape, "array items must be objects"));
    };
    let ts_us = match object.get("ts") {
        None | Some(Value::Null) => now_us,
        Some(ts) => parse_ts(ts)?,
    };
    if let Some(seq) = object.get("seq") {
        match seq.as_u64() {
            Some(seq) => decoded.seq = Some(decoded.seq.map_or(seq, |s| s.max(seq))),
            None if seq.is_null() => {}
            None => {
                return Err(reject(
                    Reason::BadShape,
                    "\"seq\" must be an unsigned integer",
                ));
            }
        }
    }
    let Some(Value::Object(metrics)) = object.get("metrics") else {
        return Err(reject(Reason::BadShape, "missing \"metrics\" object"));
    };
    for (name, v) in metrics {
        if !is_valid_metric_name(name) {
            return Err(reject(
                Reason::BadMetricName,
                format!("metric name {name:?} is invalid"),
            ));
        }
        let value = metric_value(name, v)?;
        decoded.points.push(DecodedPoint {
            metric: name.clone(),
            ts_us,
            value,
        });
    }
    Ok(())
}

fn metric_value(name: &str, v: &Value) -> Result<f64, Rejection> {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(reject(
                Reason::NonFinite,
                format!("metric {name:?} is not finite"),
            )),
        },
        Value::String(s)
            if matches!(
                s.to_ascii_lowercase().as_str(),
                "nan" | "inf" | "-inf" | "infinity" | "-infinity" | "+inf"
            ) =>
        {
            Err(reject(
                Reason::NonFinite,
                format!("metric {name:?} is {s:?}"),
            ))
        }
        other => Err(reject(
            Reason::BadValue,
            format!("metric {name:?} is not a number: {other}"),
        )),
    }
}

/// `ts` is RFC 3339 text or epoch milliseconds.
fn parse_ts(ts: &Value) -> Result<i64, Rejection> {
    match ts {
        Value::Number(n) => {
            let ms = n
                .as_f64()
                .filter(|ms| ms.is_finite())
                .ok_or_else(|| reject(Reason::BadTimestamp, format!("bad ts {n}")))?;
            let us = ms * 1000.0;
            if us.abs() > 9.0e18 {
                return Err(reject(Reason::BadTimestamp, format!("ts {n} out of range")));
            }
            Ok(us.round() as i64)
        }
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_micros())
            .map_err(|e| reject(Reason::BadTimestamp, format!("ts {s:?}: {e}"))),
        other => Err(reject(Reason::BadTimestamp, format!("bad ts {other}"))),
    }
}

/// RFC 8428 §4.5.3: times below 2^28 s are relative to now.
const SENML_RELATIVE_LIMIT_S: f64 = 268_435_456.0;

fn decode_senml(value: &Value, now_us: i64) -> Result<Decoded, Rejection> {
    let Value::Array(records) = value else {
        return Err(reject(
            Reason::BadShape,
            "SenML must be a JSON array of records",
        ));
    };
    let mut decoded = Decoded::default();
    let mut base_name = String::new();
    let mut base_time = 0.0f64;
    let mut base_value = 0.0f64;
    for record in records {
        let Value::Object(record) = record else {
            return Err(reject(Reason::BadShape, "SenML records must be objects"));
        };
        if let Some(bn) = record.get("bn") {
            base_name = bn
                .as_str()
                .ok_or_else(|| reject(Reason::BadShape, "\"bn\" must be a string"))?
                .to_owned();
        }
        if let Some(bt) = record.get("bt") {
            base_time = senml_number(bt, "bt")?;
        }
        if let Some(bv) = record.get("bv") {
            base_value = senml_number(bv, "bv")?;
        }
        let name = match record.get("n") {
            Some(Value::String(n)) => format!("{base_name}{n}"),
            Some(_) => return Err(reject(Reason::BadShape, "\"n\" must be a string")),
            None => base_name.clone(),
        };
        let value = match record.get("v") {
            Some(v) => base_value + metric_value(&name, v)?,
            None => {
                if record.contains_key("vs")
                    || record.contains_key("vb")
                    || record.contains_key("vd")
                {
                    return Err(reject(
                        Reason::BadValue,
                        format!("SenML record {name:?} has a non-numeric value"),
                    ));
                }
                // A record with only base fields carries no measurement.
                if record.contains_key("n") {
                    return Err(reject(
                        Reason::BadValue,
                        format!("SenML record {name:?} has no value"),
                    ));
                }
                continue;
            }
        };
        if !is_valid_metric_name(&name) {
            return Err(reject(
                Reason::BadMetricName,
                format!("metric name {name:?} is invalid"),
            ));
        }
        let t = match record.get("t") {
            Some(t) => senml_number(t, "t")?,
            None => 0.0,
        } + base_time;
        let ts_us = if t.abs() < SENML_RELATIVE_LIMIT_S {
            // Checked: a receive time near the end of the i64 range must not overflow.
            now_us
                .checked_add((t * 1e6).round() as i64)
                .ok_or_else(|| {
                    reject(
                        Reason::BadTimestamp,
                        format!("SenML time {t} s relative to {now_us} µs is out of range"),
                    )
                })?
        } else if (t * 1e6).abs() < 9.0e18 {
            (t * 1e6).round() as i64
        } else {
            return Err(reject(
                Reason::BadTimestamp,
                format!("SenML time {t} out of range"),
            ));
        };
        if !value.is_finite() {
            return Err(reject(
                Reason::NonFinite,
                format!("metric {name:?} is not finite"),
            ));
        }
        decoded.points.push(DecodedPoint {
            metric: name,
            ts_us,
            value,
        });
    }
    Ok(decoded)
}

fn senml_number(v: &Value, field: &str) -> Result<f64, Rejection> {
    v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
        reject(
            Reason::BadShape,
            format!("SenML \"{field}\" must be a finite number"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000_000;

    fn points(names: &[&str]) -> Vec<DecodedPoint> {
        names
            .iter()
            .map(|n| DecodedPoint {
                metric: (*n).to_owned(),
                ts_us: NOW,
                value: 1.0,
            })
            .collect()
    }

    #[test]
    fn metric_names_are_bounded_per_device_and_in_devices() {
        let limits = Limits {
            max_metrics_per_device: 3,
            max_devices_tracked: 2,
            ..Limits::default()
        };
        let mut names = MetricNames::new();
        names.admit("d1", &points(&["a", "b"]), &limits).unwrap();
        // Known names never count twice; one new one still fits.
        names
            .admit("d1", &points(&["a", "b", "b", "c"]), &limits)
            .unwrap();
        let err = names
            .admit("d1", &points(&["a", "d"]), &limits)
            .unwrap_err();
        assert_eq!(err.reason, Reason::TooManyMetrics);
        // Rejected whole: "d" was not recorded, the known names still pass.
        assert_eq!(names.names("d1"), 3);
        names.admit("d1", &points(&["c"]), &limits).unwrap();
        // Another device has its own budget.
        names
            .admit("d2", &points(&["x", "y", "z"]), &limits)
            .unwrap();
        let err = names.admit("d3", &points(&["a"]), &limits).unwrap_err();
        assert_eq!(err.reason, Reason::TooManyDevices);
        assert_eq!(names.devices(), 2);
        // A first message too wide for the limit takes no device slot.
        let mut names = MetricNames::new();
        let err = names
            .admit("d1", &points(&["a", "b", "c", "d"]), &limits)
            .unwrap_err();
        assert_eq!(err.reason, Reason::TooManyMetrics);
        assert_eq!(names.devices(), 0);
    }

    fn telemetry(payload: &str) -> Result<Decoded, Rejection> {
        decode_payload(
            TopicKind::Telemetry,
            payload.as_bytes(),
            NOW,
            &Limits::default(),
        )
    }

    #[test]
    fn topics() {
        assert_eq!(
            parse_topic(b"prognos/v1/pump-1/telemetry").unwrap(),
            ("pump-1", TopicKind::Telemetry)
        );
        assert_eq!(
            parse_topic(b"prognos/v1/p/senml").unwrap().1,
            TopicKind::Senml
        );
        for bad in [
            &b"prognos/v1/p"[..],
            b"prognos/v1/p/other",
            b"prognos/v2/p/telemetry",
            b"prognos/v1/p/telemetry/x",
            b"prognos/v1//telemetry",
            b"\xff",
        ] {
            assert_eq!(parse_topic(bad).unwrap_err().reason, Reason::UnknownTopic);
        }
    }

    #[test]
    fn object_and_array_forms() {
        let d = telemetry(r#"{"ts": 1764000000000, "seq": 7, "metrics": {"a": 1.5, "b": -2}}"#)
            .unwrap();
        assert_eq!(d.seq, Some(7));
        assert_eq!(d.points.len(), 2);
        assert_eq!(d.points[0].ts_us, 1_764_000_000_000_000);
        let d = telemetry(
            r#"[{"ts": "2025-11-24T16:00:00Z", "metrics": {"a": 1}}, {"metrics": {"a": 2}}]"#,
        )
        .unwrap();
        assert_eq!(d.points[0].ts_us, 1_764_000_000_000_000);
        assert_eq!(d.points[1].ts_us, NOW);
    }

    #[test]
    fn each_bad_input_class_has_its_reason() {
        let cases = [
            ("{not json", Reason::MalformedJson),
            (r#"{"metrics": {"a": NaN}}"#, Reason::NonFinite),
            (r#"{"metrics": {"a": 1e999}}"#, Reason::NonFinite),
            (r#"{"metrics": {"a": "NaN"}}"#, Reason::NonFinite),
            (r#"{"metrics": {"a": "high"}}"#, Reason::BadValue),
            (r#"{"metrics": {"a b": 1}}"#, Reason::BadMetricName),
            (
                r#"{"ts": "yesterday", "metrics": {"a": 1}}"#,
                Reason::BadTimestamp,
            ),
            (
                r#"{"ts": 4102444800000, "metrics": {"a": 1}}"#,
                Reason::TimestampFuture,
            ),
            (r#"{"ts": 0, "metrics": {"a": 1}}"#, Reason::TimestampPast),
            (r#"{"metrics": {}}"#, Reason::Empty),
            (r#"{"values": {"a": 1}}"#, Reason::BadShape),
            ("42", Reason::BadShape),
        ];
        for (payload, reason) in cases {
            assert_eq!(telemetry(payload).unwrap_err().reason, reason, "{payload}");
        }
        let big = format!(
            r#"{{"metrics": {{"a": 1}}, "pad": "{}"}}"#,
            "x".repeat(300_000)
        );
        assert_eq!(telemetry(&big).unwrap_err().reason, Reason::Oversized);
    }

    /// Found by tests/decode_properties.rs: without serde_json's `float_roundtrip` this value
    /// was stored one ULP off; a relative SenML time at a receive time near i64::MAX
    /// overflowed (a panic in debug builds).
    #[test]
    fn values_round_trip_exactly_and_relative_time_cannot_overflow() {
        let x = -3.378194033311277e141f64;
        let d = telemetry(&format!(r#"{{"metrics": {{"a": {x:?}}}}}"#)).unwrap();
        assert_eq!(d.points[0].value.to_bits(), x.to_bits());
        let senml = br#"[{"n": "a", "v": 1, "t": 10}]"#;
        let r = decode_payload(TopicKind::Senml, senml, i64::MAX - 5, &Limits::default());
        assert_eq!(r.unwrap_err().reason, Reason::BadTimestamp);
    }

    #[test]
    fn senml_resolves_base_fields_and_relative_time() {
        let payload = r#"[{"bn": "motor:", "bt": 1764000000, "n": "temp", "v": 40.5},
                          {"n": "current", "v": 3, "t": 1},
                          {"n": "rel", "v": 1, "bt": -5}]"#;
        let d = decode_payload(
            TopicKind::Senml,
            payload.as_bytes(),
            NOW,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(d.points[0].metric, "motor:temp");
        assert_eq!(d.points[0].ts_us, 1_764_000_000_000_000);
        assert_eq!(d.points[1].ts_us, 1_764_000_001_000_000);
        assert_eq!(d.points[2].ts_us, NOW - 5_000_000);
        let bad = r#"[{"n": "s", "vs": "on"}]"#;
        assert_eq!(
            decode_payload(TopicKind::Senml, bad.as_bytes(), NOW, &Limits::default())
                .unwrap_err()
                .reason,
            Reason::BadValue
        );
    }
}
