//! Property tests of the payload decoder (`decode.rs`): whatever a device sends, the decoder
//! answers with rows that respect the limits or with a rejection that names a reason, and
//! never panics. Case counts are modest for CI; `PROPTEST_CASES=10000` runs a longer search.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prognos_ingest::decode::{Decoded, Limits, Reason, Rejection, TopicKind, decode_payload};
use proptest::prelude::*;

const NOW: i64 = 1_764_000_000_000_000;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        // Failures print the minimal input; no regression files written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn kind() -> impl Strategy<Value = TopicKind> {
    prop_oneof![
        Just(TopicKind::Telemetry),
        Just(TopicKind::Senml),
        Just(TopicKind::Status)
    ]
}

fn valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
}

/// The contract of `decode_payload`, checked on any outcome.
fn check(
    kind: TopicKind,
    payload: &[u8],
    now: i64,
    limits: &Limits,
    result: &Result<Decoded, Rejection>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(decoded) => {
            prop_assert!(
                payload.len() <= limits.max_payload_bytes,
                "accepted an oversized payload"
            );
            if kind == TopicKind::Status {
                prop_assert!(decoded.points.is_empty(), "status messages carry no points");
                return Ok(());
            }
            prop_assert!(
                !decoded.points.is_empty(),
                "accepted a message without points"
            );
            // Counts are bounded by the size limit: every point costs at least `"a":0,`.
            prop_assert!(
                decoded.points.len() <= payload.len() / 5,
                "{} points from {} bytes",
                decoded.points.len(),
                payload.len()
            );
            for p in &decoded.points {
                prop_assert!(valid_metric_name(&p.metric), "bad name {:?}", p.metric);
                prop_assert!(p.value.is_finite(), "non-finite {}", p.value);
                prop_assert!(
                    p.ts_us <= now.saturating_add(limits.max_future_us),
                    "ts {} beyond the future window",
                    p.ts_us
                );
                prop_assert!(
                    p.ts_us >= now.saturating_sub(limits.max_past_us),
                    "ts {} beyond the past window",
                    p.ts_us
                );
            }
        }
        Err(rejection) => {
            prop_assert!(Reason::ALL.contains(&rejection.reason));
            prop_assert!(
                !rejection.detail.is_empty(),
                "rejection {:?} without a detail",
                rejection.reason
            );
            if payload.len() > limits.max_payload_bytes {
                prop_assert_eq!(rejection.reason, Reason::Oversized);
            }
        }
    }
    Ok(())
}

fn decode_and_check(kind: TopicKind, payload: &[u8], now: i64) -> Result<(), TestCaseError> {
    let limits = Limits::default();
    let result = decode_payload(kind, payload, now, &limits);
    check(kind, payload, now, &limits, &result)
}

/// JSON numbers as devices print them, valid or not: integers past u64 and f64, exponents
/// past the double range, negative zero, the non-JSON spellings of NaN and infinity.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| format!("{x:?}")),
        (0u32..1000, -400i32..400).prop_map(|(m, e)| format!("{m}.5e{e}")),
        Just("1e999".to_owned()),
        Just("-1e400".to_owned()),
        Just("123456789012345678901234567890123456789".to_owned()),
        Just("-0".to_owned()),
        Just("0.0000000000000000000000000000000000001".to_owned()),
        Just("NaN".to_owned()),
        Just("Infinity".to_owned()),
        Just("-Infinity".to_owned()),
        Just("1764000000000".to_owned()),
        Just("1764000000".to_owned()),
        (0i64..2_000_000).prop_map(|n| (1_763_000_000_000 + n * 1_000).to_string()),
        (-10i64..10).prop_map(|n| n.to_string()),
    ]
}

fn string_text() -> impl Strategy<Value = String> {
    let content = prop_oneof![
        Just("NaN".to_owned()),
        Just("-inf".to_owned()),
        Just("Infinity".to_owned()),
        Just("2025-11-24T16:00:00Z".to_owned()),
        Just("2025-11-24T16:00:00+14:00".to_owned()),
        Just("motor:".to_owned()),
        Just("a".repeat(129)),
        "[a-z0-9:._/-]{0,12}",
        "\\PC{0,8}",
        any::<String>(),
    ];
    content.prop_map(|s| serde_json::to_string(&s).unwrap())
}

