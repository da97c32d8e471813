//! Failure analytics over HTTP: `/api/v1/analytics/…` (reliability statistics from the service
//! history). Parameters are query strings; a bad one is a 400 problem naming it.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;
use crate::problem::{Auth, Params, Problem};
use crate::table::{H, Res, RouteDoc, ok, q, r};
use prognos_analytics::output::{Encode, OutputFormat};
use prognos_analytics::reliability::{self, SurgeRule};
use prognos_analytics::telemetry::{self, Bucket, Downsample, FleetQuery, QueryError, SeriesQuery};
use prognos_analytics::{AnalyticsError, access};
use prognos_service::auth::Principal;
use prognos_service::history::{GroupBy, History, parse_date_ms};

impl From<AnalyticsError> for Problem {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::InvalidParameter { name, message } => Problem::parameter(name, message),
            AnalyticsError::Reliability(e) => Problem::parameter("data", e.to_string()),
            AnalyticsError::Sql(e) => prognos_service::ServiceError::Sql(e).into(),
            AnalyticsError::Service(e) => e.into(),
        }
    }
}

impl From<QueryError> for Problem {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::InvalidParameter { name, message } => Problem::parameter(name, message),
            e => {
                tracing::error!(error = %e, "telemetry query failed");
                Problem::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the telemetry query failed".into(),
                )
            }
        }
    }
}

/// The most points one series of a response may hold.
const MAX_POINTS: usize = 100_000;

const PERIOD: [(&str, &str); 2] = [
    (
        "from",
        "start, RFC 3339, YYYY-MM-DD or epoch ms (default: the beginning)",
    ),
    ("to", "end, exclusive (default: now)"),
];

pub(crate) fn routes() -> Vec<(RouteDoc, H)> {
    vec![
        q(
            r(
                "GET",
                "/api/v1/telemetry",
                "Time series of devices and metrics, raw or down-sampled (JSON, CSV, Arrow, Parquet)",
                "telemetry",
                None,
                200,
                get(telemetry_series),
            ),
            &[
                ("device", "device id; comma-separate several (required)"),
                ("metric", "metric name; comma-separate several (required)"),
                (
                    "from",
                    "start, RFC 3339, YYYY-MM-DD or epoch ms (default: 24 h before `to`)",
                ),
                ("to", "end, exclusive (default: now)"),
                (
                    "agg",
                    "raw, buckets (min/max/mean/last/count per step, default) or lttb",
                ),
                (
                    "step",
                    "bucket width: seconds or 30s, 15m, 1h, 1d (default: range / points)",
                ),
                (
                    "points",
                    "lttb points, and the default bucket count (default 1000)",
                ),
                ("format", "json (default), csv, arrow or parquet"),
            ],
        ),
        q(
            r(
                "GET",
                "/api/v1/telemetry/fleet",
                "Fleet-wide hourly or daily mean/min/max per metric, optionally per group",
                "telemetry",
                None,
                200,
                get(telemetry_fleet),
            ),
            &[
                PERIOD[0],
                PERIOD[1],
                ("bucket", "hour (default) or day"),
                ("metric", "only these metrics, comma-separated"),
                (
                    "group_by",
                    "model, region, site, batch, firmware or customer",
                ),
                ("format", "json (default), csv, arrow or parquet"),
            ],
        ),
        q(
            r(
                "GET",
                "/api/v1/analytics/mtbf",
                "MTBF, MTTR and availability per group of devices",
                "analytics",
                None,
                200,
                get(mtbf),
            ),
            &[("group_by", GroupBy::NAMES), PERIOD[0], PERIOD[1]],
        ),
        q(
            r(
                "GET",
                "/api/v1/analytics/weibull",
                "Weibull life fits with right-censoring, B10 life and probability-plot data",
                "analytics",
                None,
                200,
                get(weibull),
            ),
            &[
                ("group_by", GroupBy::NAMES),
                ("failure_mode", "only this mode (others censor)"),
                ("compare", "a group to test against the rest of the fleet"),
                ("confidence", "of the intervals, default 0.9"),
            ],
        ),
        q(
            r(
                "GET",
                "/api/v1/analytics/batches",
                "Defective-batch test and the recall list of affected devices",
                "analytics",
                None,
                200,
                get(batches),
            ),
            &[("alpha", "family-wise significance level, default 0.01")],
        ),
        q(
            r(
                "GET",
                "/api/v1/analytics/heatmap",
                "Failure counts and rates by region and failure mode",
                "analytics",
                None,
                200,
                get(heatmap),
            ),
            &PERIOD,
        ),
        q(
            r(
                "GET",
                "/api/v1/analytics/surges",
                "Weekly failures per mode and surge alerts against the baseline",
                "analytics",
                None,
                200,
                get(surges),
            ),
            &[
                ("weeks", "weeks shown, default 12"),
                ("recent", "latest weeks judged, default 1"),
                ("baseline_weeks", "weeks of baseline, default 8"),
                ("alpha", "significance level, default 0.01"),
                ("min_failures", "smallest surge, default 3"),
            ],
        ),
        q(
            r(
                "GET",
                "/api/v1/analytics/surge-alerts",
                "Surge alerts raised by the hourly check (also sent as surge.raised webhooks)",
                "analytics",
                None,
                200,
                get(surge_alerts),
            ),
            &[("limit", "how many, newest first (default 100)")],
        ),
        q(
            r(
                "GET",
                "/api/v1/analytics/providers",
                "Provider KPIs, own and rolled up the hierarchy (a provider key sees its subtree)",
                "analytics",
                None,
                200,
                get(providers),
            ),
            &PERIOD,
        ),
        q(
            r(
                "GET",
                "/api/v1/analytics/model-accuracy",
                "Precision, recall and lead times of predictive tickets from close codes",
                "analytics",
                None,
                200,
                get(model_accuracy),
            ),
            &[
                PERIOD[0],
                PERIOD[1],
                (
                    "window_days",
                    "how long before a failure a predictive ticket counts as a warning, default 60",
                ),
            ],
        ),
    ]
}

