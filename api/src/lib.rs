//! The service domain of Prognos and its persistence: the device registry today; tickets,
//! dispatch, parts and analytics build on the same store.
//!
//! Domain modules hold no HTTP types; SQL is written to run on SQLite and PostgreSQL.

pub mod alerts;
pub mod db;
pub mod registry;

pub use alerts::{AlertRecord, AlertStore};
pub use db::{Database, DbError};
pub use registry::{Device, DeviceRegistry, IssuedDevice, NewDevice, RegistryError};