/// Keys the decoder looks at, so that random documents hit its branches.
fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "ts", "seq", "metrics", "bn", "bt", "bv", "n", "v", "t", "vs", "vb", "vd", "u",
        ])
        .prop_map(|k| format!("\"{k}\"")),
        2 => string_text(),
    ]
}

/// JSON text (not a `Value`: duplicate keys survive, numbers keep their spelling).
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number_text(),
        string_text(),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key_text(), inner), 0..8).prop_map(|kv| {
                let fields: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

/// Documents shaped like telemetry, with the values and names fuzzed.
fn telemetry_text() -> impl Strategy<Value = String> {
    let metric = (
        prop_oneof![3 => "[a-z][a-z0-9_.:/-]{0,10}", 1 => string_text()
            .prop_map(|s| s.trim_matches('"').to_owned())],
        prop_oneof![3 => number_text(), 1 => json_text()],
    );
    let object = (
        prop::option::of(prop_oneof![
            number_text(),
            string_text(),
            Just("null".to_owned())
        ]),
        prop::option::of(number_text()),
        prop::collection::vec(metric, 0..6),
    )
        .prop_map(|(ts, seq, metrics)| {
            let metrics: Vec<String> = metrics
                .into_iter()
                .map(|(n, v)| format!("{}:{v}", serde_json::to_string(&n).unwrap()))
                .collect();
            let mut fields = vec![format!("\"metrics\":{{{}}}", metrics.join(","))];
            fields.extend(ts.map(|ts| format!("\"ts\":{ts}")));
            fields.extend(seq.map(|seq| format!("\"seq\":{seq}")));
            format!("{{{}}}", fields.join(","))
        })
        .boxed();
    prop_oneof![
        object.clone(),
        prop::collection::vec(object, 0..5).prop_map(|v| format!("[{}]", v.join(","))),
    ]
}

/// Documents shaped like SenML packs: base names, base times and values, relative and
/// absolute times, records without values.
fn senml_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        ("[a-z:/]{0,8}").prop_map(|s| format!("\"bn\":\"{s}\"")),
        number_text().prop_map(|n| format!("\"bt\":{n}")),
        number_text().prop_map(|n| format!("\"bv\":{n}")),
        ("[a-z0-9_]{0,8}").prop_map(|s| format!("\"n\":\"{s}\"")),
        number_text().prop_map(|n| format!("\"v\":{n}")),
        number_text().prop_map(|n| format!("\"t\":{n}")),
        string_text().prop_map(|s| format!("\"vs\":{s}")),
        json_text().prop_map(|j| format!("\"v\":{j}")),
    ];
    let record = prop::collection::vec(field, 0..6).prop_map(|f| format!("{{{}}}", f.join(",")));
    prop::collection::vec(record, 0..8).prop_map(|r| format!("[{}]", r.join(",")))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(kind in kind(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_and_check(kind, &bytes, NOW)?;
    }

    #[test]
    fn arbitrary_json_never_panics(kind in kind(), text in json_text()) {
        decode_and_check(kind, text.as_bytes(), NOW)?;
    }

    #[test]
    fn telemetry_shaped_json_is_rows_within_limits_or_a_reason(text in telemetry_text()) {
        decode_and_check(TopicKind::Telemetry, text.as_bytes(), NOW)?;
    }

    #[test]
    fn senml_shaped_json_is_rows_within_limits_or_a_reason(text in senml_text()) {
        decode_and_check(TopicKind::Senml, text.as_bytes(), NOW)?;
    }

    /// Any receive time, including the ends of the i64 range: no overflow panics.
    #[test]
    fn any_receive_time_is_safe(kind in kind(), text in prop_oneof![senml_text(), telemetry_text()], now in any::<i64>()) {
        decode_and_check(kind, text.as_bytes(), now)?;
    }

    /// Relative SenML times at a receive time near the ends of the i64 range.
    #[test]
    fn relative_senml_time_never_overflows(
        now in prop_oneof![i64::MAX - 1_000_000_000..=i64::MAX, i64::MIN..=i64::MIN + 1_000_000_000],
        t in -1_000i64..1_000,
    ) {
        let text = format!(r#"[{{"n":"a","v":1,"t":{t}}}]"#);
        decode_and_check(TopicKind::Senml, text.as_bytes(), now)?;
    }

    /// Nesting far past serde_json's recursion limit is a rejection, not a stack overflow.
    #[test]
    fn deep_nesting_never_overflows_the_stack(kind in kind(), depth in 0usize..4000, object in any::<bool>()) {
        let (open, close) = if object { ("{\"metrics\":", "}") } else { ("[", "]") };
        let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        decode_and_check(kind, text.as_bytes(), NOW)?;
    }

    /// A payload over the size limit is rejected as oversized, whatever it holds.
    #[test]
    fn oversized_is_rejected_first(kind in kind(), text in json_text(), max in 0usize..64) {
        let limits = Limits { max_payload_bytes: max, ..Limits::default() };
        let result = decode_payload(kind, text.as_bytes(), NOW, &limits);
        check(kind, text.as_bytes(), NOW, &limits, &result)?;
        if text.len() > max {
            prop_assert_eq!(result.unwrap_err().reason, Reason::Oversized);
        }
    }

    /// A well-formed object of n finite metrics is n rows with those names, values and ts.
    #[test]
    fn telemetry_round_trip(
        metrics in prop::collection::btree_map("[a-zA-Z0-9_.:/-]{1,128}", any::<f64>().prop_filter("finite", |x| x.is_finite()), 1..32),
        ts_ms in prop::option::of(-3_600_000i64..3_600_000),
        seq in prop::option::of(any::<u64>()),
        as_array in any::<bool>(),
    ) {
        let mut object = serde_json::json!({ "metrics": metrics });
        if let Some(ms) = ts_ms {
            object["ts"] = serde_json::json!(NOW / 1000 + ms);
        }
        if let Some(seq) = seq {
            object["seq"] = serde_json::json!(seq);
        }
        let doc = if as_array { serde_json::json!([object]) } else { object };
        let payload = serde_json::to_vec(&doc).unwrap();
        let decoded = decode_payload(TopicKind::Telemetry, &payload, NOW, &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(decoded.seq, seq);
        prop_assert_eq!(decoded.points.len(), metrics.len());
        let ts = ts_ms.map_or(NOW, |ms| (NOW / 1000 + ms) * 1000);
        for (p, (name, value)) in decoded.points.iter().zip(&metrics) {
            prop_assert_eq!(&p.metric, name);
            prop_assert_eq!(p.value.to_bits(), value.to_bits(), "{} != {}", p.value, value);
            prop_assert_eq!(p.ts_us, ts);
        }
    }

    /// SenML: names are base name + name, times base time + time (absolute or relative to
    /// the receive time), values base value + value.
    #[test]
    fn senml_round_trip(
        bn in "[a-z]{0,8}:",
        records in prop::collection::vec(("[a-z0-9_]{1,16}", -1_000_000i32..1_000_000, -3_000i64..3_000), 1..16),
        absolute in any::<bool>(),
    ) {
        let bt = if absolute { NOW / 1_000_000 } else { 0 };
        let mut pack: Vec<serde_json::Value> = Vec::new();
        for (i, (n, v, t)) in records.iter().enumerate() {
            let mut r = serde_json::json!({"n": n, "v": v, "t": t});
            if i == 0 {
                r["bn"] = serde_json::json!(bn);
                r["bt"] = serde_json::json!(bt);
            }
            pack.push(r);
        }
        let payload = serde_json::to_vec(&pack).unwrap();
        let decoded = decode_payload(TopicKind::Senml, &payload, NOW, &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(decoded.points.len(), records.len());
        for (p, (n, v, t)) in decoded.points.iter().zip(&records) {
            prop_assert_eq!(&p.metric, &format!("{bn}{n}"));
            prop_assert_eq!(p.value, f64::from(*v));
            let expected = if absolute { (bt + t) * 1_000_000 } else { NOW + t * 1_000_000 };
            prop_assert_eq!(p.ts_us, expected);
        }
    }
}
