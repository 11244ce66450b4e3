//! aws-smithy-mocks building blocks shared by the mocked-KMS tests.

use aws_sdk_kms::Client;
use aws_sdk_kms::operation::get_parameters_for_import::GetParametersForImportOutput;
use aws_sdk_kms::operation::list_aliases::ListAliasesOutput;
use aws_sdk_kms::operation::list_resource_tags::ListResourceTagsOutput;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::Tag;
use aws_smithy_mocks::{Rule, mock};
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;

use super::operator::CLUSTER_ID;

/// An AWS JSON error response with this error code (e.g. `AccessDeniedException`).
pub fn aws_error(code: &'static str) -> Response {
    Response::new(
        StatusCode::try_from(400).unwrap(),
        SdkBody::from(format!(
            r#"{{"__type":"{code}","message":"mocked {code}"}}"#
        )),
    )
}

/// The ownership tags keyfleet puts on the key of `namespace/name` with this uid.
pub fn owner_tags(uid: &str, namespace: &str, name: &str) -> Vec<Tag> {
    let tag = |k: &str, v: String| Tag::builder().tag_key(k).tag_value(v).build().unwrap();
    vec![
        tag("keyfleet.dev/owner-uid", uid.to_string()),
        tag("keyfleet.dev/owner", format!("{namespace}/{name}")),
        tag("keyfleet.dev/cluster", CLUSTER_ID.to_string()),
    ]
}

/// ListResourceTags answering `tags` (for `key_id` only, when given).
pub fn tags_rule(key_id: Option<&'static str>, tags: Vec<Tag>) -> Rule {
    mock!(Client::list_resource_tags)
        .match_requests(move |r| key_id.is_none_or(|k| r.key_id() == Some(k)))
        .sequence()
        .output(move || {
            ListResourceTagsOutput::builder()
                .set_tags(Some(tags.clone()))
                .truncated(false)
                .build()
        })
        .repeatedly()
        .build()
}

/// ListAliases answering no aliases.
pub fn no_aliases_rule() -> Rule {
    mock!(Client::list_aliases)
        .sequence()
        .output(|| ListAliasesOutput::builder().truncated(false).build())
        .repeatedly()
        .build()
}

/// GetParametersForImport answering a real RSA-2048 wrapping public key (and token `token`);
/// the private half is returned so a test can unwrap what keyfleet sends.
pub fn import_params_rule(key_id: &'static str) -> (Rule, aws_lc_rs::rsa::PrivateDecryptingKey) {
    use aws_lc_rs::encoding::AsDer;
    let wrapping =
        aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public_der = wrapping.public_key().as_der().unwrap().as_ref().to_vec();
    let rule = mock!(Client::get_parameters_for_import)
        .sequence()
        .output(move || {
            GetParametersForImportOutput::builder()
                .key_id(key_id)
                .import_token(Blob::new(b"token".to_vec()))
                .public_key(Blob::new(public_der.clone()))
                .build()
        })
        .repeatedly()
        .build();
    (rule, wrapping)
}
