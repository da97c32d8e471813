//! The service domain of Prognos and its persistence: the device registry today; tickets,
//! dispatch, parts and analytics build on the same store.
//!
//! Domain modules hold no HTTP types; SQL is written to run on SQLite and PostgreSQL.

pub mod alerts;
pub mod analytics;
pub mod db;
pub mod http;
pub mod registry;
pub mod service;

pub use alerts::{AlertRecord, AlertStore};
pub use db::{Database, DbError};
pub use registry::{Device, DeviceRegistry, IssuedDevice, NewDevice, RegistryError};
pub use service::demo::{
    DemoDevice, DemoNetwork, activity_counts, dispatchable_ticket_ids, seed_demo_network,
    tickets_by_state,
};
pub use service::{Service, ServiceError};
