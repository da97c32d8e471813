//! Failure analytics over HTTP: `/api/v1/analytics/…` (reliability statistics from the service
//! history). Parameters are query strings; a bad one is a 400 problem naming it.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AnyOfBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::AppState;
use crate::problem::{Auth, Problem, Query};
use crate::table::{Res, Route, Schemas, ok, r};
use prognos_analytics::kpi::{ModeAccuracy, ProviderKpis};
use prognos_analytics::output::{Encode, OutputFormat};
use prognos_analytics::reliability::{
    self, BatchReport, Heatmap, MtbfRow, SurgeReport, SurgeRule, WeibullReport,
};
use prognos_analytics::telemetry::{self, Bucket, Downsample, FleetQuery, QueryError, SeriesQuery};
use prognos_analytics::{AnalyticsError, access};
use prognos_service::auth::Principal;
use prognos_service::history::{GroupBy, History, parse_date_ms};
use prognos_service::surges::RaisedSurge;

impl From<AnalyticsError> for Problem {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::InvalidParameter { name, message } => Problem::parameter(name, message),
            AnalyticsError::UnknownName { name, message } => {
                let mut p = Problem::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "not-found",
                    "Not found",
                    message,
                );
                p.field = Some(name.to_owned());
                p
            }
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

/// A point in time in a query string: RFC 3339, `YYYY-MM-DD` or epoch milliseconds.
struct Instant;

impl PartialSchema for Instant {
    fn schema() -> RefOr<Schema> {
        // ±8.64e15 ms is the range of a JavaScript date (and of chrono's).
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(-8_640_000_000_000_000i64))
                    .maximum(Some(8_640_000_000_000_000i64)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .description(Some("RFC 3339, YYYY-MM-DD or epoch milliseconds"))
            .into()
    }
}

impl ToSchema for Instant {}

#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Format {
    Json,
    Csv,
    Arrow,
    Parquet,
}

impl Format {
    fn output(self) -> OutputFormat {
        match self {
            Format::Json => OutputFormat::Json,
            Format::Csv => OutputFormat::Csv,
            Format::Arrow => OutputFormat::Arrow,
            Format::Parquet => OutputFormat::Parquet,
        }
    }
}

#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Agg {
    Raw,
    Buckets,
    Lttb,
}

