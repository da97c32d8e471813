//! The HTTP server: our own accept loop over hyper with the limits that keep one client from
//! starving the others — or the MQTT broker, which shares this process, its file descriptors
//! and its runtime.
//!
//! - at most `max_connections` connections: past it the loop stops accepting, so new ones wait
//!   in the kernel's backlog instead of taking file descriptors;
//! - a header-read timeout from accept and from the end of each response (hyper restarts the
//!   timer when a keep-alive connection goes idle), so a half-sent header (slowloris) or an
//!   idle connection is closed and its slot freed;
//! - headers, path and query, and bodies are bounded in bytes; over the limit is 431, 414, 413;
//! - handlers run under a timeout and a global concurrency limit; past the limit a request is
//!   shed at once with 503 and `Retry-After`, never queued without bound.
//!
//! Every error answer is `application/problem+json`, including axum's own rejections.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use crate::problem::Problem;

/// The server's limits; `[http]` in the config file sets them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpLimits {
    /// From accept (or the end of the previous response) to the last header byte.
    pub header_read_timeout: Duration,
    /// One request, body upload included, to its response head.
    pub request_timeout: Duration,
    /// Open connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// Requests in handlers at once; more get 503 at once.
    pub max_concurrent_requests: usize,
    /// Request body (413 past it).
    pub max_body_bytes: usize,
    /// Request line and headers together (431 past it).
    pub max_header_bytes: usize,
    /// Path and query (414 past it).
    pub max_uri_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_concurrent_requests: 64,
            max_body_bytes: 2 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown`; then stops accepting, lets
/// requests in flight finish (at most the request timeout) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let app = with_limits(app, &limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let mut saturated = false;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                saturated = false;
                permit
            }
            Err(_) => {
                if !saturated {
                    saturated = true;
                    tracing::warn!(
                        max = limits.max_connections,
                        "HTTP connection limit reached; new connections wait"
                    );
                }
                metrics::counter!("prognos_http_connection_limit_reached_total").increment(1);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin; the
                    // client waits in the backlog.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = graceful
            .watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "HTTP connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let drain = limits.request_timeout + Duration::from_secs(1);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "HTTP connections still open {} s after shutdown; closing them",
            drain.as_secs()
        );
    }
}

/// The per-request limits as layers around every route (outermost last).
pub fn with_limits(app: Router, limits: &HttpLimits) -> Router {
    let timeout = limits.request_timeout;
    app.layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |e: BoxError| async move {
                    unavailable(e, timeout)
                }))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(
                    limits.max_concurrent_requests.max(1),
                ))
                .timeout(timeout),
        )
        .layer(middleware::map_response(as_problem))
        .layer(middleware::from_fn_with_state(
            limits.max_uri_bytes,
            limit_uri,
        ))
}

/// A handler that ran out of time or found no free slot: 503, retry shortly.
fn unavailable(e: BoxError, timeout: Duration) -> Response {
    let mut problem = if e.is::<tower::timeout::error::Elapsed>() {
        metrics::counter!("prognos_http_request_timeouts_total").increment(1);
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "Request timed out",
            format!(
                "the request took longer than {} ms ([http] request_timeout_ms)",
                timeout.as_millis()
            ),
        )
    } else if e.is::<tower::load_shed::error::Overloaded>() {
        metrics::counter!("prognos_http_requests_shed_total").increment(1);
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Server busy",
            "too many requests in progress ([http] max_concurrent_requests); retry shortly".into(),
        )
    } else {
        tracing::error!(error = %e, "HTTP middleware failed");
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request failed".into(),
        )
        .into_response();
    };
    problem.retry_after = Some(1);
    problem.into_response()
}

async fn limit_uri(State(max): State<usize>, request: Request, next: Next) -> Response {
    let len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if len > max {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "URI too long",
            format!("the path and query are {len} bytes; at most {max} are accepted"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Turns a plain-text or empty error answer (axum's rejections of a path or a query, 404 and
/// 405 from the router) into problem+json; its text becomes the (cut) detail. Answers with a
/// body of their own type (problem+json, the JSON of a failing `/healthz`) stay as they are.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Rejection texts are short; anything longer is not worth quoting.
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let (slug, title) = kind(status);
    let detail = if text.is_empty() {
        title.to_lowercase()
    } else {
        text
    };
    let (problem, body) = Problem::new(status, slug, title, detail)
        .into_response()
        .into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(problem.headers);
    Response::from_parts(parts, body)
}

fn kind(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("bad-request", "Bad request"),
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Request body too large"),
        StatusCode::URI_TOO_LONG => ("uri-too-long", "URI too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::UNPROCESSABLE_ENTITY => ("validation", "Invalid input"),
        StatusCode::TOO_MANY_REQUESTS => ("too-many-requests", "Too many requests"),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "Service unavailable"),
        s if s.is_server_error() => ("internal", "Internal error"),
        _ => ("http-error", "HTTP error"),
    }
}
