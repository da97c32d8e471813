//! Who may read what: the one place the analytics decide access, from the caller's principal
//! (handlers never do). Fleet-wide analytics and telemetry need the `Analytics` action;
//! provider KPIs are open to a provider for its own subtree.

use prognos_service::Service;
use prognos_service::auth::{Action, Principal, Role};
use prognos_service::history::History;

use crate::AnalyticsError;
use crate::kpi::{self, ModeAccuracy, ProviderKpis};

/// Checks that `who` may read fleet-wide analytics and telemetry.
pub fn require_fleet(who: &Principal) -> Result<(), AnalyticsError> {
    who.require(Action::Analytics)?;
    Ok(())
}

/// The service history as of now, for a caller allowed to read fleet analytics.
pub async fn history(svc: &Service, who: &Principal) -> Result<History, AnalyticsError> {
    require_fleet(who)?;
    Ok(History::load(&svc.db, svc.now_ms()).await?)
}

/// Provider KPIs: a provider sees its own subtree; the OEM side sees every provider.
pub async fn provider_kpis(
    svc: &Service,
    who: &Principal,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<ProviderKpis>, AnalyticsError> {
    if who.role != Role::Provider {
        require_fleet(who)?;
    }
    kpi::provider_kpis(&svc.db, who.scope(), from_ms, to_ms).await
}

/// Model accuracy from close codes, for a caller allowed to read fleet analytics.
pub async fn model_accuracy(
    svc: &Service,
    who: &Principal,
    from_ms: i64,
    to_ms: i64,
    window_days: f64,
) -> Result<Vec<ModeAccuracy>, AnalyticsError> {
    require_fleet(who)?;
    kpi::model_accuracy(&svc.db, from_ms, to_ms, window_days).await
}
