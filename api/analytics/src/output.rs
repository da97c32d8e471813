//! One way to encode a telemetry result for the wire or a file, shared by the HTTP API and
//! `prognos query`: JSON, CSV, Arrow IPC stream or Parquet.

use serde_json::json;

use super::telemetry::{self, FleetAggregate, QueryError, SeriesResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Csv,
    Arrow,
    Parquet,
}

impl OutputFormat {
    pub const NAMES: &'static str = "json, csv, arrow or parquet";

    pub fn parse(s: &str) -> Option<OutputFormat> {
        Some(match s {
            "json" => OutputFormat::Json,
            "csv" => OutputFormat::Csv,
            "arrow" => OutputFormat::Arrow,
            "parquet" => OutputFormat::Parquet,
            _ => return None,
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json => "application/json",
            OutputFormat::Csv => "text/csv; charset=utf-8",
            OutputFormat::Arrow => "application/vnd.apache.arrow.stream",
            OutputFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// A query result that can be written in every [`OutputFormat`].
pub trait Encode {
    fn encode(&self, format: OutputFormat) -> Result<Vec<u8>, QueryError>;
}

fn csv_bytes(
    write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> Result<Vec<u8>, QueryError> {
    let mut buf = Vec::new();
    write(&mut buf).map_err(|e| QueryError::Encode(e.to_string()))?;
    Ok(buf)
}

fn json_bytes(value: serde_json::Value) -> Result<Vec<u8>, QueryError> {
    serde_json::to_vec(&value).map_err(|e| QueryError::Encode(e.to_string()))
}

impl Encode for SeriesResult {
    fn encode(&self, format: OutputFormat) -> Result<Vec<u8>, QueryError> {
        match format {
            OutputFormat::Json => json_bytes(json!({"series": self.series, "scan": self.scan})),
            OutputFormat::Csv => csv_bytes(|buf| telemetry::series_to_csv(self, buf)),
            OutputFormat::Arrow => telemetry::series_to_arrow_ipc(self),
            OutputFormat::Parquet => telemetry::series_to_parquet(self),
        }
    }
}

impl Encode for FleetAggregate {
    fn encode(&self, format: OutputFormat) -> Result<Vec<u8>, QueryError> {
        match format {
            OutputFormat::Json => json_bytes(json!({"rows": self.rows, "scan": self.scan})),
            OutputFormat::Csv => csv_bytes(|buf| telemetry::fleet_to_csv(self, buf)),
            OutputFormat::Arrow => telemetry::fleet_to_arrow_ipc(self),
            OutputFormat::Parquet => telemetry::fleet_to_parquet(self),
        }
    }
}
