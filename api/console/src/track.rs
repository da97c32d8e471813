//! The customer's tracking page, `/track/{code}`: HTML for a browser, the API's JSON for
//! everyone else (the negotiation runs in front of the API route), and the rating form.
//! It shows what `Service::track` returns — no personal data.

use axum::Form;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use prognos_service::ServiceError;
use prognos_service::ticket_log::TicketState;

use crate::Console;
use crate::i18n::{Lang, state_key};
use crate::session::guest_lang;
use crate::view::{html_response, page, time};

/// True when the client prefers HTML to JSON (a browser navigating), by `Accept` order and
/// q-values; no `Accept` or `*/*` alone stays JSON (scripts and the API keep their answer).
pub fn wants_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let q_of = |ty: &str| -> Option<f32> {
        accept.split(',').find_map(|part| {
            let mut it = part.split(';');
            let t = it.next()?.trim();
            (t.eq_ignore_ascii_case(ty)).then(|| {
                it.find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse().ok()))
                    .unwrap_or(1.0)
            })
        })
    };
    match (q_of("text/html"), q_of("application/json")) {
        (Some(h), Some(j)) => h > j,
        (Some(h), None) => h > 0.0,
        _ => false,
    }
}

/// Middleware in front of the API's `GET /track/{code}`: a browser gets the page.
pub async fn negotiate_track(State(c): State<Console>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let code = path
        .strip_prefix("/track/")
        .filter(|rest| !rest.is_empty() && !rest.contains('/'));
    match code {
        Some(code) if req.method() == Method::GET && wants_html(req.headers()) => {
            let code = code.to_owned();
            let lang = guest_lang(req.headers());
            let notice = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("rated=")))
                .map(str::to_owned);
            render(&c, lang, &code, notice.as_deref()).await
        }
        _ => next.run(req).await,
    }
}

async fn render(c: &Console, lang: Lang, code: &str, notice: Option<&str>) -> Response {
    let t = match c.svc.track(code).await {
        Ok(t) => t,
        Err(ServiceError::NotFound { .. }) => {
            return html_response(
                StatusCode::NOT_FOUND,
                page(
                    lang,
                    None,
                    lang.t("not_found"),
                    html! { p.error { (lang.t("not_found_text")) } },
                ),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "tracking page failed");
            return html_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                page(
                    lang,
                    None,
                    lang.t("error"),
                    html! { p.error { "internal error" } },
                ),
            );
        }
    };
    let token = prognos_service::users::random_token().unwrap_or_default();
    let body = html! {
        div.card id="tracking" data-state=(t.state.as_str()) {
            dl.kv {
                dt { (lang.t("track_code")) } dd { b { (t.tracking_code) } }
                dt { (lang.t("track_state")) } dd id="track-state" { (lang.t(state_key(t.state.as_str()))) }
                dt { (lang.t("created")) } dd { (time(&t.created_at)) }
                @if t.state.is_open() {
                    dt { (lang.t("track_visit_by")) } dd { (time(&t.onsite_due)) }
                }
            }
            p { @if t.technician_assigned { (lang.t("track_assigned")) } @else { (lang.t("track_unassigned")) } }
        }
        h2 { (lang.t("timeline")) }
        ol.timeline id="track-timeline" {
            @for s in &t.timeline { li { (time(&s.at)) " · " (lang.t(state_key(&s.state))) } }
        }
        @match notice {
            Some("ok") => p.notice id="rated" { (lang.t("rate_thanks")) },
            Some("followup") => p.notice id="rated" { (lang.t("rate_thanks")) " " (lang.t("rate_followup")) },
            Some(_) => p.error id="rate-error" { (lang.t("error")) },
            None => {},
        }
        @if t.state == TicketState::Closed && notice.is_none() {
            form.card method="post" action={"/track/" (t.tracking_code) "/rate"} id="rate-form" {
                h2 { (lang.t("rate_title")) }
                input type="hidden" name="csrf" value=(token);
                div.stars {
                    @for s in 1..=5 {
                        label { input type="radio" name="score" value=(s) required; (s) " ★" }
                    }
                }
                label { (lang.t("rate_comment")) textarea name="comment" maxlength="500" {} }
                button type="submit" id="rate-send" { (lang.t("rate_send")) }
            }
        }
    };
    let mut r = html_response(
        StatusCode::OK,
        page(lang, None, lang.t("track_title"), body),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{RATE_COOKIE}={token}; Path=/track; Max-Age=3600; HttpOnly; SameSite=Lax"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

const RATE_COOKIE: &str = "prognos_rate";

#[derive(Deserialize)]
pub struct RateForm {
    #[serde(default)]
    csrf: String,
    score: i64,
    comment: Option<String>,
}

/// The rating form's target. The customer has no session: the form's token must equal the
/// cookie set with the form (double submit), so another site cannot post a rating.
pub async fn rate(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(code): Path<String>,
    Form(f): Form<RateForm>,
) -> Response {
    let expected = crate::session::cookie(&headers, RATE_COOKIE).unwrap_or("");
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(f.csrf.as_bytes())) {
        return crate::view::PageError::Csrf(guest_lang(&headers)).into_response();
    }
    let comment = f
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(500).collect::<String>());
    let outcome = match c
        .svc
        .rate_by_tracking_code(&code, f.score, comment.as_deref())
        .await
    {
        Ok(Some(_)) => "followup".to_owned(),
        Ok(None) => "ok".to_owned(),
        Err(ServiceError::Sql(e)) => {
            tracing::error!(error = %e, "rating failed");
            "error".to_owned()
        }
        Err(_) => "refused".to_owned(),
    };
    let code: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    Redirect::to(&format!("/track/{code}?rated={outcome}")).into_response()
}
