//! `AwsKms` checks: CEL rules, and connection settings that can never work.
//!
//! The region and reference checks that involve keys are made from the key's side
//! ([`super::aws_key`]), where the finding points at the key's field.

use super::finding::Check;
use super::kind::{Kind, KindContext, Typed};
use super::object::{Object, ObjectFindings};
use crate::api::AwsKms;
use crate::tenancy::{self, EndpointPolicy};

impl Kind for AwsKms {
    fn into_typed(self) -> Typed {
        Typed::AwsKms(Box::new(self))
    }

    fn check(&self, object: &Object, out: &mut ObjectFindings<'_>, _ctx: &KindContext<'_>) {
        let kms = self;
        // Region names are held to the AWS grammar by the CRD's CEL rule (checked with the
        // schema).
        // The operator sends material only to AWS KMS endpoints unless its administrator
        // allows custom ones (--allow-custom-kms-endpoints). A URL that is not http(s) at all
        // is already refused by the schema's rule.
        let url = kms
            .spec
            .endpoint_url
            .as_deref()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
        if let Err(refusal) = tenancy::endpoint(object.name(), url, &EndpointPolicy::default()) {
            out.add_at(
                Check::Semantic,
                "/spec/endpointUrl",
                refusal.reason,
                refusal.message,
            );
        }
        if kms.spec.external_id.is_some() && kms.spec.role_arn.is_none() {
            out.add_at(
                Check::Semantic,
                "/spec/externalId",
                "ExternalIdWithoutRole",
                "externalId is only sent with sts:AssumeRole: set roleArn, or remove externalId",
            );
        }
    }
}
