//! One bounded pool of logged-in sessions per token: login with a zeroized PIN, blocking calls, async entry points.
//!
//! PKCS#11 calls block the calling thread. Async callers use [`TokenPool::open_async`] and
//! [`blocking`] (both `spawn_blocking`); the synchronous [`crate::material::ImportableMaterial`]
//! methods of an HSM key run their calls under `block_in_place` on a multi-threaded runtime,
//! so a slow token stalls neither the runtime's other tasks nor other tokens.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use zeroize::Zeroizing;

use super::capabilities::TokenCapabilities;
use super::error::{ckr_name, from_cryptoki};
use super::{Pkcs11Error, load_module};

/// Sessions per token unless configured otherwise.
pub const DEFAULT_MAX_SESSIONS: usize = 4;

/// How long an operation waits for a free session before `Pkcs11TokenBusy`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which token of a module.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TokenSelector {
    /// The token whose label (`CKA_LABEL` of the token info, trailing blanks ignored) is this.
    Label(String),
    /// The slot with this id.
    Slot(u64),
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSelector::Label(label) => write!(f, "labelled `{label}`"),
            TokenSelector::Slot(id) => write!(f, "in slot {id}"),
        }
    }
}

/// Where a token is: the module path inside the operator's container and the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenConfig {
    pub module: PathBuf,
    pub token: TokenSelector,
    /// At most this many sessions are open at once (at least 1).
    pub max_sessions: usize,
}

/// Open sessions of a pool.
struct Sessions {
    idle: Vec<Session>,
    open: usize,
    /// Set when the token went away; every later call fails with it.
    broken: Option<Pkcs11Error>,
}

/// A logged-in token: a bounded set of sessions, the token's capabilities, and a lock that
/// serialises key generation. Dropping the last `Arc` closes the sessions (which logs out).
pub struct TokenPool {
    module: String,
    pkcs11: Pkcs11,
    slot: Slot,
    token: String,
    max_sessions: usize,
    sessions: Mutex<Sessions>,
    returned: Condvar,
    /// HMAC-SHA256 of the PIN under a key random to this process: compares a later open's PIN
    /// with the one this pool logged in with (PKCS#11 login state is shared by every session
    /// of the process, so a second `C_Login` cannot check it).
    pin_digest: Vec<u8>,
    capabilities: TokenCapabilities,
    pub(super) generation: Mutex<()>,
}

impl std::fmt::Debug for TokenPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPool")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("slot", &self.slot.id())
            .field("max_sessions", &self.max_sessions)
            .finish_non_exhaustive()
    }
}

/// Live pools by module path and slot id.
type Registry = HashMap<(PathBuf, u64), Weak<TokenPool>>;
static POOLS: OnceLock<Mutex<Registry>> = OnceLock::new();

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pin_digest(pin: &[u8]) -> Vec<u8> {
    static KEY: OnceLock<Option<hmac::Key>> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        hmac::Key::generate(hmac::HMAC_SHA256, &rng).ok()
    });
    match key {
        Some(key) => hmac::sign(key, pin).as_ref().to_vec(),
        // No random key: never treat two PINs as equal.
        None => Vec::new(),
    }
}

/// The PIN as written in a Secret: a trailing newline (from `echo pin > file`) is not part of it.
fn trim_pin(pin: &[u8]) -> &[u8] {
    let mut end = pin.len();
    while end > 0 && matches!(pin[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &pin[..end]
}

/// Runs blocking PKCS#11 work on tokio's blocking threads.
pub async fn blocking<T: Send + 'static>(
    token: &str,
    work: impl FnOnce() -> Result<T, Pkcs11Error> + Send + 'static,
) -> Result<T, Pkcs11Error> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(Pkcs11Error::OperationFailed {
            token: token.to_string(),
            function: "blocking task".to_string(),
            code: e.to_string(),
        })
    })
}

/// Runs `work` (PKCS#11 calls) from synchronous code that may be on an async worker thread:
/// on a multi-threaded tokio runtime the worker hands its other tasks off first.
pub(super) fn block_in_place<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

