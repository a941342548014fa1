//! Why the collector refused an event, a label or a request: the closed
//! list of `reason` labels of `driftwatch_events_rejected_total`.

/// Why an event (or, for request-level reasons, a request) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Request level: body not JSON or not `{"events": [...]}` (counts requests).
    MalformedBody,
    /// Request level: body larger than `max_body_bytes` (counts requests).
    TooLarge,
    /// Request level: missing or wrong bearer token (counts requests).
    Unauthorized,
    /// Request level: a known token without the `ingest` scope (counts requests).
    Forbidden,
    /// Request level: a `Content-Encoding` other than gzip, zstd or identity (counts requests).
    UnsupportedEncoding,
    MalformedEvent,
    UnknownModel,
    UnknownFeature,
    WrongType,
    BadTimestamp,
    FutureTimestamp,
    TooOld,
    /// The model already has an event with this request id.
    DuplicateRequestId,
    /// The database could not commit the batch (503; the client should retry).
    StorageError,
    /// Cluster mode: the log (NATS JetStream) did not store the batch (503;
    /// the client should retry).
    ClusterUnavailable,
    /// A label that is not `{"model", "request_id", "label" | "value"}`.
    MalformedLabel,
    /// A label for a prediction that was never stored or is past its TTL.
    UnknownRequestId,
    /// A second label for the same prediction.
    DuplicateLabel,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedBody => "malformed_body",
            RejectReason::TooLarge => "too_large",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::Forbidden => "forbidden",
            RejectReason::UnsupportedEncoding => "unsupported_encoding",
            RejectReason::MalformedEvent => "malformed_event",
            RejectReason::UnknownModel => "unknown_model",
            RejectReason::UnknownFeature => "unknown_feature",
            RejectReason::WrongType => "wrong_type",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::TooOld => "too_old",
            RejectReason::DuplicateRequestId => "duplicate_request_id",
            RejectReason::StorageError => "storage_error",
            RejectReason::ClusterUnavailable => "cluster_unavailable",
            RejectReason::MalformedLabel => "malformed_label",
            RejectReason::UnknownRequestId => "unknown_request_id",
            RejectReason::DuplicateLabel => "duplicate_label",
        }
    }
}
