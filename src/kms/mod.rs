//! The only module that talks to AWS KMS: clients per connection and region, observe, execute,
//! verify.

pub mod clients;
pub mod error;
pub mod execute;
pub mod fence;
pub mod identity;
pub mod line;
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

/// Test-only: an [`HttpConnector`](aws_smithy_runtime_api::client::http::HttpConnector) stand-in
/// for KMS served as an SDK HTTP client (every connector setting ignored).
#[cfg(test)]
#[derive(Clone, Debug)]
pub(crate) struct StandIn<C>(pub C);

#[cfg(test)]
impl<C> aws_smithy_runtime_api::client::http::HttpClient for StandIn<C>
where
    C: aws_smithy_runtime_api::client::http::HttpConnector + Clone + 'static,
{
    fn http_connector(
        &self,
        _settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        aws_smithy_runtime_api::client::http::SharedHttpConnector::new(self.0.clone())
    }
}
