//! `AwsKms` checks: CEL rules, and connection settings that can never work.
//!
//! The region and reference checks that involve keys are made from the key's side
//! ([`super::aws_key`]), where the finding points at the key's field.

use serde_json::Value;

use super::finding::{Check, Finding};
use super::kind::{Bundle, KindContext, KindDef, Typed, read};
use super::object::{Object, ObjectFindings};
use crate::api::AwsKms;

pub(crate) const KIND: KindDef = KindDef {
    kind: "AwsKms",
    check_object,
    check_bundle,
};

fn check_object(
    _object: &Object,
    value: &Value,
    out: &mut ObjectFindings<'_>,
    ctx: &KindContext<'_>,
) -> Option<Typed> {
    let kms: AwsKms = read(value, out)?;
    ctx.cel.check(&kms, out);

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
    if kms.spec.external_id.is_some() && kms.spec.role_arn.is_none() {
        out.add_at(
            Check::Semantic,
            "/spec/externalId",
            "ExternalIdWithoutRole",
            "externalId is only sent with sts:AssumeRole: set roleArn, or remove externalId",
        );
    }
    Some(Typed::AwsKms(Box::new(kms)))
}

fn check_bundle(_bundle: &Bundle<'_>, _findings: &mut Vec<Finding>) {}
