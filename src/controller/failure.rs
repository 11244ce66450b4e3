//! Why a reconcile stopped short of Ready: blocked until something changes, or transient.

use crate::desired::SpecError;
use crate::kms::KmsError;
use crate::material::MaterialError;
use crate::plan::Blocker;

/// Why a reconcile did not bring the key to Ready.
#[derive(Debug)]
pub enum Failure {
    /// Needs a change by someone (spec, Secret, IAM, AWS): Ready=False with the reason, an
    /// event, and the key waits for a change instead of retrying in a loop.
    Blocked(Blocked),
    /// Throttling, 5xx, timeouts, API conflicts: retried with backoff, Ready unchanged.
    Transient(Error),
}

/// A refusal with a fixed reason (the `Ready=False` reason and event reason), its category
/// (metric label, and whether waiting can clear it) and a message saying what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub category: Category,
    pub message: String,
}

/// What kind of change clears a refusal; a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// The object's spec is invalid or not allowed (fix the spec).
    Spec,
    /// A referenced object (connection, Secret, primary, template) is missing or unusable.
    Reference,
    /// The Secret's key material is unusable for the key spec.
    Material,
    /// KMS refused the request (permissions, limits, invalid state).
    Kms,
    /// The key in KMS conflicts with the spec (owner, spec, material, alias, deleted).
    Conflict,
    /// Waiting for something outside this object (its primary, a rotation, a key state).
    Waiting,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Spec => "spec",
            Category::Reference => "reference",
            Category::Material => "material",
            Category::Kms => "kms",
            Category::Conflict => "conflict",
            Category::Waiting => "waiting",
        }
    }
}

impl Failure {
    pub fn blocked(reason: &'static str, category: Category, message: impl Into<String>) -> Self {
        Failure::Blocked(Blocked {
            reason,
            category,
            message: message.into(),
        })
    }

    /// A referenced object is missing or unusable.
    pub fn reference(reason: &'static str, message: impl Into<String>) -> Self {
        Failure::blocked(reason, Category::Reference, message)
    }

    /// The key in KMS conflicts with the spec.
    pub fn conflict(reason: &'static str, message: impl Into<String>) -> Self {
        Failure::blocked(reason, Category::Conflict, message)
    }

    pub fn spec(e: SpecError) -> Self {
        Failure::blocked(e.reason, Category::Spec, e.to_string())
    }

    /// Unusable material; `message` says where it came from and what is wrong.
    pub fn material(e: &MaterialError, message: String) -> Self {
        Failure::blocked(e.reason(), Category::Material, message)
    }

    /// A planner blocker raised outside the plan (lockout precheck, verification, import).
    pub fn blocker(blocker: &Blocker) -> Self {
        let category = match blocker {
            Blocker::Waiting(_) | Blocker::RotationPending => Category::Waiting,
            Blocker::PolicyLockout(_)
            | Blocker::PolicyTooLarge(_)
            | Blocker::RotationUnsupported(_) => Category::Spec,
            Blocker::KeyPendingDeletion
            | Blocker::MaterialMismatch
            | Blocker::KeyIncompatible(_)
            | Blocker::AliasInUse(_)
            | Blocker::MaterialVerificationFailed(_)
            | Blocker::MaterialRetired(_)
            | Blocker::NonCurrentMaterialMissing(_) => Category::Conflict,
            Blocker::MaterialRetirementRefused { .. } | Blocker::PreviousMaterialNotRetained => {
                Category::Spec
            }
            Blocker::MaterialInventoryUnavailable => Category::Kms,
        };
        Failure::blocked(blocker.reason(), category, blocker.message())
    }

    pub fn kube(e: kube::Error) -> Self {
        Failure::Transient(Error::Kube(e))
    }

    pub fn kms(e: KmsError) -> Self {
        match e {
            e if e.is_transient() => Failure::Transient(Error::Kms(e)),
            KmsError::Rejected { ref code, .. } => {
                let reason = match code.as_str() {
                    "MalformedPolicyDocumentException" => "PolicyRejected",
                    "LimitExceededException" => "KmsLimitExceeded",
                    "AlreadyExistsException" => "AliasInUse",
                    _ => "KmsRejected",
                };
                Failure::blocked(reason, Category::Kms, e.to_string())
            }
            KmsError::NotFound { .. } => Failure::conflict("KeyGone", e.to_string()),
            KmsError::IncorrectKeyMaterial { .. } => Failure::blocker(&Blocker::MaterialMismatch),
            e => Failure::blocked(e.reason(), Category::Kms, e.to_string()),
        }
    }
}

/// Errors that end a reconcile early and are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Kms(KmsError),
    /// A PKCS#11 token went away or stayed busy (retried with a new session pool).
    #[error(transparent)]
    Pkcs11(crate::material::pkcs11::Pkcs11Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The observe → plan → execute rounds kept finding work (retried).
    #[error("KMS key {key_id} did not settle within {rounds} rounds; retrying")]
    Unsettled { key_id: String, rounds: usize },
    /// Cleanup cannot run until something changes (reported as an event; retried).
    #[error("{}: {}", .0.reason, .0.message)]
    CleanupBlocked(Blocked),
}
