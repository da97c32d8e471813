//! RFC 9457 problem details, the JSON body extractor that names the offending field, the
//! bearer-key extractor (with its failure throttle), and the query-string and path extractors;
//! bodies and queries are checked against the schemas the OpenAPI document publishes for them.
//!
//! Every string a client sent that appears in a problem document or a log line goes through
//! [`printable`]: at most ~200 characters, control characters escaped.

use std::any::TypeId;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::text::{ECHO_MAX_CHARS, printable};
use prognos_service::ServiceError;
use prognos_service::auth::Principal;

use crate::validate::{self, Components};

/// An error response: `application/problem+json`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub field: Option<String>,
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u32>,
}

/// The longest `detail` a problem document carries; the attacker-provided parts in it are
/// already cut to [`ECHO_MAX_CHARS`] where they are quoted, this bounds the whole.
const DETAIL_MAX_CHARS: usize = 2 * ECHO_MAX_CHARS;

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: String,
    ) -> Self {
        Problem {
            status,
            slug,
            title,
            detail,
            field: None,
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// 429: the caller must wait `retry_after` before trying again.
    pub fn too_many_requests(detail: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-requests",
            "Too many requests",
            detail.into(),
        );
        p.retry_after = Some(retry_after.as_secs_f64().ceil().clamp(1.0, 86_400.0) as u32);
        p
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail.into(),
        )
    }

    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid input",
            detail.into(),
        );
        p.field = Some(field.into());
        p
    }

    /// A query-string parameter that is malformed or out of range: 400 naming it.
    pub fn parameter(name: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut p = Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "Invalid query parameter",
            detail.into(),
        );
        p.field = Some(name.into());
        p
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("https://prognos.dev/problems/{}", self.slug),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": printable(&self.detail, DETAIL_MAX_CHARS),
        });
        if let Some(obj) = body.as_object_mut() {
            if let Some(field) = &self.field {
                obj.insert(
                    "field".into(),
                    Value::String(printable(field, ECHO_MAX_CHARS)),
                );
            }
            // Extra members may quote an id from the request (`not-found`).
            obj.extend(self.extra.into_iter().map(|(k, v)| match v {
                Value::String(s) => (k, Value::String(printable(&s, ECHO_MAX_CHARS))),
                v => (k, v),
            }));
        }
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        let detail = e.to_string();
        match e {
            ServiceError::NotFound { kind, id } => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
                    .with("resource", json!(kind))
                    .with("id", json!(id))
            }
            ServiceError::Validation { field, message } => Problem::invalid(field, message),
            ServiceError::UnknownReference { field, kind, id } => {
                // Like a foreign-key violation: the request is well formed, but what it refers
                // to is not there (or not visible to this key). Not a 404: the addressed
                // resource itself exists.
                let mut p = Problem::new(
                    StatusCode::CONFLICT,
                    "unknown-reference",
                    "Unknown reference",
                    detail,
                )
                .with("resource", json!(kind))
                .with("id", json!(id));
                p.field = Some(field);
                p
            }
            ServiceError::IllegalTransition { from, to, allowed } => Problem::new(
                StatusCode::CONFLICT,
                "illegal-transition",
                "Illegal state transition",
                detail,
            )
            .with("from", json!(from))
            .with("to", json!(to))
            .with("allowed", json!(allowed)),
            ServiceError::InsufficientStock {
                sku,
                location_id,
                requested,
                available,
            } => Problem::new(
                StatusCode::CONFLICT,
                "insufficient-stock",
                "Not enough stock",
                detail,
            )
            .with("sku", json!(sku))
            .with("location_id", json!(location_id))
            .with("requested", json!(requested))
            .with("available", json!(available)),
            ServiceError::Conflict(_) => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
            }
            ServiceError::Refused { field, .. } => {
                // Well formed, but not actionable as the world (the destination policy, DNS)
                // stands: a conflict with the server's state, not a malformed request.
                let mut p = Problem::new(StatusCode::CONFLICT, "refused", "Refused", detail);
                p.field = Some(field);
                p
            }
            ServiceError::Forbidden(_) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
            }
            ServiceError::Unauthorized => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "send a valid API key as `Authorization: Bearer prg_…`".into(),
            ),
            ServiceError::Random(_) | ServiceError::Sql(_) => {
                tracing::error!(error = %detail, "service request failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the request failed; nothing was written".into(),
                )
            }
        }
    }
}

