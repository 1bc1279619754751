//! How an HTTP answer says what went wrong: `{"error": message}` with a status, and
//! the one place where a node error becomes a status ([`status_of`]).

use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sqlraft::{ErrorKind, NodeError};

use crate::statements::BodyError;

/// An answer other than 200, with `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({ "error": self.message }), false)
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is too large".to_string()
        } else {
            format!("cannot read the request body: {}", e.body_text())
        };
        ApiError { status, message }
    }
}

/// The HTTP status of a node error, from what it means for the request
/// ([`NodeError::kind`]): after a 503 nothing was applied and a retry is safe; after a
/// 500 a write may or may not have been applied (or the node has failed).
pub(crate) fn status_of(e: &NodeError) -> StatusCode {
    match e.kind() {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<crate::services::ServiceError> for ApiError {
    fn from(e: crate::services::ServiceError) -> Self {
        match e {
            crate::services::ServiceError::Invalid(message) => ApiError::bad_request(message),
            crate::services::ServiceError::Node(e) => e.into(),
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        ApiError {
            status: status_of(&e),
            message: e.to_string(),
        }
    }
}

pub(crate) fn json_response<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    body: &T,
    pretty: bool,
) -> Response {
    let text = if pretty {
        serde_json::to_string_pretty(body)
    } else {
        serde_json::to_string(body)
    }
    .unwrap_or_else(|_| "{}".into());
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_node_error_has_one_status() {
        let cases = [
            (NodeError::Invalid("x".into()), 400),
            (
                NodeError::Query(sqlraft::SqliteError::Query("x".into())),
                400,
            ),
            (NodeError::Conflict("x".into()), 409),
            (NodeError::ServiceRemoved("x".into()), 409),
            (NodeError::NotFound("x".into()), 404),
            (NodeError::NoLeader, 503),
            (NodeError::Dropped, 503),
            (NodeError::LeaderChanging, 503),
            (NodeError::Removed, 503),
            (NodeError::Stopped, 503),
            (NodeError::Timeout(1), 503),
            (
                NodeError::Query(sqlraft::SqliteError::PoolUnavailable("x".into())),
                503,
            ),
            (NodeError::UnknownOutcome("x".into()), 500),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e).as_u16(), status, "{e:?}");
            assert_eq!(ApiError::from(e).status.as_u16(), status);
        }
    }
}
