//! RFC 9457 problem details, the JSON body extractor that names the offending field, the
//! bearer-key extractor, and the query-string and path extractors; bodies and queries are
//! checked against the schemas the OpenAPI document publishes for them.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
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
}

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
        }
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
            "detail": self.detail,
        });
        if let Some(obj) = body.as_object_mut() {
            if let Some(field) = &self.field {
                obj.insert("field".into(), Value::String(field.clone()));
            }
            obj.extend(self.extra);
        }
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
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
/// the field's name.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {e}")))?;
    from_value(value)
}

fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Problem> {
    let Value::Object(obj) = &value else {
        return Err(Problem::invalid("body", "expected a JSON object"));
    };
    match serde_json::from_value::<T>(value.clone()) {
        Ok(v) => Ok(v),
        Err(e) => {
            let message = e.to_string();
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                return Err(Problem::invalid(field, "is required"));
            }
            // Find the key whose removal changes the verdict: that is the culprit.
            for key in obj.keys() {
                let mut without = obj.clone();
                without.remove(key);
                match serde_json::from_value::<T>(Value::Object(without)) {
                    Ok(_) => return Err(Problem::invalid(key.clone(), message)),
                    Err(e2) if e2.to_string() == format!("missing field `{key}`") => {
                        return Err(Problem::invalid(key.clone(), message));
                    }
                    Err(_) => {}
                }
            }
            Err(Problem::invalid("body", message))
        }
    }
}

/// A type's schema as JSON with the components it refers to, made once per type.
fn schema_of<T: ToSchema + 'static>() -> Arc<(Value, Components)> {
    static CACHE: OnceLock<Mutex<HashMap<TypeId, Arc<(Value, Components)>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(TypeId::of::<T>())
        .or_insert_with(|| {
            let mut schemas = Vec::new();
            let root = crate::table::named::<T>(&mut schemas);
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
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {e}")))?;
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
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            // Over the body limit is 413; anything else (a broken stream) 400.
            let mut p = Problem::bad_request(e.body_text());
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                p.status = StatusCode::PAYLOAD_TOO_LARGE;
                p.slug = "too-large";
                p.title = "Request body too large";
            }
            p
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
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(Problem::from(ServiceError::Unauthorized))?;
        Ok(Auth(state.svc.authenticate(key).await?))
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
}
