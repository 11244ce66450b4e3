//! AWS KMS error shapes: the `__type` code, the message and the HTTP status AWS answers with.

use http::StatusCode;

/// An error as KMS reports it (`{"__type": code, "message": ...}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsError {
    pub code: &'static str,
    pub message: String,
    pub status: StatusCode,
}

impl KmsError {
    pub fn new(code: &'static str, message: impl Into<String>) -> KmsError {
        let status = match code {
            "KMSInternalException" | "KeyUnavailableException" => StatusCode::INTERNAL_SERVER_ERROR,
            "DependencyTimeoutException" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        KmsError {
            code,
            message: message.into(),
            status,
        }
    }

    pub fn body(&self) -> String {
        serde_json::json!({"__type": self.code, "message": self.message}).to_string()
    }
}

pub type KmsResult<T> = Result<T, KmsError>;

pub fn validation(message: impl Into<String>) -> KmsError {
    KmsError::new("ValidationException", message)
}
pub fn not_found(message: impl Into<String>) -> KmsError {
    KmsError::new("NotFoundException", message)
}
pub fn invalid_state(message: impl Into<String>) -> KmsError {
    KmsError::new("KMSInvalidStateException", message)
}
pub fn unsupported(message: impl Into<String>) -> KmsError {
    KmsError::new("UnsupportedOperationException", message)
}
pub fn incorrect_material(message: impl Into<String>) -> KmsError {
    KmsError::new("IncorrectKeyMaterialException", message)
}
