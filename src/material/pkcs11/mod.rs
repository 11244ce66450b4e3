//! PKCS#11 key source: key material that stays in an HSM; only `C_WrapKey` ciphertext reaches the operator.
//!
//! Flow: [`TokenPool::open`] loads the module ([`load_module`]), finds the token, logs in and
//! probes what the token can wrap with ([`TokenCapabilities`]); [`HsmKey::open`] (or
//! [`open_or_generate`]) finds the key object by label and checks it against the key spec
//! through its attributes; the import path then calls [`ImportableMaterial::wrap`] on it like
//! on a Secret's material, and the verifier calls `public_key_der` / `hmac`.
//!
//! Every call here blocks: async code uses the `*_async` functions (`spawn_blocking`), and the
//! synchronous trait methods run under `block_in_place` (see [`pool`]).
//!
//! [`ImportableMaterial::wrap`]: super::ImportableMaterial::wrap

mod capabilities;
mod error;
mod generate;
mod key;
mod module;
pub mod pool;
mod spki;
mod template;
mod wrap;

pub use capabilities::{PaddedKeyWrap, TokenCapabilities, WrappingChoice};
pub use error::Pkcs11Error;
pub use generate::{KeyOrigin, open_or_generate, open_or_generate_async};
pub use key::HsmKey;
pub use module::load_module;
pub use pool::{DEFAULT_MAX_SESSIONS, TokenConfig, TokenPool, TokenSelector};
