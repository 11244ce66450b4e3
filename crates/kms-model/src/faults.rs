//! Scheduled faults: a request of an operation answered with AccessDenied, a throttle, another
//! refusal, a 500 before the call takes effect, a 500 after it did (the answer is lost), or an
//! answer with a corrupted field.

/// What happens to a request the fault catches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The call takes effect, then the answer is replaced by a 500 KMSInternalException.
    LostAnswer,
    /// A 500 KMSInternalException; the call does not take effect.
    ServerError,
    /// A 400 AccessDeniedException; the call does not take effect.
    AccessDenied,
    /// A 400 ThrottlingException, as if over the quota; the call does not take effect.
    Throttle,
    /// A 400 with this error code (`LimitExceededException`, `KMSInvalidStateException`, ...),
    /// for refusals the model does not reach on its own (an account quota, a state AWS enters
    /// briefly); the call does not take effect.
    Refuse(&'static str),
    /// The call takes effect, and the answer's field of this name (e.g. the `PublicKey` of
    /// GetParametersForImport) comes back as bytes that mean nothing: an answer corrupted on
    /// the way, or from an endpoint that only imitates KMS.
    CorruptAnswer(&'static str),
}

/// A fault for the next `remaining` requests of an operation (in one Region, or any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub operation: String,
    pub kind: FaultKind,
    pub region: Option<String>,
    pub remaining: usize,
}

impl Fault {
    /// The next request of `operation` (e.g. `"CreateKey"`), in any Region.
    pub fn once(operation: &str, kind: FaultKind) -> Fault {
        Fault {
            operation: operation.to_string(),
            kind,
            region: None,
            remaining: 1,
        }
    }

    /// Every request of `operation` from now on.
    pub fn always(operation: &str, kind: FaultKind) -> Fault {
        Fault {
            remaining: usize::MAX,
            ..Fault::once(operation, kind)
        }
    }

    /// The next `n` requests.
    pub fn times(mut self, n: usize) -> Fault {
        self.remaining = n;
        self
    }

    /// Only requests to `region`.
    pub fn in_region(mut self, region: &str) -> Fault {
        self.region = Some(region.to_string());
        self
    }
}

/// Takes one use of the first fault matching the request.
pub fn take(faults: &mut [Fault], operation: &str, region: &str) -> Option<FaultKind> {
    let f = faults.iter_mut().find(|f| {
        f.remaining > 0
            && f.operation == operation
            && f.region.as_deref().is_none_or(|r| r == region)
    })?;
    f.remaining -= 1;
    Some(f.kind)
}
