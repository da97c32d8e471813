//! The page shell (head, navigation, language switch, sign-out), error pages and small view
//! helpers shared by the pages.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use prognos_service::ServiceError;
use prognos_service::auth::{Action, Principal, Role, allowed};
use prognos_service::users::User;
use subtle::ConstantTimeEq;

use crate::assets;
use crate::i18n::{Lang, state_key};

/// A signed-in person (made from the session cookie by `session`).
#[derive(Debug, Clone)]
pub struct Signed {
    pub user: User,
    pub principal: Principal,
    pub csrf: String,
    pub lang: Lang,
}

impl Signed {
    /// Checks a form's CSRF token against the session's (constant time).
    pub fn check(&self, token: &str) -> Result<(), PageError> {
        if bool::from(token.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(PageError::Csrf(self.lang))
        }
    }

    pub fn fail(&self, e: ServiceError) -> PageError {
        PageError::from_service(self, e)
    }
}

/// A finished HTML page.
pub fn page(lang: Lang, user: Option<&Signed>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.html()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Prognos" }
                link rel="stylesheet" href=(assets::url("console.css"));
                link rel="icon" href=(assets::url("favicon.svg")) type="image/svg+xml";
                script src=(assets::url("console.js")) defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "Prognos" }
                    @if let Some(u) = user {
                        nav { (nav(lang, u)) }
                        div.who {
                            span { (lang.t("signed_in_as")) " " b { (u.user.name) } " (" (role_label(lang, u.user.role)) ")" }
                            form.inline method="post" action="/lang" {
                                (csrf_field(u))
                                input type="hidden" name="lang" value=(if lang == Lang::En { "zh" } else { "en" });
                                button.link type="submit" id="lang-switch" {
                                    @if lang == Lang::En { "中文" } @else { "English" }
                                }
                            }
                            form.inline method="post" action="/logout" {
                                (csrf_field(u))
                                button.link type="submit" id="sign-out" { (lang.t("sign_out")) }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

fn nav(lang: Lang, u: &Signed) -> Markup {
    let p = &u.principal;
    html! {
        @if p.role == Role::Technician {
            a href="/jobs" { (lang.t("nav_jobs")) }
        }
        @if allowed(p.role, Action::RegistryRead) && p.role != Role::Technician {
            a href="/fleet" { (lang.t("nav_fleet")) }
            a href="/alerts" { (lang.t("nav_alerts")) }
        }
        @if allowed(p.role, Action::ReadTickets) {
            a href="/tickets" { (lang.t("nav_tickets")) }
            a href="/tickets?view=board" { (lang.t("nav_board")) }
        }
        @if allowed(p.role, Action::Dispatch) {
            a href="/dispatch" { (lang.t("nav_dispatch")) }
        }
        @if allowed(p.role, Action::Parts) {
            a href="/parts" { (lang.t("nav_parts")) }
        }
        @if allowed(p.role, Action::Analytics) {
            a href="/analytics" { (lang.t("nav_analytics")) }
        }
    }
}

/// A query parameter's value; an empty value counts as absent (an unselected filter).
pub fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

pub fn csrf_field(u: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(u.csrf); }
}

/// An instant as `<time>`: UTC text that the script rewrites in the reader's time zone.
pub fn time(rfc3339: &str) -> Markup {
    let shown = rfc3339.replace('T', " ").replace('Z', " UTC");
    html! { time datetime=(rfc3339) { (shown) } }
}

pub fn time_ms(ms: i64) -> Markup {
    time(&prognos_service::ms_to_rfc3339(ms))
}

pub fn state_label(lang: Lang, state: &str) -> Markup {
    html! { span class={"state st-" (state)} { (lang.t(state_key(state))) } }
}

/// "3 h 20 min left" / "overdue 5 min", with the status class; `data-due` lets the script
/// count down.
pub fn sla_badge(lang: Lang, sla: &prognos_service::ticket_log::SlaView) -> Markup {
    let text = match (sla.phase.as_str(), sla.remaining_secs) {
        ("paused", _) => lang.t("sla_paused").to_owned(),
        ("stopped", _) => lang.t("sla_stopped").to_owned(),
        ("met", _) => lang.t("sla_met").to_owned(),
        (_, Some(s)) if s < 0 => format!("{} {}", lang.t("sla_overdue"), duration(-s)),
        (_, Some(s)) => format!("{} {}", duration(s), lang.t("sla_left")),
        _ => String::new(),
    };
    let due = match sla.phase.as_str() {
        "response" => Some(&sla.response_due),
        "onsite" => Some(&sla.onsite_due),
        _ => None,
    };
    html! {
        span class={"sla sla-" (sla.status)} data-due=[due] data-status=(sla.status) { (text) }
    }
}

pub fn duration(secs: i64) -> String {
    let m = secs / 60;
    if m < 60 {
        format!("{m} min")
    } else if m < 48 * 60 {
        format!("{} h {} min", m / 60, m % 60)
    } else {
        format!("{} d {} h", m / 1440, (m % 1440) / 60)
    }
}

pub fn opt(v: Option<&str>) -> &str {
    v.unwrap_or("—")
}

/// What went wrong, as a page.
#[derive(Debug)]
pub enum PageError {
    /// No (valid) session: to the sign-in page, then back to `next`.
    SignIn(String),
    Forbidden(Lang),
    NotFound(Lang),
    Csrf(Lang),
    /// The domain refused the input; shown with its message.
    Invalid(Lang, String),
    /// Too many failed sign-ins from the address: 429 with `Retry-After` (seconds).
    Throttled(Lang, u64),
    Internal(Lang),
}

impl PageError {
    /// Maps a domain error. A scoped caller (provider, bound technician) gets "forbidden"
    /// for what it cannot see, whether or not it exists, so the answer reveals nothing.
    pub fn from_service(u: &Signed, e: ServiceError) -> PageError {
        let scoped = u.principal.is_scoped();
        match e {
            ServiceError::NotFound { .. } if scoped => PageError::Forbidden(u.lang),
            ServiceError::NotFound { .. } => PageError::NotFound(u.lang),
            ServiceError::Forbidden(_) => PageError::Forbidden(u.lang),
            ServiceError::Unauthorized => PageError::SignIn("/".into()),
            ServiceError::Sql(_) | ServiceError::Random(_) => {
                tracing::error!(error = %e, "console request failed");
                PageError::Internal(u.lang)
            }
            e => PageError::Invalid(u.lang, e.to_string()),
        }
    }
}

pub type PageResult = Result<Response, PageError>;

pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

pub fn ok(markup: Markup) -> PageResult {
    Ok(html_response(StatusCode::OK, markup))
}

fn error_page(lang: Lang, status: StatusCode, title: &str, text: &str) -> Response {
    html_response(
        status,
        page(
            lang,
            None,
            title,
            html! { p.error id="error" data-status=(status.as_u16()) { (text) } p { a href="/" { "←" } } },
        ),
    )
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn(next) => {
                let next: String = next
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"/-_.".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                Redirect::to(&format!("/login?next={next}")).into_response()
            }
            PageError::Forbidden(l) => error_page(
                l,
                StatusCode::FORBIDDEN,
                l.t("forbidden"),
                l.t("forbidden_text"),
            ),
            PageError::NotFound(l) => error_page(
                l,
                StatusCode::NOT_FOUND,
                l.t("not_found"),
                l.t("not_found_text"),
            ),
            PageError::Csrf(l) => error_page(
                l,
                StatusCode::FORBIDDEN,
                l.t("forbidden"),
                l.t("csrf_failed"),
            ),
            PageError::Invalid(l, m) => {
                error_page(l, StatusCode::UNPROCESSABLE_ENTITY, l.t("error"), &m)
            }
            PageError::Throttled(l, secs) => {
                let mut r = error_page(
                    l,
                    StatusCode::TOO_MANY_REQUESTS,
                    l.t("error"),
                    l.t("too_many_sign_ins"),
                );
                r.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
                r
            }
            PageError::Internal(l) => error_page(
                l,
                StatusCode::INTERNAL_SERVER_ERROR,
                l.t("error"),
                "internal error",
            ),
        }
    }
}

/// Embedded JSON for the page script and for tests (`</` escaped so it cannot end the tag).
pub fn json_script(id: &str, value: &serde_json::Value) -> Markup {
    let text = value.to_string().replace("</", "<\\/");
    html! { script type="application/json" id=(id) { (PreEscaped(text)) } }
}

/// A role as the signed-in person reads it.
pub fn role_label(lang: Lang, role: prognos_service::auth::Role) -> &'static str {
    use prognos_service::auth::Role;
    lang.t(match role {
        Role::Admin => "role_admin",
        Role::Scheduler => "role_scheduler",
        Role::Engineer => "role_engineer",
        Role::Technician => "role_technician",
        Role::Provider => "role_provider",
    })
}