/// Deserialises a JSON body; a syntax error is 400, a missing or mistyped field is 422 with
/// the field's path (`items[2].qty`).
///
/// Linear in the body whatever its shape: one parse into a tree (syntax, serde_json's nesting
/// limit of 128), one typed pass over it that records where it failed
/// (serde_path_to_error). Never re-parse per key: that made a 16k-key body cost seconds of
/// CPU on a public route.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Problem::bad_request(format!(
            "the body is not valid JSON: {}",
            printable(&e.to_string(), ECHO_MAX_CHARS)
        ))
    })?;
    from_value(value)
}

fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Problem> {
    if !value.is_object() {
        return Err(Problem::invalid("body", "expected a JSON object"));
    }
    serde_path_to_error::deserialize::<_, T>(&value).map_err(|e| {
        let at_root = e.path().iter().next().is_none();
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let child = |name: &str| {
            if at_root {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        if let Some(name) = quoted_after(&message, "missing field `") {
            return Problem::invalid(child(name), "is required");
        }
        if let Some(name) = quoted_after(&message, "unknown field `") {
            return Problem::invalid(child(name), printable(&message, ECHO_MAX_CHARS));
        }
        let field = if at_root { "body".to_owned() } else { path };
        Problem::invalid(field, printable(&message, ECHO_MAX_CHARS))
    })
}

/// The name in serde's "missing field `x`" style messages.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message
        .strip_prefix(prefix)
        .and_then(|rest| rest.split('`').next())
}

/// `application/json` or any `application/…+json` (parameters such as charset allowed).
fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(text) = content_type.to_str() else {
        return false;
    };
    let mime = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// A type's schema as JSON with the components it refers to, made once per type.
fn schema_of<T: ToSchema + 'static>() -> Arc<(Value, Components)> {
    type Cache = Mutex<HashMap<TypeId, Arc<(Value, Components)>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(TypeId::of::<T>())
        .or_insert_with(|| {
            let mut schemas = Vec::new();
            let root = crate::schema::named::<T>(&mut schemas);
            let components = schemas
                .into_iter()
                .map(|(name, s)| (name, serde_json::to_value(s).unwrap_or(Value::Null)))
                .collect();
            Arc::new((
                serde_json::to_value(root).unwrap_or(Value::Null),
                components,
            ))
        })
        .clone()
}

/// Parses a JSON body and checks it against the schema the document publishes for `T`:
/// a syntax error is 400, a value the schema refuses is 422 naming the field.
pub fn parse_checked<T: DeserializeOwned + ToSchema + 'static>(bytes: &[u8]) -> Result<T, Problem> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Problem::bad_request(format!(
            "the body is not valid JSON: {}",
            printable(&e.to_string(), ECHO_MAX_CHARS)
        ))
    })?;
    validate::normalize_integers(&mut value);
    if !value.is_object() {
        return Err(Problem::invalid("body", "expected a JSON object"));
    }
    let schema = schema_of::<T>();
    validate::check(&schema.0, &schema.1, &value, "")
        .map_err(|v| Problem::invalid(v.field, v.message))?;
    from_value(value)
}

/// A JSON request body, parsed with [`parse_checked`].
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + ToSchema + 'static,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A body that says it is something else is refused before it is read. No Content-Type
        // at all is taken as JSON (minimal clients).
        if let Some(content_type) = req.headers().get(header::CONTENT_TYPE)
            && !is_json(content_type)
        {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!(
                    "the body must be JSON (Content-Type: application/json), not {}",
                    printable(&String::from_utf8_lossy(content_type.as_bytes()), 64)
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Request body too large",
                    "the body is larger than the server accepts ([http] max_body_bytes)".into(),
                )
            } else {
                Problem::new(e.status(), "bad-request", "Bad request", e.body_text())
            }
        })?;
        parse_checked(&bytes).map(JsonBody)
    }
}

/// Path parameters; a segment that is not valid UTF-8 is a 400 problem.
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParams(v))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}

