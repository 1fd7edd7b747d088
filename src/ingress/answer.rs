//! What an event's outcome looks like to a sender: a status code and a JSON
//! body. One mapping, shared by HTTP ingest and NATS ingest (whose replies
//! carry the same JSON), so both answer alike.

use super::{Answer, Rejection};
use hyper::StatusCode;
use serde_json::{json, Value};

/// The one mapping from a refused event to its status code.
pub fn rejection_status(r: &Rejection) -> StatusCode {
    match r {
        Rejection::UnknownSource(_) => StatusCode::NOT_FOUND,
        Rejection::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Rejection::Stale(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
        Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Rejection::ClientNotAllowed { .. } => StatusCode::FORBIDDEN,
        Rejection::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Rejection::SchemaViolation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Rejection::QuotaFull | Rejection::DiskFull | Rejection::Unavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// The status and JSON body of one event's outcome.
pub fn answer_body(a: &Answer) -> (StatusCode, Value) {
    match a {
        Answer::Accepted { id } => (
            StatusCode::ACCEPTED,
            json!({"id": id, "status": "accepted"}),
        ),
        Answer::Duplicate { id } => (StatusCode::OK, json!({"id": id, "status": "duplicate"})),
        Answer::Filtered { id } => (
            StatusCode::ACCEPTED,
            json!({"id": id, "status": "filtered"}),
        ),
        Answer::Quarantined { id } => (
            StatusCode::ACCEPTED,
            json!({"id": id, "status": "quarantined"}),
        ),
        Answer::Rejected(r) => {
            let mut error = json!({"code": r.code(), "message": r.to_string()});
            if let Rejection::SchemaViolation { schema, violations } = r {
                error["schema"] = json!(schema);
                error["violations"] = json!(violations);
            }
            (rejection_status(r), json!({ "error": error }))
        }
    }
}

/// A batch is answered 202 with one result per element, each the body a
/// single post would have had plus its `http_status`. When every element
/// failed the same way, that status is the batch's.
pub fn batch(answers: &[Answer]) -> (StatusCode, Value) {
    let mut statuses = Vec::with_capacity(answers.len());
    let results: Vec<Value> = answers
        .iter()
        .map(|a| {
            let (status, mut body) = answer_body(a);
            body["http_status"] = json!(status.as_u16());
            statuses.push(status);
            body
        })
        .collect();
    let first = statuses.first().copied().unwrap_or(StatusCode::BAD_REQUEST);
    let uniform = statuses.iter().all(|s| *s == first);
    let status = if (first.is_client_error() || first.is_server_error()) && uniform {
        first
    } else {
        StatusCode::ACCEPTED
    };
    (status, json!({ "results": results }))
}
