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
    crate::debug_fields!(PowerRequest as r {
        artifact_id,
        machine_id,
        machine_name,
        protocol,
        address,
        username,
        insecure,
        system_id,
        action,
        boot_device,
        ..
    });
}

/// `debug_fields!(Type as t { a, b: t.secret.len(), .. })`: a `Debug` for a type that holds a
/// secret (a password, a private key), which must never reach a log or a panic message, so only
/// the fields named are shown: each as it is, or as the expression after its `:` (in which `t`
/// is the value). A trailing `..` marks the output as leaving fields out.
#[macro_export]
macro_rules! debug_fields {
    ($ty:ident $(<$lt:lifetime>)? as $v:ident { $($field:ident $(: $shown:expr)?),* $(,)? }) => {
        $crate::debug_fields!(@impl finish, $ty $(<$lt>)?, $v, $($field $(: $shown)?),*);
    };
    ($ty:ident $(<$lt:lifetime>)? as $v:ident { $($field:ident $(: $shown:expr)?,)* .. }) => {
        $crate::debug_fields!(@impl finish_non_exhaustive, $ty $(<$lt>)?, $v, $($field $(: $shown)?),*);
    };
    (@impl $finish:ident, $ty:ident $(<$lt:lifetime>)?, $v:ident, $($field:ident $(: $shown:expr)?),*) => {
        impl ::std::fmt::Debug for $ty $(<$lt>)? {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                let $v = self;
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &$crate::debug_fields!(@value $v, $field $(, $shown)?)))*
                    .$finish()
            }
        }
    };
    (@value $v:ident, $field:ident) => {
        $v.$field
    };
    (@value $v:ident, $field:ident, $shown:expr) => {
        $shown
    };
}

pub use error::{ApiError, ErrorCode};
pub use list::ListParams;

/// Formats unix milliseconds as RFC 3339 (UTC, millisecond precision), the API's timestamp form.
pub fn format_timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
