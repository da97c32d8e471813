//! Sessions in the browser: the cookie, the signed-in extractor, CSRF checks, sign-in and
//! sign-out. The session itself (its id hash, expiry, CSRF token) lives in the domain
//! (`prognos_service::users`).

use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use prognos_service::auth::Role;
use prognos_service::users::SESSION_TTL_MS;

use crate::Console;
use crate::i18n::Lang;
use crate::view::{PageError, PageResult, html_response, page};

pub const SESSION_COOKIE: &str = "prognos_session";
const LOGIN_COOKIE: &str = "prognos_login";
const LANG_COOKIE: &str = "prognos_lang";

pub use crate::view::Signed;

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The language of a page without a session: the language cookie, else the browser's.
pub fn guest_lang(headers: &HeaderMap) -> Lang {
    cookie(headers, LANG_COOKIE)
        .and_then(Lang::parse)
        .unwrap_or_else(|| {
            Lang::from_accept(
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )
        })
}

fn secure(console: &Console, headers: &HeaderMap) -> bool {
    console.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn set_cookie(name: &str, value: &str, path: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
}

impl FromRequestParts<Console> for Signed {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, PageError> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let id = cookie(&parts.headers, SESSION_COOKIE).ok_or(PageError::SignIn(next.clone()))?;
        let s = c
            .svc
            .session(id)
            .await
            .map_err(|_| PageError::SignIn(next))?;
        Ok(Signed {
            lang: Lang::parse(&s.user.lang).unwrap_or(Lang::En),
            user: s.user,
            principal: s.principal,
            csrf: s.csrf_token,
        })
    }
}

/// Only a local path: never another origin (`//host`, `http:`), so no open redirect.
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    lang: Option<String>,
    failed: Option<String>,
}

pub async fn login_page(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> PageResult {
    let picked = q.lang.as_deref().and_then(Lang::parse);
    let lang = picked.unwrap_or_else(|| guest_lang(&headers));
    let token = prognos_service::users::random_token().map_err(|_| PageError::Internal(lang))?;
    let next = local_path(q.next.as_deref());
    let body = html! {
        form.card.login method="post" action="/login" id="login-form" {
            input type="hidden" name="csrf" value=(token);
            input type="hidden" name="next" value=(next);
            @if q.failed.is_some() { p.error id="login-error" { (lang.t("bad_login")) } }
            label { (lang.t("user_name")) input name="name" id="name" autocomplete="username" required maxlength="64"; }
            label { (lang.t("password")) input name="password" id="password" type="password" autocomplete="current-password" required maxlength="256"; }
            button type="submit" id="sign-in" { (lang.t("sign_in")) }
        }
        p.langs { a href="/login?lang=en" { "English" } " · " a href="/login?lang=zh" { "中文" } }
    };
    let mut r = html_response(
        axum::http::StatusCode::OK,
        page(lang, None, lang.t("sign_in"), body),
    );
    let sec = secure(&c, &headers);
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &token, "/login", 3600, sec),
    );
    if let Some(l) = picked {
        r.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(LANG_COOKIE, l.as_str(), "/", 365 * 86_400, sec),
        );
    }
    Ok(r)
}

/// The peer's address (the socket's, never a header a client can forge); unspecified for
/// in-process callers, which then share one budget.
pub struct ClientAddr(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| {
                    c.0.ip()
                }),
        ))
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// Sign-in. The form's token must equal the sign-in cookie set with the form (a
/// double-submit token: another site can neither read the cookie nor set it).
pub async fn login(
    State(c): State<Console>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> PageResult {
    let lang = guest_lang(&headers);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(f.csrf.as_bytes())) {
        return Err(PageError::Csrf(lang));
    }
    // A throttled address is refused before its password is hashed: guessing stays slow and
    // cannot spend the server's CPU on argon2.
    if let Err(wait) = c.sign_in_throttle.check(client) {
        metrics::counter!("prognos_console_sign_in_throttled_total").increment(1);
        return Err(PageError::Throttled(lang, wait.as_secs_f64().ceil() as u64));
    }
    let next = local_path(f.next.as_deref());
    let grant = match c.svc.sign_in(f.name.trim(), &f.password).await {
        Ok(g) => g,
        Err(prognos_service::ServiceError::Unauthorized) => {
            metrics::counter!("prognos_console_sign_in_failures_total").increment(1);
            if c.sign_in_throttle.failed(client) {
                tracing::warn!(%client, "failed console sign-ins from this address are throttled");
            }
            tracing::info!(user = %f.name.chars().take(64).collect::<String>(), "console sign-in refused");
            return Ok(Redirect::to("/login?failed=1").into_response());
        }
        Err(e) => {
            tracing::error!(error = %e, "console sign-in failed");
            return Err(PageError::Internal(lang));
        }
    };
    let mut r = Redirect::to(&next).into_response();
    let sec = secure(&c, &headers);
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &grant.session_id,
            "/",
            SESSION_TTL_MS / 1000,
            sec,
        ),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/login", 0, sec),
    );
    Ok(r)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(c): State<Console>,
    headers: HeaderMap,
    u: Signed,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    u.check(&f.csrf)?;
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        c.svc.sign_out(id).await.map_err(|e| u.fail(e))?;
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", "/", 0, secure(&c, &headers)),
    );
    Ok(r)
}

#[derive(Deserialize)]
pub struct LangForm {
    #[serde(default)]
    csrf: String,
    lang: String,
}

/// Switches the user's language (stored with the user) and returns to the page.
pub async fn set_lang(
    State(c): State<Console>,
    headers: HeaderMap,
    u: Signed,
    Form(f): Form<LangForm>,
) -> PageResult {
    u.check(&f.csrf)?;
    c.svc
        .set_user_lang(&u.user.user_id, &f.lang)
        .await
        .map_err(|e| u.fail(e))?;
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.find("://").map(|i| &r[i + 3..]))
        .and_then(|r| r.find('/').map(|i| r[i..].to_owned()));
    let mut r = Redirect::to(&local_path(back.as_deref())).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LANG_COOKIE,
            &f.lang,
            "/",
            365 * 86_400,
            secure(&c, &headers),
        ),
    );
    Ok(r)
}

/// The first page of a role.
pub fn home_of(role: Role) -> &'static str {
    match role {
        Role::Technician => "/jobs",
        Role::Provider => "/tickets",
        _ => "/fleet",
    }
}