/// A time parameter: RFC 3339, `YYYY-MM-DD` or epoch milliseconds.
pub(super) fn time_param(p: &Params, name: &str) -> Result<Option<i64>, Problem> {
    p.str(name)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .or_else(|| parse_date_ms(&v))
                .ok_or_else(|| {
                    Problem::parameter(
                        name,
                        format!("expected RFC 3339, YYYY-MM-DD or epoch ms, got {v:?}"),
                    )
                })
        })
        .transpose()
}

/// `[from, to)` with defaults (the beginning, now); `from` after `to` is a 400 on `from`.
fn period(p: &Params, now: i64) -> Result<(i64, i64), Problem> {
    let from = time_param(p, "from")?.unwrap_or(0);
    let to = time_param(p, "to")?.unwrap_or(now);
    if from > to {
        return Err(Problem::parameter("from", "must not be after `to`"));
    }
    Ok((from, to))
}

fn group_by(p: &Params, default: GroupBy) -> Result<GroupBy, Problem> {
    match p.str("group_by") {
        None => Ok(default),
        Some(v) => GroupBy::parse(&v)
            .ok_or_else(|| Problem::parameter("group_by", format!("expected {}", GroupBy::NAMES))),
    }
}

fn probability(p: &Params, name: &str, default: f64) -> Result<f64, Problem> {
    let v = p.f64(name)?.unwrap_or(default);
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(Problem::parameter(
            name,
            "must be between 0 and 1 (exclusive)",
        ))
    }
}

fn count(p: &Params, name: &str, default: usize, max: usize) -> Result<usize, Problem> {
    match p.i64(name)? {
        None => Ok(default),
        Some(v) if v >= 1 && v as usize <= max => Ok(v as usize),
        Some(_) => Err(Problem::parameter(name, format!("must be in 1..={max}"))),
    }
}

async fn history(s: &AppState, who: &Principal) -> Result<History, Problem> {
    Ok(access::history(&s.svc, who).await?)
}

async fn mtbf(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    let g = group_by(&p, GroupBy::Model)?;
    let (from, to) = period(&p, s.svc.clock.now_ms())?;
    ok(reliability::mtbf(&history(&s, &who).await?, g, from, to))
}

async fn weibull(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    let g = group_by(&p, GroupBy::Fleet)?;
    let confidence = probability(&p, "confidence", 0.9)?;
    let h = history(&s, &who).await?;
    ok(reliability::weibull(
        &h,
        g,
        p.str("failure_mode").as_deref(),
        p.str("compare").as_deref(),
        confidence,
    )?)
}

async fn batches(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    let alpha = probability(&p, "alpha", 0.01)?;
    ok(reliability::defective_batches(
        &history(&s, &who).await?,
        alpha,
    )?)
}

async fn heatmap(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    let (from, to) = period(&p, s.svc.clock.now_ms())?;
    ok(reliability::heatmap(&history(&s, &who).await?, from, to))
}

async fn surges(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    let d = SurgeRule::default();
    let rule = SurgeRule {
        weeks: count(&p, "weeks", d.weeks, 520)?,
        recent: count(&p, "recent", d.recent, 520)?,
        baseline_weeks: count(&p, "baseline_weeks", d.baseline_weeks, 520)?,
        alpha: probability(&p, "alpha", d.alpha)?,
        min_failures: count(&p, "min_failures", d.min_failures as usize, 1_000_000)? as u64,
    };
    ok(reliability::surges(&history(&s, &who).await?, rule)?)
}

async fn providers(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    let (from, to) = period(&p, s.svc.clock.now_ms())?;
    ok(access::provider_kpis(&s.svc, &who, from, to).await?)
}