#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum BucketName {
    Hour,
    Day,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SeriesParams {
    /// Device ids, comma-separated.
    #[param(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000,]",
        max_length = 4000
    )]
    device: String,
    /// Metric names, comma-separated.
    #[param(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000,]",
        max_length = 4000
    )]
    metric: String,
    /// Start (default: 24 h before `to`).
    #[param(value_type = Option<Instant>, inline)]
    from: Option<String>,
    /// End, exclusive (default: now); not before `from`.
    #[param(value_type = Option<Instant>, inline)]
    to: Option<String>,
    /// raw, buckets (min/max/mean/last/count per step, the default) or lttb.
    #[param(inline)]
    agg: Option<Agg>,
    /// Bucket width: seconds, or 30s, 15m, 1h, 1d (default: the range over `points`).
    #[param(pattern = "^0*[1-9][0-9]{0,6}[smhd]?$")]
    step: Option<String>,
    /// LTTB points (it keeps the first, the last and one per bucket between), and the
    /// default bucket count.
    #[param(minimum = 3, maximum = 100000, default = 1000)]
    points: Option<i64>,
    #[param(inline)]
    format: Option<Format>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FleetParams {
    /// Start (default: the beginning).
    #[param(value_type = Option<Instant>, inline)]
    from: Option<String>,
    /// End, exclusive (default: now); not before `from`.
    #[param(value_type = Option<Instant>, inline)]
    to: Option<String>,
    /// hour (default) or day.
    #[param(inline)]
    bucket: Option<BucketName>,
    /// Only these metrics, comma-separated.
    #[param(max_length = 4000)]
    metric: Option<String>,
    /// Aggregate per group of devices.
    #[param(inline)]
    group_by: Option<GroupBy>,
    #[param(inline)]
    format: Option<Format>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PeriodParams {
    /// Start (default: the beginning).
    #[param(value_type = Option<Instant>, inline)]
    from: Option<String>,
    /// End, exclusive (default: now); not before `from`.
    #[param(value_type = Option<Instant>, inline)]
    to: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct MtbfParams {
    /// Default: model.
    #[param(inline)]
    group_by: Option<GroupBy>,
    /// Start (default: the beginning).
    #[param(value_type = Option<Instant>, inline)]
    from: Option<String>,
    /// End, exclusive (default: now); not before `from`.
    #[param(value_type = Option<Instant>, inline)]
    to: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WeibullParams {
    /// Default: fleet.
    #[param(inline)]
    group_by: Option<GroupBy>,
    /// Only this failure mode (the others censor).
    #[param(max_length = 100)]
    failure_mode: Option<String>,
    /// A group to test against the rest of the fleet.
    #[param(max_length = 200)]
    compare: Option<String>,
    /// Of the intervals.
    #[param(exclusive_minimum = 0, exclusive_maximum = 1, default = 0.9)]
    confidence: Option<f64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct BatchParams {
    /// Family-wise significance level.
    #[param(exclusive_minimum = 0, exclusive_maximum = 1, default = 0.01)]
    alpha: Option<f64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SurgeParams {
    /// Weeks shown.
    #[param(minimum = 1, maximum = 520, default = 12)]
    weeks: Option<i64>,
    /// Latest weeks judged; at most `weeks`.
    #[param(minimum = 1, maximum = 520, default = 1)]
    recent: Option<i64>,
    /// Weeks of baseline.
    #[param(minimum = 1, maximum = 520, default = 8)]
    baseline_weeks: Option<i64>,
    /// Significance level.
    #[param(exclusive_minimum = 0, exclusive_maximum = 1, default = 0.01)]
    alpha: Option<f64>,
    /// Smallest surge.
    #[param(minimum = 1, maximum = 1000000, default = 3)]
    min_failures: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SurgeAlertParams {
    /// How many, newest first.
    #[param(minimum = 1, maximum = 10000, default = 100)]
    limit: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AccuracyParams {
    /// Start (default: the beginning).
    #[param(value_type = Option<Instant>, inline)]
    from: Option<String>,
    /// End, exclusive (default: now); not before `from`.
    #[param(value_type = Option<Instant>, inline)]
    to: Option<String>,
    /// How long before a failure a predictive ticket counts as a warning.
    #[param(exclusive_minimum = 0, maximum = 3650, default = 60)]
    window_days: Option<f64>,
}

/// A telemetry answer in JSON: `series` (or `rows`) and the `scan` statistics.
fn telemetry_json(key: &'static str) -> impl Fn(&mut Schemas) -> RefOr<Schema> {
    move |_| {
        ObjectBuilder::new()
            .property(
                key,
                utoipa::openapi::schema::ArrayBuilder::new().items(ObjectBuilder::new()),
            )
            .property("scan", ObjectBuilder::new())
            .required(key)
            .required("scan")
            .into()
    }
}

fn series_json(out: &mut Schemas) -> RefOr<Schema> {
    telemetry_json("series")(out)
}

fn fleet_json(out: &mut Schemas) -> RefOr<Schema> {
    telemetry_json("rows")(out)
}

pub(crate) fn routes() -> Vec<Route> {
    vec![
        r(
            "GET",
            "/api/v1/telemetry",
            "Time series of devices and metrics, raw or down-sampled (JSON, CSV, Arrow, Parquet)",
            "telemetry",
            200,
            get(telemetry_series),
        )
        .query::<SeriesParams>()
        .telemetry(series_json),
        r(
            "GET",
            "/api/v1/telemetry/fleet",
            "Fleet-wide hourly or daily mean/min/max per metric, optionally per group",
            "telemetry",
            200,
            get(telemetry_fleet),
        )
        .query::<FleetParams>()
        .telemetry(fleet_json),
        r(
            "GET",
            "/api/v1/analytics/mtbf",
            "MTBF, MTTR and availability per group of devices",
            "analytics",
            200,
            get(mtbf),
        )
        .query::<MtbfParams>()
        .returns_list::<MtbfRow>(),
        r(
            "GET",
            "/api/v1/analytics/weibull",
            "Weibull life fits with right-censoring, B10 life and probability-plot data",
            "analytics",
            200,
            get(weibull),
        )
        .query::<WeibullParams>()
        .also(&[404])
        .returns::<WeibullReport>(),
        r(
            "GET",
            "/api/v1/analytics/batches",
            "Defective-batch test and the recall list of affected devices",
            "analytics",
            200,
            get(batches),
        )
        .query::<BatchParams>()
        .returns::<BatchReport>(),
        r(
            "GET",
            "/api/v1/analytics/heatmap",
            "Failure counts and rates by region and failure mode",
            "analytics",
            200,
            get(heatmap),
        )
        .query::<PeriodParams>()
        .returns::<Heatmap>(),
        r(
            "GET",
            "/api/v1/analytics/surges",
            "Weekly failures per mode and surge alerts against the baseline",
            "analytics",
            200,
            get(surges),
        )
        .query::<SurgeParams>()
        .returns::<SurgeReport>(),
        r(
            "GET",
            "/api/v1/analytics/surge-alerts",
            "Surge alerts raised by the hourly check (also sent as surge.raised webhooks)",
            "analytics",
            200,
            get(surge_alerts),
        )
        .query::<SurgeAlertParams>()
        .returns_list::<RaisedSurge>(),
        r(
            "GET",
            "/api/v1/analytics/providers",
            "Provider KPIs, own and rolled up the hierarchy (a provider key sees its subtree)",
            "analytics",
            200,
            get(providers),
        )
        .query::<PeriodParams>()
        .returns_list::<ProviderKpis>(),
        r(
            "GET",
            "/api/v1/analytics/model-accuracy",
            "Precision, recall and lead times of predictive tickets from close codes",
            "analytics",
            200,
            get(model_accuracy),
        )
        .query::<AccuracyParams>()
        .returns_list::<ModeAccuracy>(),
    ]
}

/// A time parameter: RFC 3339, `YYYY-MM-DD` or epoch milliseconds.
fn time_param(name: &str, text: Option<&str>) -> Result<Option<i64>, Problem> {
    text.filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .or_else(|| parse_date_ms(v))
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
fn period(from: Option<&str>, to: Option<&str>, now: i64) -> Result<(i64, i64), Problem> {
    let to = time_param("to", to)?.unwrap_or(now);
    // "The beginning": the epoch, or `to` when that is earlier.
    let from = time_param("from", from)?.unwrap_or(to.min(0));
    if from > to {
        return Err(Problem::parameter("from", "must not be after `to`"));
    }
    Ok((from, to))
}

/// A bounded count the query schema already checked (1..=its maximum).
fn count(v: Option<i64>, default: usize) -> usize {
    v.and_then(|v| usize::try_from(v).ok()).unwrap_or(default)
}

async fn history(s: &AppState, who: &Principal) -> Result<History, Problem> {
    Ok(access::history(&s.svc, who).await?)
}

async fn mtbf(State(s): State<AppState>, Auth(who): Auth, Query(q): Query<MtbfParams>) -> Res {
    let g = q.group_by.unwrap_or(GroupBy::Model);
    let (from, to) = period(q.from.as_deref(), q.to.as_deref(), s.svc.clock.now_ms())?;
    ok(reliability::mtbf(&history(&s, &who).await?, g, from, to))
}

async fn weibull(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<WeibullParams>,
) -> Res {
    let g = q.group_by.unwrap_or(GroupBy::Fleet);
    let h = history(&s, &who).await?;
    let text = |v: Option<String>| v.filter(|v| !v.is_empty());
    ok(reliability::weibull(
        &h,
        g,
        text(q.failure_mode).as_deref(),
        text(q.compare).as_deref(),
        q.confidence.unwrap_or(0.9),
    )?)
}

async fn batches(State(s): State<AppState>, Auth(who): Auth, Query(q): Query<BatchParams>) -> Res {
    ok(reliability::defective_batches(
        &history(&s, &who).await?,
        q.alpha.unwrap_or(0.01),
    )?)
}

async fn heatmap(State(s): State<AppState>, Auth(who): Auth, Query(q): Query<PeriodParams>) -> Res {
    let (from, to) = period(q.from.as_deref(), q.to.as_deref(), s.svc.clock.now_ms())?;
    ok(reliability::heatmap(&history(&s, &who).await?, from, to))
}

async fn surges(State(s): State<AppState>, Auth(who): Auth, Query(q): Query<SurgeParams>) -> Res {
    let d = SurgeRule::default();
    let rule = SurgeRule {
        weeks: count(q.weeks, d.weeks),
        recent: count(q.recent, d.recent),
        baseline_weeks: count(q.baseline_weeks, d.baseline_weeks),
        alpha: q.alpha.unwrap_or(d.alpha),
        min_failures: count(q.min_failures, d.min_failures as usize) as u64,
    };
    if rule.recent > rule.weeks {
        return Err(Problem::parameter("recent", "must not exceed `weeks`"));
    }
    ok(reliability::surges(&history(&s, &who).await?, rule)?)
}

async fn providers(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<PeriodParams>,
) -> Res {
    let (from, to) = period(q.from.as_deref(), q.to.as_deref(), s.svc.clock.now_ms())?;
    ok(access::provider_kpis(&s.svc, &who, from, to).await?)
}

async fn model_accuracy(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<AccuracyParams>,
) -> Res {
    let (from, to) = period(q.from.as_deref(), q.to.as_deref(), s.svc.clock.now_ms())?;
    let window = q.window_days.unwrap_or(60.0);
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
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(secs)?.checked_mul(1_000_000))
        .ok_or_else(|| Problem::parameter(name, format!("expected a duration, got {text:?}")))
}

fn list(text: Option<&str>) -> Vec<String> {
    text.map(|v| {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
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

async fn telemetry_series(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<SeriesParams>,
) -> Res {
    access::require_fleet(&who)?;
    let devices = list(Some(&q.device));
    if devices.is_empty() {
        return Err(Problem::parameter("device", "give at least one device id"));
    }
    let metrics = list(Some(&q.metric));
    if metrics.is_empty() {
        return Err(Problem::parameter("metric", "give at least one metric"));
    }
    let to_ms = time_param("to", q.to.as_deref())?.unwrap_or_else(|| s.svc.clock.now_ms());
    let from_ms =
        time_param("from", q.from.as_deref())?.unwrap_or(to_ms.saturating_sub(86_400_000));
    if from_ms > to_ms {
        return Err(Problem::parameter("from", "must not be after `to`"));
    }
    let (from_us, to_us) = (from_ms.saturating_mul(1000), to_ms.saturating_mul(1000));
    let points = count(q.points, 1000).clamp(1, MAX_POINTS);
    let step_us = q
        .step
        .as_deref()
        .map(|v| duration_us("step", v))
        .transpose()?;
    let (downsample, step_us) = match q.agg.unwrap_or(Agg::Buckets) {
        Agg::Buckets => (
            Downsample::Buckets,
            Some(step_us.unwrap_or((to_us.saturating_sub(from_us) / points as i64).max(1))),
        ),
        Agg::Raw => (Downsample::Raw, step_us),
        Agg::Lttb => (Downsample::Lttb { points }, step_us),
    };
    let fmt = q.format.unwrap_or(Format::Json).output();
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

async fn telemetry_fleet(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<FleetParams>,
) -> Res {
    access::require_fleet(&who)?;
    let (from_ms, to_ms) = period(q.from.as_deref(), q.to.as_deref(), s.svc.clock.now_ms())?;
    let bucket = match q.bucket.unwrap_or(BucketName::Hour) {
        BucketName::Hour => Bucket::Hour,
        BucketName::Day => Bucket::Day,
    };
    let group_of = match q.group_by {
        None => None,
        Some(g) => {
            let h = history(&s, &who).await?;
            Some(
                h.devices
                    .iter()
                    .map(|d| (d.device_id.clone(), g.key(d)))
                    .collect(),
            )
        }
    };
    let fmt = q.format.unwrap_or(Format::Json).output();
    let fq = FleetQuery {
        from_us: from_ms.saturating_mul(1000),
        to_us: to_ms.saturating_mul(1000),
        bucket,
        metrics: list(q.metric.as_deref()),
        group_of,
    };
    let root = telemetry_root(&s);
    respond(fmt, move || telemetry::fleet_aggregate(&root, &fq, 2)).await
}

async fn surge_alerts(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<SurgeAlertParams>,
) -> Res {
    let limit = count(q.limit, 100);
    ok(s.svc.surge_alerts(&who, limit as i64).await?)
}
