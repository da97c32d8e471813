//! The web console: server-rendered HTML pages (maud) for the people who run the service —
//! sign-in, fleet overview, device file, alerts, tickets, the dispatch board, parts, reliability analytics, a technician's jobs — and the
//! customer's tracking page. Every asset is compiled into the binary; no page references an
//! external URL.
//!
//! The console decides no scope: a signed-in user is a `Principal` (from
//! `prognos_service::users`) and every page calls the same domain methods the API calls, with
//! that principal. Forms are protected by the session's CSRF token; the session lives
//! server-side and the cookie is HttpOnly and SameSite=Lax.

mod analytics;
mod assets;
mod chart;
mod dispatch;
pub mod i18n;
mod pages;
mod parts;
mod session;
mod tickets;
mod track;
mod view;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use prognos_service::Service;
use prognos_service::throttle::{AuthThrottle, AuthThrottleConfig};

pub use track::negotiate_track;

/// Largest form body the console accepts.
const FORM_LIMIT: usize = 64 * 1024;

/// What the console needs: the domain and the telemetry data set it reads charts from.
#[derive(Clone)]
pub struct Console {
    pub svc: Service,
    pub telemetry_root: Option<Arc<PathBuf>>,
    /// Mark cookies `Secure` (the console is served over TLS, directly or by a proxy). A
    /// request with `X-Forwarded-Proto: https` gets `Secure` cookies either way.
    pub secure_cookies: bool,
    /// Failed sign-ins per client address (shared with the API's failed keys).
    pub sign_in_throttle: Arc<AuthThrottle>,
}

impl Console {
    pub fn new(svc: Service, telemetry_root: Option<PathBuf>) -> Console {
        Console {
            svc,
            telemetry_root: telemetry_root.map(Arc::new),
            secure_cookies: false,
            sign_in_throttle: Arc::new(AuthThrottle::new(AuthThrottleConfig::default())),
        }
    }

    /// Shares a failed-authentication throttle (the API's), so password and key guesses
    /// from one address draw on one budget.
    pub fn with_sign_in_throttle(mut self, throttle: Arc<AuthThrottle>) -> Console {
        self.sign_in_throttle = throttle;
        self
    }

    /// The console's routes (no fallback, so it merges with the API router).
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(pages::home))
            .route("/login", get(session::login_page).post(session::login))
            .route("/logout", post(session::logout))
            .route("/lang", post(session::set_lang))
            .route("/fleet", get(pages::fleet))
            .route("/devices/{id}", get(pages::device))
            .route("/alerts", get(pages::alerts))
            .route("/alerts/{id}/acknowledge", post(pages::acknowledge_alert))
            .route("/alerts/{id}/resolve", post(pages::resolve_alert))
            .route("/tickets", get(tickets::list))
            .route("/tickets/{id}", get(tickets::show))
            .route("/tickets/{id}/transition", post(tickets::transition))
            .route("/tickets/{id}/assign", post(tickets::assign))
            .route("/tickets/{id}/close", post(tickets::close))
            .route("/jobs", get(tickets::jobs))
            .route("/dispatch", get(dispatch::board).post(dispatch::dispatch))
            .route("/analytics", get(analytics::analytics))
            .route("/parts", get(parts::parts))
            .route("/parts/transfers/{id}/receive", post(parts::receive))
            .route("/analytics/recall.csv", get(analytics::recall_csv))
            .route("/track/{code}/rate", post(track::rate))
            .route("/assets/{name}", get(assets::serve))
            .layer(DefaultBodyLimit::max(FORM_LIMIT))
            .with_state(self)
    }
}
