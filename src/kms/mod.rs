//! The only module that talks to AWS KMS: clients per connection and region, observe, execute,
//! verify.

pub mod clients;
pub mod error;
pub mod execute;
pub mod fence;
pub mod identity;
pub mod observe;
pub mod quota;
pub mod session;
pub mod verify;

pub use clients::{Connection, KmsClients};
pub use error::KmsError;
pub use execute::KeyCreation;
pub use fence::WriteFence;
pub use observe::ReadDepth;
pub use quota::{KmsQuotas, RateLimits};
pub use session::Requester;

/// A KMS client for one connection and region (cheap to clone).
pub type Client = aws_sdk_kms::Client;
