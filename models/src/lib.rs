//! Prognos models: anomaly detectors, health indicators, remaining useful
//! life, alert state machines and evaluation metrics.
//!
//! Everything here is a pure function of its inputs — no I/O, no clock, no
//! threads — so the same code runs online in the ingest pipeline, offline in
//! `prognos evaluate` and inside tests, and results are reproducible.

pub mod alert;
pub mod detector;
pub mod error;
pub mod eval;
pub mod gbm;
pub mod learned;
pub mod metrics;
pub mod monitor;
pub mod multivariate;
pub mod parse;
pub mod pca;
pub mod profile;
pub mod regime;
pub mod rul;
pub mod score;
pub mod stream;
pub mod synth;
pub mod univariate;

pub use error::{ModelError, ParseError};
