//! Bootfleet's contract, shared by every other crate and depending on none of them: the REST
//! types (camelCase JSON, as in the original Cluster Platform Provisioner tutorial), the error
//! codes and their HTTP statuses, the versioned NATS subjects and the protobuf bus messages.

pub mod actions;
pub mod artifacts;
pub mod error;
pub mod list;
pub mod machines;
pub mod rest;
pub mod subjects;
pub mod validate;

/// Messages exchanged over NATS, generated from `proto/bootfleet/v1/bus.proto`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/bootfleet.v1.rs"));
}

pub use error::{ApiError, ErrorCode};
pub use list::ListParams;

/// Formats unix milliseconds as RFC 3339 (UTC, millisecond precision), the API's timestamp form.
pub fn format_timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
