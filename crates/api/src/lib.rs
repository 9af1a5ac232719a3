//! Bootfleet's contract, shared by every other crate and depending on none of them: the REST
//! types (camelCase JSON, as in the original Cluster Platform Provisioner tutorial), the error
//! codes and their HTTP statuses, the versioned NATS subjects and the protobuf bus messages.

pub mod actions;
pub mod artifacts;
mod bmc;
pub mod error;
pub mod list;
pub mod machines;
pub mod rest;
pub mod rules;
pub mod subjects;
pub mod validate;
pub mod whole_number;

/// Messages exchanged over NATS, generated from `proto/bootfleet/v1/bus.proto`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/bootfleet.v1.rs"));

    // The password stays out of logs and panics (prost's derived Debug is skipped for it).
    impl std::fmt::Debug for PowerRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PowerRequest")
                .field("artifact_id", &self.artifact_id)
                .field("machine_id", &self.machine_id)
                .field("machine_name", &self.machine_name)
                .field("protocol", &self.protocol)
                .field("address", &self.address)
                .field("username", &self.username)
                .field("insecure", &self.insecure)
                .field("system_id", &self.system_id)
                .field("action", &self.action)
                .field("boot_device", &self.boot_device)
                .finish_non_exhaustive()
        }
    }
}

pub use error::{ApiError, ErrorCode};
pub use list::ListParams;

/// Formats unix milliseconds as RFC 3339 (UTC, millisecond precision), the API's timestamp form.
pub fn format_timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
