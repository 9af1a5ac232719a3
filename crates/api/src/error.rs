//! One error-code enum for the whole system. Services answer with a code over the bus; the
//! gateway turns the code into an HTTP status and the JSON envelope
//! `{"error": {"code", "message", "field"}}`. Messages are lowercase and name the field when
//! the error is about one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a field fails validation (400).
    InvalidArgument,
    /// No valid token was presented (401).
    Unauthenticated,
    /// The token's role may not do this (403).
    PermissionDenied,
    /// The addressed resource or route does not exist (404).
    NotFound,
    /// The method is not allowed on this route (405).
    MethodNotAllowed,
    /// The request conflicts with the current state (409).
    Conflict,
    /// The client did not send its request body in time (408).
    RequestTimeout,
    /// The request body is larger than allowed (413).
    PayloadTooLarge,
    /// The request's URI is longer than allowed (414).
    UriTooLong,
    /// The request's headers are too many or too large (431).
    HeadersTooLarge,
    /// The request body is not JSON (415).
    UnsupportedMediaType,
    /// The feature exists in the API but is not built yet (501).
    NotImplemented,
    /// No service instance could answer; retry later (503).
    Unavailable,
    /// A service did not answer in time (504).
    Timeout,
    /// A bug or an unexpected failure on our side (500).
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::RequestTimeout,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::NotImplemented,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::Internal,
    ];

    /// The one table of what each code is on the wire: its HTTP status (REST) and its gRPC
    /// status code (the numbers of `google.rpc.Code`; the gateway's gRPC side maps them to
    /// `tonic::Code`).
    pub fn statuses(self) -> (u16, i32) {
        match self {
            ErrorCode::InvalidArgument => (400, 3),   // INVALID_ARGUMENT
            ErrorCode::Unauthenticated => (401, 16),  // UNAUTHENTICATED
            ErrorCode::PermissionDenied => (403, 7),  // PERMISSION_DENIED
            ErrorCode::NotFound => (404, 5),          // NOT_FOUND
            ErrorCode::MethodNotAllowed => (405, 12), // UNIMPLEMENTED
            ErrorCode::Conflict => (409, 10),         // ABORTED (HTTP 409 in google.rpc)
            ErrorCode::RequestTimeout => (408, 4),    // DEADLINE_EXCEEDED
            ErrorCode::PayloadTooLarge => (413, 8),   // RESOURCE_EXHAUSTED
            ErrorCode::UriTooLong => (414, 8),        // RESOURCE_EXHAUSTED
            ErrorCode::HeadersTooLarge => (431, 8),   // RESOURCE_EXHAUSTED
            ErrorCode::UnsupportedMediaType => (415, 3), // INVALID_ARGUMENT
            ErrorCode::Internal => (500, 13),         // INTERNAL
            ErrorCode::NotImplemented => (501, 12),   // UNIMPLEMENTED
            ErrorCode::Unavailable => (503, 14),      // UNAVAILABLE
            ErrorCode::Timeout => (504, 4),           // DEADLINE_EXCEEDED
        }
    }

    pub fn http_status(self) -> u16 {
        self.statuses().0
    }

    /// The gRPC status code (`google.rpc.Code` number).
    pub fn grpc_code(self) -> i32 {
        self.statuses().1
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How every "the database is unavailable" error begins ([`ApiError::database_unavailable`]).
pub const DATABASE_UNAVAILABLE: &str = "the database is unavailable";

/// An error as it crosses the bus and reaches the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A validation failure of one field; the message is prefixed with the field's name.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError {
            code: ErrorCode::InvalidArgument,
            message: format!("{field}: {message}"),
            field: Some(field.to_owned()),
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::new(ErrorCode::Internal, message.to_string())
    }

    pub fn unavailable(message: impl std::fmt::Display) -> Self {
        ApiError::new(ErrorCode::Unavailable, message.to_string())
    }

    /// A service could not reach its database. Only a read may answer this as is (503, nothing
    /// was done); a write may have committed before its next statement failed, so the service
    /// kit turns it into [`ApiError::outcome_unknown`] for every request that is not a read.
    pub fn database_unavailable(detail: impl std::fmt::Display) -> Self {
        ApiError::unavailable(format!("{DATABASE_UNAVAILABLE} ({detail}); retry later"))
    }

    pub fn is_database_unavailable(&self) -> bool {
        self.code == ErrorCode::Unavailable && self.message.starts_with(DATABASE_UNAVAILABLE)
    }

    /// 504: the request may or may not have taken effect. Read before repeating it, or repeat
    /// it with the same `Idempotency-Key`.
    pub fn outcome_unknown(what: impl std::fmt::Display) -> Self {
        ApiError::new(
            ErrorCode::Timeout,
            format!("outcome unknown: {what}; read the resource before repeating the request, or repeat it with the same Idempotency-Key"),
        )
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code,
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }

    pub fn to_proto(&self) -> crate::proto::ServiceError {
        crate::proto::ServiceError {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
            field: self.field.clone().unwrap_or_default(),
        }
    }

    pub fn from_proto(e: crate::proto::ServiceError) -> Self {
        ApiError {
            // An unknown code means a newer peer; treat it as ours to fix, not the client's.
            code: ErrorCode::parse(&e.code).unwrap_or(ErrorCode::Internal),
            message: e.message,
            field: (!e.field.is_empty()).then_some(e.field),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The one error envelope every non-2xx response carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// Lowercase, starting with the field's name when the error is about one.
    pub message: String,
    /// The request field (body, query or path) the error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_names() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }

    #[test]
    fn client_mistakes_are_4xx_and_ours_are_5xx() {
        for code in ErrorCode::ALL {
            let status = code.http_status();
            let ours = matches!(
                code,
                ErrorCode::Internal
                    | ErrorCode::NotImplemented
                    | ErrorCode::Unavailable
                    | ErrorCode::Timeout
            );
            assert_eq!(status >= 500, ours, "{code}");
        }
    }

    #[test]
    fn proto_round_trip_keeps_the_field() {
        let e = ApiError::invalid("text", "must not be empty");
        assert_eq!(e.message, "text: must not be empty");
        assert_eq!(ApiError::from_proto(e.to_proto()), e);
        let plain = ApiError::not_found("mainscript 1");
        assert_eq!(ApiError::from_proto(plain.to_proto()).field, None);
    }
}