/// The caller, from `Authorization: Bearer <key>`.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Some(header) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ServiceError::Unauthorized.into());
        };
        // Without a socket (in-process callers) every request counts as one unknown client.
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        // A throttled address is refused before its key is looked at: guessing stays slow
        // and its failures no longer reach the log.
        if let Err(wait) = state.auth_throttle.check(client) {
            tracing::debug!(%client, "API key attempt throttled");
            metrics::counter!("prognos_http_auth_throttled_total").increment(1);
            return Err(Problem::too_many_requests(
                "too many failed authentications from this address; retry later",
                wait,
            ));
        }
        let key = header.to_str().ok().and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
        let result = match key {
            Some(key) => state.svc.authenticate(key).await,
            None => Err(ServiceError::Unauthorized),
        };
        match result {
            Ok(principal) => Ok(Auth(principal)),
            Err(ServiceError::Unauthorized) => {
                metrics::counter!("prognos_http_auth_failures_total").increment(1);
                if state.auth_throttle.failed(client) {
                    tracing::warn!(%client, "failed API keys from this address are throttled");
                }
                // The key id (never the secret), cut and escaped: the header is the caller's.
                let presented = String::from_utf8_lossy(header.as_bytes());
                let key_id = presented
                    .trim()
                    .split_once("prg_")
                    .map_or("", |(_, rest)| rest.split('_').next().unwrap_or_default());
                tracing::warn!(
                    %client,
                    key_id = %printable(key_id, 64),
                    header_bytes = header.len(),
                    "API key rejected"
                );
                Err(ServiceError::Unauthorized.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The query parameters of `Q` (`IntoParams`): each is checked against the schema the
/// document publishes for it (a 400 naming it), then the whole string is deserialised.
pub struct Query<Q>(pub Q);

/// One query parameter's text as the JSON value its schema describes, if it reads as one.
fn query_value(schema: &Value, text: &str) -> Value {
    fn types_of<'a>(schema: &'a Value, out: &mut Vec<&'a str>) {
        match schema.get("type") {
            Some(Value::String(t)) => out.push(t),
            Some(Value::Array(ts)) => out.extend(ts.iter().filter_map(Value::as_str)),
            _ => {}
        }
        for key in ["anyOf", "oneOf"] {
            for alternative in schema
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                types_of(alternative, out);
            }
        }
    }
    let mut types = Vec::new();
    types_of(schema, &mut types);
    if types.contains(&"integer")
        && let Ok(n) = text.parse::<i64>()
    {
        return Value::from(n);
    }
    if types.contains(&"number")
        && let Some(x) = text.parse::<f64>().ok().filter(|x| x.is_finite())
        && let Some(n) = serde_json::Number::from_f64(x)
    {
        return Value::Number(n);
    }
    if types.contains(&"boolean") && (text == "true" || text == "false") {
        return Value::Bool(text == "true");
    }
    Value::String(text.to_owned())
}

impl<S, Q> FromRequestParts<S> for Query<Q>
where
    S: Send + Sync,
    Q: DeserializeOwned + IntoParams,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let axum::extract::Query(raw) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|e| Problem::bad_request(e.body_text()))?;
        let components = Components::new();
        for param in Q::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query)) {
            let name = param.name.clone();
            let required = matches!(param.required, utoipa::openapi::Required::True);
            let schema = param
                .schema
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(Value::Null);
            let mut values = raw.iter().filter(|(k, _)| *k == name).map(|(_, v)| v);
            match (values.next(), values.next()) {
                (None, _) if required => return Err(Problem::parameter(name, "is required")),
                (None, _) => {}
                (Some(_), Some(_)) => return Err(Problem::parameter(name, "given more than once")),
                (Some(text), None) => {
                    validate::check(&schema, &components, &query_value(&schema, text), &name)
                        .map_err(|v| Problem::parameter(name.clone(), v.message))?;
                }
            }
        }
        axum::extract::Query::<Q>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Query(q))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct T {
        to: String,
        n: Option<i64>,
    }

    #[test]
    fn body_errors_name_the_field() {
        let e = parse_body::<T>(b"{").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_body::<T>(br#"{"n": 1}"#).unwrap_err();
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("to"))
        );
        let e = parse_body::<T>(br#"{"to": "x", "n": "seven"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("n"));
        let e = parse_body::<T>(br#"{"to": 5}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("to"));
        let e = parse_body::<T>(b"[1]").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        assert_eq!(parse_body::<T>(br#"{"to": "x"}"#).unwrap().to, "x");
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        lines: Vec<Line>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        qty: i64,
    }

    #[test]
    fn nested_errors_name_the_path() {
        let e = parse_body::<Order>(
            br#"{"lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": "x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("lines[1].qty"));
        let e = parse_body::<Order>(br#"{"lines": [{"qty": 1}]}"#).unwrap_err();
        assert_eq!(
            (e.field.as_deref(), e.detail.as_str()),
            (Some("lines[0].sku"), "is required")
        );
    }

    #[test]
    fn a_mistyped_value_is_quoted_short() {
        let body = format!(r#"{{"to": "x", "n": "{}"}}"#, "9".repeat(100_000));
        let e = parse_body::<T>(body.as_bytes()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("n"));
        assert!(e.detail.len() < 400, "{}", e.detail.len());
    }

    #[test]
    fn many_keys_cost_one_parse() {
        // 16k junk keys and a type error: the old per-key re-parse took seconds here.
        let mut body = String::from("{");
        for i in 0..16_384 {
            body.push_str(&format!("\"k{i}\":0,"));
        }
        body.push_str(r#""to": 5}"#);
        let started = std::time::Instant::now();
        let e = parse_body::<T>(body.as_bytes()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("to"));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
