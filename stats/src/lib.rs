//! Prognos statistics: the numeric foundation the models and the failure analytics share.
//!
//! - [`special`]: one implementation of log-gamma, the incomplete gamma and beta functions,
//!   erfc, the normal CDF and quantile.
//! - [`sample`]: descriptive statistics, quantiles, a symmetric eigen solver and the seeded
//!   generator the models use for reproducible subsampling.
//! - [`reliability`]: Weibull life models with right censoring, probability plots,
//!   likelihood-ratio and exact Poisson-rate tests.
//!
//! Pure functions of their inputs: no I/O, no clock, no threads.

pub mod reliability;
pub mod sample;
pub mod special;
