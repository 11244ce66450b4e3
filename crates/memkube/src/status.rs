//! API errors of the in-memory API server, rendered as Kubernetes `Status` bodies.

use serde_json::{Value, json};

/// An API failure: the HTTP code, the machine-readable `reason` and a message,
/// answered to the client as a `meta/v1 Status` object like kube-apiserver does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (404, 409, 422 ...).
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, `Invalid` ...).
    pub reason: String,
    /// Human-readable `Status.message`.
    pub message: String,
    /// Optional `Status.details`.
    pub details: Option<Box<Value>>,
}

/// The reason kube-apiserver uses for an HTTP code.
pub fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// `plural` for the core group, `plural.group` otherwise (as in apiserver messages).
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

fn details(group: &str, plural: &str, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": plural });
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl ApiError {
    /// An error with the reason kube-apiserver uses for `code`.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason_for_code(code).to_string(),
            message: message.into(),
            details: None,
        }
    }

    /// 404 `<resource> "<name>" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        ApiError {
            details: Some(Box::new(details(group, plural, name))),
            ..Self::new(
                404,
                format!("{} \"{name}\" not found", qualified(group, plural)),
            )
        }
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        ApiError {
            reason: "AlreadyExists".into(),
            details: Some(Box::new(details(group, plural, name))),
            ..Self::new(
                409,
                format!("{} \"{name}\" already exists", qualified(group, plural)),
            )
        }
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        ApiError {
            details: Some(Box::new(details(group, plural, name))),
            ..Self::new(
                409,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                     please apply your changes to the latest version and try again",
                    qualified(group, plural)
                ),
            )
        }
    }

    /// 409 Conflict with a custom message (failed preconditions).
    pub fn conflict_msg(group: &str, plural: &str, name: &str, why: &str) -> Self {
        ApiError {
            details: Some(Box::new(details(group, plural, name))),
            ..Self::new(
                409,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    qualified(group, plural)
                ),
            )
        }
    }

    /// 422 Invalid: `<Kind> "<name>" is invalid: <why>`.
    pub fn invalid(group: &str, plural: &str, kind: &str, name: &str, why: &str) -> Self {
        let what = if kind.is_empty() {
            qualified(group, plural)
        } else {
            kind.to_string()
        };
        ApiError {
            details: Some(Box::new(details(group, plural, name))),
            ..Self::new(422, format!("{what} \"{name}\" is invalid: {why}"))
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 410 Expired (too old resource version).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, message)
    }

    /// The `meta/v1 Status` JSON body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = (**d).clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}
