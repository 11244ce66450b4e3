//! Why a PKCS#11 module, token or key was refused: one enum, a stable reason per variant.

use crate::api::KeySpec;
use cryptoki::error::{Error as CryptokiError, RvError};

/// A refusal or failure of the PKCS#11 key source. Messages name the module, token, label,
/// attribute or mechanism, never key material or the PIN.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs11Error {
    /// The library could not be loaded or initialised (`C_Initialize`).
    #[error("the PKCS#11 module `{module}` could not be loaded: {detail}")]
    ModuleNotLoadable { module: String, detail: String },
    /// No slot holds a token with this label (or the slot id does not exist).
    #[error(
        "the PKCS#11 module `{module}` has no token {token}{}",
        present_tokens(present)
    )]
    TokenNotFound {
        module: String,
        token: String,
        present: Vec<String>,
    },
    /// `C_Login` as the normal user was refused.
    #[error("login to token `{token}` failed: {detail}")]
    LoginFailed { token: String, detail: String },
    /// No key object of the expected class carries the label.
    #[error(
        "token `{token}` has no {class} labelled `{label}`; create it in the token, or set \
         keyMaterial.pkcs11.generate: {{}} to let keyfleet generate it there"
    )]
    KeyNotFound {
        token: String,
        label: String,
        class: &'static str,
    },
    /// More than one key object of the expected class carries the label.
    #[error(
        "token `{token}` has {count} {class} objects labelled `{label}`; labels must be unique"
    )]
    KeyAmbiguous {
        token: String,
        label: String,
        class: &'static str,
        count: usize,
    },
    /// The key object's attributes do not fit the key spec (type, length, modulus, curve).
    #[error("key `{label}` in token `{token}` does not fit {spec}: {detail}")]
    KeySpecMismatch {
        token: String,
        label: String,
        spec: KeySpec,
        detail: String,
    },
    /// The token will not export the key under KMS's wrapping key: an attribute forbids it or
    /// the token lacks a mechanism.
    #[error("key `{label}` in token `{token}` cannot be wrapped for import: {detail}")]
    KeyNotWrappable {
        token: String,
        label: String,
        detail: String,
    },
    /// The key cannot be fingerprinted or verified (an attribute such as CKA_SIGN is false).
    #[error("key `{label}` in token `{token}` cannot be used: {detail}")]
    KeyUnusable {
        token: String,
        label: String,
        detail: String,
    },
    /// The token went away (removed, reset, sessions closed): retried with a new session pool.
    #[error("token `{token}` is unavailable: {detail}")]
    TokenUnavailable { token: String, detail: String },
    /// Every session of the bounded pool stayed in use for the whole wait.
    #[error("token `{token}`: all {max} sessions stayed busy for {seconds} s")]
    TokenBusy {
        token: String,
        max: usize,
        seconds: u64,
    },
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {function} failed on token `{token}`: {code}")]
    OperationFailed {
        token: String,
        function: String,
        code: String,
    },
}

fn present_tokens(present: &[String]) -> String {
    if present.is_empty() {
        "; it has no initialised token at all".to_string()
    } else {
        format!("; tokens present: {}", present.join(", "))
    }
}

/// What a variant means to the controller: its stable reason, and whether it passes by itself.
#[derive(Clone, Copy)]
enum Kind {
    /// Stays until someone changes the token or the spec.
    Lasting(&'static str),
    /// Retrying later can succeed.
    Transient(&'static str),
}

impl Pkcs11Error {
    /// Each variant's reason and transience, in one table.
    fn kind(&self) -> Kind {
        use Kind::{Lasting, Transient};
        match self {
            Pkcs11Error::ModuleNotLoadable { .. } => Lasting("Pkcs11ModuleNotLoadable"),
            Pkcs11Error::TokenNotFound { .. } => Lasting("TokenNotFound"),
            Pkcs11Error::LoginFailed { .. } => Lasting("LoginFailed"),
            Pkcs11Error::KeyNotFound { .. } => Lasting("Pkcs11KeyNotFound"),
            Pkcs11Error::KeyAmbiguous { .. } => Lasting("Pkcs11KeyAmbiguous"),
            Pkcs11Error::KeySpecMismatch { .. } => Lasting("Pkcs11KeySpecMismatch"),
            Pkcs11Error::KeyNotWrappable { .. } => Lasting("Pkcs11KeyNotWrappable"),
            Pkcs11Error::KeyUnusable { .. } => Lasting("Pkcs11KeyUnusable"),
            Pkcs11Error::TokenUnavailable { .. } => Transient("Pkcs11TokenUnavailable"),
            Pkcs11Error::TokenBusy { .. } => Transient("Pkcs11TokenBusy"),
            Pkcs11Error::OperationFailed { .. } => Transient("Pkcs11OperationFailed"),
        }
    }

    /// A stable CamelCase reason for Kubernetes conditions and events.
    pub fn reason(&self) -> &'static str {
        match self.kind() {
            Kind::Lasting(reason) | Kind::Transient(reason) => reason,
        }
    }

    /// Whether retrying later can succeed without anyone changing the token or the spec.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), Kind::Transient(_))
    }
}

/// The PKCS#11 name of a return value, e.g. `CKR_PIN_INCORRECT` (cryptoki's `Display` is a
/// paragraph of prose).
pub(super) fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Whether a return value means the token or its sessions are gone (not this one call's fault).
pub(super) fn is_token_gone(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
            | RvError::SlotIdInvalid
    )
}

/// Maps a cryptoki error of a call on `token` to `TokenUnavailable` or `OperationFailed`.
pub(super) fn from_cryptoki(token: &str, error: CryptokiError) -> Pkcs11Error {
    match error {
        CryptokiError::Pkcs11(rv, function) if is_token_gone(rv) => Pkcs11Error::TokenUnavailable {
            token: token.to_string(),
            detail: format!("C_{function:?} returned {}", ckr_name(rv)),
        },
        CryptokiError::Pkcs11(rv, function) => Pkcs11Error::OperationFailed {
            token: token.to_string(),
            function: format!("C_{function:?}"),
            code: ckr_name(rv),
        },
        other => Pkcs11Error::OperationFailed {
            token: token.to_string(),
            function: "call".to_string(),
            code: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_get_their_pkcs11_names() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(ckr_name(RvError::KeyUnextractable), "CKR_KEY_UNEXTRACTABLE");
    }
}
