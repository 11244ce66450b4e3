//! KMS errors, classified into what the controller does with them (retry vs report).

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};

use super::quota::SlotError;

/// A failed KMS call, classified.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The key or alias does not exist (or is not visible to these credentials).
    #[error("KMS {operation}: not found: {message}")]
    NotFound {
        operation: &'static str,
        message: String,
    },
    /// IAM or the key policy denies the call.
    #[error("KMS {operation}: access denied: {message}")]
    AccessDenied {
        operation: &'static str,
        message: String,
    },
    /// Request quota exceeded; retried with backoff.
    #[error("KMS {operation}: throttled")]
    Throttled { operation: &'static str },
    /// The key is in a state that does not allow the call.
    #[error("KMS {operation}: invalid key state: {message}")]
    InvalidState {
        operation: &'static str,
        message: String,
    },
    /// KMS refused the imported material (not the material the key was first imported with).
    #[error("KMS {operation}: the key material is not the material this key holds")]
    IncorrectKeyMaterial { operation: &'static str },
    /// KMS refused the request as invalid (policy, alias, tags, parameters).
    #[error("KMS {operation}: {code}: {message}")]
    Rejected {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// KMS failed or could not be reached (5xx, timeout, connection); retried with backoff.
    #[error("KMS {operation}: temporarily unavailable: {message}")]
    Unavailable {
        operation: &'static str,
        message: String,
    },
    /// The request never left keyfleet: the operator is shutting down (retried by the next
    /// instance; nothing happened in KMS).
    #[error("KMS {operation}: not sent, keyfleet is shutting down")]
    NotSent { operation: &'static str },
}

impl KmsError {
    /// Classifies an SDK error of any KMS operation.
    pub fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> KmsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                let code = e.code().unwrap_or("Unknown").to_string();
                let message = e.message().unwrap_or_default().to_string();
                Self::from_code(operation, &code, message)
            }
            SdkError::DispatchFailure(_) if never_sent(&err) => KmsError::NotSent { operation },
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => KmsError::Unavailable {
                operation,
                message: describe(&err),
            },
            _ => KmsError::Unavailable {
                operation,
                message: describe(&err),
            },
        }
    }

    /// Classifies by the AWS error code.
    pub fn from_code(operation: &'static str, code: &str, message: String) -> KmsError {
        match code {
            "NotFoundException" => KmsError::NotFound { operation, message },
            "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "ExpiredTokenException" => KmsError::AccessDenied { operation, message },
            "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded" => KmsError::Throttled { operation },
            "KMSInvalidStateException" | "DisabledException" => {
                KmsError::InvalidState { operation, message }
            }
            "IncorrectKeyMaterialException" => KmsError::IncorrectKeyMaterial { operation },
            "KMSInternalException"
            | "DependencyTimeoutException"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "ExpiredImportTokenException" => KmsError::Unavailable { operation, message },
            other => KmsError::Rejected {
                operation,
                code: other.to_string(),
                message,
            },
        }
    }

    /// Worth retrying with backoff (throttling, 5xx, network).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KmsError::Throttled { .. } | KmsError::Unavailable { .. } | KmsError::NotSent { .. }
        )
    }

    /// Stable CamelCase reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            KmsError::NotFound { .. } => "KmsNotFound",
            KmsError::AccessDenied { .. } => "AccessDenied",
            KmsError::Throttled { .. } => "KmsThrottled",
            KmsError::InvalidState { .. } => "KmsInvalidState",
            KmsError::IncorrectKeyMaterial { .. } => "MaterialMismatch",
            KmsError::Rejected { .. } => "KmsRejected",
            KmsError::Unavailable { .. } | KmsError::NotSent { .. } => "KmsUnavailable",
        }
    }

    pub fn operation(&self) -> &'static str {
        match self {
            KmsError::NotFound { operation, .. }
            | KmsError::AccessDenied { operation, .. }
            | KmsError::Throttled { operation }
            | KmsError::InvalidState { operation, .. }
            | KmsError::IncorrectKeyMaterial { operation }
            | KmsError::Rejected { operation, .. }
            | KmsError::Unavailable { operation, .. }
            | KmsError::NotSent { operation } => operation,
        }
    }
}

/// Whether the request was stopped before it was sent because the operator is shutting down
/// (the rate limiter's [`SlotError::ShuttingDown`] somewhere in the chain).
fn never_sent(err: &dyn std::error::Error) -> bool {
    let mut source = err.source();
    while let Some(s) = source {
        if matches!(
            s.downcast_ref::<SlotError>(),
            Some(SlotError::ShuttingDown { .. })
        ) {
            return true;
        }
        source = s.source();
    }
    false
}

/// The error chain as one line (the SDK's Display is terse).
fn describe(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        let c = |code: &str| KmsError::from_code("Op", code, String::new());
        assert!(matches!(c("NotFoundException"), KmsError::NotFound { .. }));
        assert!(matches!(
            c("AccessDeniedException"),
            KmsError::AccessDenied { .. }
        ));
        assert!(c("ThrottlingException").is_transient());
        assert!(c("KMSInternalException").is_transient());
        assert!(!c("MalformedPolicyDocumentException").is_transient());
        assert_eq!(
            c("IncorrectKeyMaterialException").reason(),
            "MaterialMismatch"
        );
        assert_eq!(c("KMSInvalidStateException").reason(), "KmsInvalidState");
    }
}
