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
    const KIND: &'static str = "AwsKms";

    fn into_typed(self) -> Typed {
        Typed::AwsKms(Box::new(self))
    }

    fn check(&self, object: &Object, out: &mut ObjectFindings<'_>, _ctx: &KindContext<'_>) {
        let kms = self;
        // An AwsKey region must match ^[a-z0-9-]+$ (its schema); an allowed region that does not
        // can never be used, and the key that meant it is refused with RegionNotAllowed.
        for (i, region) in kms.spec.regions.iter().enumerate() {
            let valid = !region.is_empty()
                && region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                out.add_at(
                    Check::Semantic,
                    &format!("/spec/regions/{i}"),
                    "InvalidRegion",
                    format!(
                        "{region:?} is not an AWS region name (lowercase letters, digits and -, \
                         e.g. eu-west-1): no AwsKey can use it"
                    ),
                );
            }
        }
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