async fn model_accuracy(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    let (from, to) = period(&p, s.svc.clock.now_ms())?;
    let window = p.f64("window_days")?.unwrap_or(60.0);
    ok(access::model_accuracy(&s.svc, &who, from, to, window).await?)
}

/// `30`, `30s`, `15m`, `1h`, `1d` → microseconds.
fn duration_us(name: &str, text: &str) -> Result<i64, Problem> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(Problem::parameter(
                name,
                "expected seconds or 30s, 15m, 1h, 1d",
            ));
        }
    };
    number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(secs)?.checked_mul(1_000_000))
        .ok_or_else(|| Problem::parameter(name, format!("expected a duration, got {text:?}")))
}

fn list(p: &Params, name: &str) -> Vec<String> {
    p.str(name)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn format(p: &Params) -> Result<OutputFormat, Problem> {
    match p.str("format") {
        None => Ok(OutputFormat::Json),
        Some(v) => OutputFormat::parse(&v).ok_or_else(|| {
            Problem::parameter("format", format!("expected {}", OutputFormat::NAMES))
        }),
    }
}

/// Runs a blocking telemetry query off the async workers and encodes its result.
async fn respond<R: Encode + Send + 'static>(
    fmt: OutputFormat,
    query: impl FnOnce() -> Result<R, QueryError> + Send + 'static,
) -> Res {
    let bytes = tokio::task::spawn_blocking(move || query()?.encode(fmt))
        .await
        .map_err(|e| Problem::bad_request(format!("query task failed: {e}")))??;
    Ok(([(header::CONTENT_TYPE, fmt.content_type())], bytes).into_response())
}

fn telemetry_root(s: &AppState) -> std::path::PathBuf {
    // Without a data set (an API-only server) every query is simply empty.
    s.telemetry_root
        .as_deref()
        .cloned()
        .unwrap_or_else(|| std::path::PathBuf::from("/nonexistent/prognos/telemetry"))
}

async fn telemetry_series(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    access::require_fleet(&who)?;
    let devices = list(&p, "device");
    if devices.is_empty() {
        return Err(Problem::parameter("device", "give at least one device id"));
    }
    let metrics = list(&p, "metric");
    if metrics.is_empty() {
        return Err(Problem::parameter("metric", "give at least one metric"));
    }
    let to_ms = time_param(&p, "to")?.unwrap_or_else(|| s.svc.clock.now_ms());
    let from_ms = time_param(&p, "from")?.unwrap_or(to_ms - 86_400_000);
    let (from_us, to_us) = (from_ms.saturating_mul(1000), to_ms.saturating_mul(1000));
    let points = count(&p, "points", 1000, MAX_POINTS)?;
    let step_us = p.str("step").map(|v| duration_us("step", &v)).transpose()?;
    let (downsample, step_us) = match p.str("agg").as_deref() {
        None | Some("buckets") => (
            Downsample::Buckets,
            Some(step_us.unwrap_or(((to_us - from_us) / points as i64).max(1))),
        ),
        Some("raw") => (Downsample::Raw, step_us),
        Some("lttb") => (Downsample::Lttb { points }, step_us),
        Some(_) => return Err(Problem::parameter("agg", "expected raw, buckets or lttb")),
    };
    let fmt = format(&p)?;
    let q = SeriesQuery {
        devices,
        metrics,
        from_us,
        to_us,
        step_us,
        downsample,
        max_points: MAX_POINTS,
    };
    let root = telemetry_root(&s);
    let limits = s.telemetry_limits;
    respond(fmt, move || {
        telemetry::query_series_limited(&root, &q, telemetry::default_threads(), limits)
    })
    .await
}

async fn telemetry_fleet(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    access::require_fleet(&who)?;
    let (from_ms, to_ms) = period(&p, s.svc.clock.now_ms())?;
    let bucket = match p.str("bucket").as_deref() {
        None | Some("hour") => Bucket::Hour,
        Some("day") => Bucket::Day,
        Some(_) => return Err(Problem::parameter("bucket", "expected hour or day")),
    };
    let group_of = match p.str("group_by") {
        None => None,
        Some(_) => {
            let g = group_by(&p, GroupBy::Fleet)?;
            let h = history(&s, &who).await?;
            Some(
                h.devices
                    .iter()
                    .map(|d| (d.device_id.clone(), g.key(d)))
                    .collect(),
            )
        }
    };
    let fmt = format(&p)?;
    let q = FleetQuery {
        from_us: from_ms.saturating_mul(1000),
        to_us: to_ms.saturating_mul(1000),
        bucket,
        metrics: list(&p, "metric"),
        group_of,
    };
    let root = telemetry_root(&s);
    respond(fmt, move || telemetry::fleet_aggregate(&root, &q, 2)).await
}

async fn surge_alerts(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    let limit = count(&p, "limit", 100, 10_000)?;
    ok(s.svc.surge_alerts(&who, limit as i64).await?)
}
