//! RFC 9457 problem details, the JSON body extractor that names the offending field, the
//! bearer-key extractor and query-string helpers.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::AppState;
use prognos_service::ServiceError;
use prognos_service::auth::Principal;

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

/// A JSON request body, parsed with [`parse_body`].
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Problem::bad_request(e.body_text()))?;
        parse_body(&bytes).map(JsonBody)
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

/// Query-string parameters with typed getters that name the bad one.
pub struct Params(pub HashMap<String, String>);

impl Params {
    pub fn str(&self, key: &str) -> Option<String> {
        self.0.get(key).filter(|v| !v.is_empty()).cloned()
    }

    pub fn i64(&self, key: &str) -> Result<Option<i64>, Problem> {
        self.str(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| Problem::parameter(key, format!("expected an integer, got {v:?}")))
            })
            .transpose()
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>, Problem> {
        self.str(key)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| Problem::parameter(key, format!("expected a number, got {v:?}")))
            })
            .transpose()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, Problem> {
        self.str(key)
            .map(|v| match v.as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(Problem::parameter(key, "expected true or false")),
            })
            .transpose()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let axum::extract::Query(map) =
            axum::extract::Query::<HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| Problem::bad_request(e.body_text()))?;
        Ok(Params(map))
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