impl TokenPool {
    /// Loads the module, finds the token and logs in (blocking); reuses this process's live
    /// pool of the same token when the PIN is the same. The PIN buffer is the caller's
    /// (zeroized on drop); the only copy made is cryptoki's `SecretBox`, zeroized after login.
    pub fn open(config: &TokenConfig, pin: &[u8]) -> Result<Arc<TokenPool>, Pkcs11Error> {
        let pin = trim_pin(pin);
        let module = config.module.display().to_string();
        let pkcs11 = load_module(&config.module)?;
        let (slot, token) = find_slot(&pkcs11, &module, &config.token)?;
        let digest = pin_digest(pin);

        let registry = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
        let mut registry = lock(registry);
        registry.retain(|_, pool| pool.strong_count() > 0);
        let id = (config.module.clone(), slot.id());
        if let Some(pool) = registry.get(&id).and_then(Weak::upgrade)
            && lock(&pool.sessions).broken.is_none()
        {
            if !digest.is_empty() && pool.pin_digest == digest {
                return Ok(pool);
            }
            return Err(Pkcs11Error::LoginFailed {
                token,
                detail: "this PIN differs from the PIN this operator is already logged in to \
                         the token with"
                    .to_string(),
            });
        }

        let session = pkcs11
            .open_rw_session(slot)
            .map_err(|e| from_cryptoki(&token, e))?;
        let raw_pin = RawAuthPin::new(Box::new(pin.to_vec()));
        match session.login_with_raw(UserType::User, &raw_pin) {
            Ok(()) => {}
            // Another part of this process (no live pool) is logged in: the state is shared.
            Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CryptokiError::Pkcs11(rv, _)) if is_login_refusal(rv) => {
                return Err(Pkcs11Error::LoginFailed {
                    token,
                    detail: format!("C_Login returned {}", ckr_name(rv)),
                });
            }
            Err(e) => return Err(from_cryptoki(&token, e)),
        }
        drop(raw_pin);
        let capabilities = TokenCapabilities::probe(&pkcs11, slot, &session, &token)?;
        let pool = Arc::new(TokenPool {
            module,
            pkcs11,
            slot,
            token,
            max_sessions: config.max_sessions.max(1),
            sessions: Mutex::new(Sessions {
                idle: vec![session],
                open: 1,
                broken: None,
            }),
            returned: Condvar::new(),
            pin_digest: digest,
            capabilities,
            generation: Mutex::new(()),
        });
        registry.insert(id, Arc::downgrade(&pool));
        Ok(pool)
    }

    /// [`TokenPool::open`] on a blocking thread.
    pub async fn open_async(
        config: TokenConfig,
        pin: Zeroizing<Vec<u8>>,
    ) -> Result<Arc<TokenPool>, Pkcs11Error> {
        let token = config.token.to_string();
        blocking(&token, move || TokenPool::open(&config, &pin)).await
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token
    }

    /// The module path.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// What the token offers for KMS imports.
    pub fn capabilities(&self) -> &TokenCapabilities {
        &self.capabilities
    }

    /// Whether the token went away under this pool (a new pool must be opened).
    pub fn is_broken(&self) -> bool {
        lock(&self.sessions).broken.is_some()
    }

    /// Checks that the token is still there and the pool still logged in (blocking).
    pub fn check(&self) -> Result<(), Pkcs11Error> {
        self.with_session(|session| {
            let info = session
                .get_session_info()
                .map_err(|e| from_cryptoki(&self.token, e))?;
            match info.session_state() {
                SessionState::RwUser | SessionState::RoUser => Ok(()),
                other => Err(Pkcs11Error::TokenUnavailable {
                    token: self.token.clone(),
                    detail: format!("the session is no longer logged in ({other:?})"),
                }),
            }
        })
    }

    /// Maps a cryptoki error of a call on this token.
    pub fn error(&self, error: CryptokiError) -> Pkcs11Error {
        from_cryptoki(&self.token, error)
    }

    /// Runs `work` with a logged-in session of this pool (blocking; waits up to 30 s for one).
    /// `TokenUnavailable` from `work` marks the pool broken: later calls fail fast and the
    /// next [`TokenPool::open`] builds a new pool.
    pub fn with_session<T>(
        &self,
        work: impl FnOnce(&Session) -> Result<T, Pkcs11Error>,
    ) -> Result<T, Pkcs11Error> {
        let mut lease = self.acquire()?;
        let result = match lease.session.as_ref() {
            Some(session) => work(session),
            None => Err(self.error(CryptokiError::InvalidValue)),
        };
        if let Err(e @ Pkcs11Error::TokenUnavailable { .. }) = &result {
            lease.discard(e.clone());
        }
        result
    }

    fn acquire(&self) -> Result<Lease<'_>, Pkcs11Error> {
        let deadline = Instant::now() + ACQUIRE_TIMEOUT;
        let mut sessions = lock(&self.sessions);
        loop {
            if let Some(broken) = &sessions.broken {
                return Err(broken.clone());
            }
            if let Some(session) = sessions.idle.pop() {
                return Ok(Lease::new(self, session));
            }
            if sessions.open < self.max_sessions {
                sessions.open += 1;
                drop(sessions);
                // Sessions opened after the login share it (PKCS#11 login state is per token).
                return match self.pkcs11.open_rw_session(self.slot) {
                    Ok(session) => Ok(Lease::new(self, session)),
                    Err(e) => {
                        let error = self.error(e);
                        let mut sessions = lock(&self.sessions);
                        sessions.open -= 1;
                        if matches!(error, Pkcs11Error::TokenUnavailable { .. }) {
                            sessions.broken = Some(error.clone());
                        }
                        self.returned.notify_one();
                        Err(error)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Pkcs11Error::TokenBusy {
                    token: self.token.clone(),
                    max: self.max_sessions,
                    seconds: ACQUIRE_TIMEOUT.as_secs(),
                });
            }
            sessions = self
                .returned
                .wait_timeout(sessions, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// One session borrowed from the pool; returned to it on drop.
struct Lease<'p> {
    pool: &'p TokenPool,
    session: Option<Session>,
}

impl<'p> Lease<'p> {
    fn new(pool: &'p TokenPool, session: Session) -> Self {
        Lease {
            pool,
            session: Some(session),
        }
    }

    /// Closes the session instead of returning it and marks the pool broken.
    fn discard(&mut self, error: Pkcs11Error) {
        let mut sessions = lock(&self.pool.sessions);
        sessions.broken = Some(error);
        sessions.open -= 1;
        // Close the idle sessions too: they belong to the token that went away.
        sessions.open -= sessions.idle.len();
        sessions.idle.clear();
        self.session = None;
        self.pool.returned.notify_all();
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let mut sessions = lock(&self.pool.sessions);
            if sessions.broken.is_some() {
                sessions.open -= 1;
            } else {
                sessions.idle.push(session);
            }
            self.pool.returned.notify_one();
        }
    }
}

fn is_login_refusal(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::UserPinNotInitialized
            | RvError::UserTypeInvalid
            | RvError::UserAnotherAlreadyLoggedIn
            | RvError::UserTooManyTypes
    )
}

/// The slot of the selected token and the token's label.
fn find_slot(
    pkcs11: &Pkcs11,
    module: &str,
    selector: &TokenSelector,
) -> Result<(Slot, String), Pkcs11Error> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| Pkcs11Error::ModuleNotLoadable {
            module: module.to_string(),
            detail: format!("C_GetSlotList failed: {e}"),
        })?;
    let mut present = Vec::new();
    for slot in slots {
        let Ok(info) = pkcs11.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim_end().to_string();
        let matches = match selector {
            TokenSelector::Label(wanted) => *wanted == label,
            TokenSelector::Slot(id) => *id == slot.id(),
        };
        if matches && info.token_initialized() {
            return Ok((slot, label));
        }
        if info.token_initialized() {
            present.push(format!("`{label}` (slot {})", slot.id()));
        }
    }
    Err(Pkcs11Error::TokenNotFound {
        module: module.to_string(),
        token: selector.to_string(),
        present,
    })
}
