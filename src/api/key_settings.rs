//! What the specs of the key kinds (AwsKey, AwsReplicaKey) both declare: region, policy and
//! deletion settings, read through one trait, with the defaults they share.

use super::aws_key::AwsKeySpec;
use super::aws_replica_key::AwsReplicaKeySpec;
use super::deletion::DeletionPolicy;
use super::key_policy::KeyPolicy;

/// The settings every key kind's spec holds under the same names.
pub trait KeySettings {
    /// AWS region of the key.
    fn region(&self) -> &str;
    /// Key policy; None: the AWS default key policy.
    fn policy(&self) -> Option<&KeyPolicy>;
    /// The deletion policy the spec sets, if any.
    fn deletion_policy(&self) -> Option<DeletionPolicy>;
    /// Waiting period, in days, between scheduling deletion and AWS deleting the key.
    fn pending_window_days(&self) -> i32;
}

/// One implementation for every spec: the fields have the same names and types.
macro_rules! key_settings {
    ($($spec:ty),+) => {$(
        impl KeySettings for $spec {
            fn region(&self) -> &str {
                &self.region
            }
            fn policy(&self) -> Option<&KeyPolicy> {
                self.policy.as_ref()
            }
            fn deletion_policy(&self) -> Option<DeletionPolicy> {
                self.deletion_policy
            }
            fn pending_window_days(&self) -> i32 {
                self.pending_window_days
            }
        }
    )+};
}

key_settings!(AwsKeySpec, AwsReplicaKeySpec);

/// Default of `enabled`: a key is enabled unless the spec says otherwise.
pub(super) fn default_true() -> bool {
    true
}

/// Default of `pendingWindowDays`: AWS's maximum waiting period, 30 days.
pub(super) fn default_pending_window_days() -> i32 {
    30
}
