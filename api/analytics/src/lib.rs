//! Failure analytics for reliability engineers: telemetry queries over the Parquet data set
//! and fleet reliability statistics over the service history. No HTTP types here.
//!
//! - [`history`]: devices and failures loaded from SQL (what counts as a failure);
//! - [`reliability`]: MTBF/MTTR, Weibull with censoring, defective batches and the recall
//!   list, the region × mode heatmap, surge alerts;
//! - [`kpi`]: provider KPIs rolled up the hierarchy, model accuracy from close codes.

pub mod access;
pub mod kpi;
pub mod output;
pub mod reliability;
pub mod telemetry;

/// The service history the statistics read (defined, once, by the service crate).
pub use prognos_service::history;

use prognos_stats::reliability::ReliabilityError;

/// What can go wrong in an analytics request. The HTTP layer maps `InvalidParameter` to 400
/// naming the parameter.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("invalid {name}: {message}")]
    InvalidParameter { name: String, message: String },
    /// A well-formed parameter (`name`) names something that does not exist.
    #[error("{name}: {message}")]
    UnknownName { name: &'static str, message: String },
    #[error(transparent)]
    Reliability(#[from] ReliabilityError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// Refused or failed in the service domain (e.g. the caller's role may not read this).
    #[error(transparent)]
    Service(#[from] prognos_service::ServiceError),
}

impl AnalyticsError {
    pub fn invalid(name: &str, message: impl Into<String>) -> Self {
        AnalyticsError::InvalidParameter {
            name: name.to_owned(),
            message: message.into(),
        }
    }
}
