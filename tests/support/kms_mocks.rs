//! aws-smithy-mocks building blocks shared by the mocked-KMS tests.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_sdk_kms::Client;
use aws_sdk_kms::operation::delete_imported_key_material::DeleteImportedKeyMaterialOutput;
use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::operation::get_parameters_for_import::GetParametersForImportOutput;
use aws_sdk_kms::operation::import_key_material::ImportKeyMaterialOutput;
use aws_sdk_kms::operation::list_aliases::ListAliasesOutput;
use aws_sdk_kms::operation::list_key_rotations::ListKeyRotationsOutput;
use aws_sdk_kms::operation::list_resource_tags::ListResourceTagsOutput;
use aws_sdk_kms::operation::rotate_key_on_demand::RotateKeyOnDemandOutput;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::Tag;
use aws_sdk_kms::types::{
    ExpirationModelType, ImportState, ImportType, IncludeKeyMaterial, KeyMaterialState,
    KeyMetadata, KeySpec as SdkKeySpec, KeyState, KeyUsageType, MultiRegionConfiguration,
    MultiRegionKey, MultiRegionKeyType, OriginType, RotationType, RotationsListEntry,
};
use aws_smithy_mocks::MockResponse;
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

/// A small stateful model of one multi-Region symmetric key with imported material: a primary
/// and one replica (both EXTERNAL), their key materials and the rotation state, served through
/// aws-smithy-mocks rules ([`MultiRegionKms::rules`]). It answers as AWS KMS documents:
///
/// - ImportKeyMaterial NEW_KEY_MATERIAL (primary only) adds material with a new KeyMaterialId,
///   pending rotation; EXISTING_KEY_MATERIAL with that KeyMaterialId (replica) must carry the
///   same bytes (else IncorrectKeyMaterialException); an import without ImportType re-imports
///   the current material (same bytes only).
/// - ListKeyRotations lists completed rotations only, unless IncludeKeyMaterial is
///   ALL_KEY_MATERIAL: then also the first material and material pending rotation, which is
///   PENDING_MULTI_REGION_IMPORT_AND_ROTATION until every replica imported it, then
///   PENDING_ROTATION.
/// - RotateKeyOnDemand (primary only) fails with KMSInvalidStateException unless material is
///   PENDING_ROTATION; then it becomes current on the primary and the replica.
/// - DescribeKey reports CurrentKeyMaterialId and the multi-Region configuration.
///
/// In AWS the replica shares its primary's key id (told apart by region); the mocked client
/// has no region, so the two keys get distinct ids here. Every request is logged in order.
pub struct MultiRegionKms {
    state: std::sync::Mutex<MrkState>,
    wrapping: aws_lc_rs::rsa::PrivateDecryptingKey,
    wrapping_public: Vec<u8>,
}

pub const MRK_ACCOUNT: &str = "111122223333";
pub const MRK_PRIMARY_ID: &str = "mrk-primary";
pub const MRK_REPLICA_ID: &str = "mrk-replica";
pub const MRK_PRIMARY_REGION: &str = "us-east-1";
pub const MRK_REPLICA_REGION: &str = "eu-west-1";

pub fn mrk_arn(region: &str, key_id: &str) -> String {
    format!("arn:aws:kms:{region}:{MRK_ACCOUNT}:key/{key_id}")
}

/// One request the fake KMS answered, in arrival order (plaintext material after unwrapping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MrkCall {
    Import {
        key_id: String,
        import_type: Option<aws_sdk_kms::types::ImportType>,
        key_material_id: Option<String>,
        plaintext: Vec<u8>,
        /// The KeyMaterialId assigned, or the error code returned.
        outcome: Result<String, &'static str>,
    },
    ListKeyRotations {
        key_id: String,
        all_key_material: bool,
    },
    Rotate {
        key_id: String,
        outcome: Result<String, &'static str>,
    },
    DeleteImportedKeyMaterial {
        key_id: String,
    },
}

struct MrkMaterial {
    id: String,
    bytes: Vec<u8>,
    /// Keys (ids) that hold this material.
    holders: BTreeSet<String>,
}

struct MrkState {
    /// In import order; the first is the initial material.
    materials: Vec<MrkMaterial>,
    current: String,
    /// Imported with NEW_KEY_MATERIAL, not rotated to yet.
    pending: Option<String>,
    /// Materials that became current through RotateKeyOnDemand.
    rotated: Vec<String>,
    log: Vec<MrkCall>,
}

impl MultiRegionKms {
    /// Primary and replica, both Enabled and holding `initial` as KeyMaterialId `km-1`.
    pub fn new(initial: &[u8]) -> Arc<MultiRegionKms> {
        use aws_lc_rs::encoding::AsDer;
        let wrapping =
            aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .unwrap();
        let wrapping_public = wrapping.public_key().as_der().unwrap().as_ref().to_vec();
        Arc::new(MultiRegionKms {
            state: std::sync::Mutex::new(MrkState {
                materials: vec![MrkMaterial {
                    id: "km-1".into(),
                    bytes: initial.to_vec(),
                    holders: [MRK_PRIMARY_ID, MRK_REPLICA_ID].map(String::from).into(),
                }],
                current: "km-1".into(),
                pending: None,
                rotated: vec![],
                log: vec![],
            }),
            wrapping,
            wrapping_public,
        })
    }

    /// Every request answered so far, in order.
    pub fn log(&self) -> Vec<MrkCall> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn current_key_material_id(&self) -> String {
        self.state.lock().unwrap().current.clone()
    }

    /// The key id a KeyId parameter (id or ARN) names, if it is one of the two keys.
    fn resolve(reference: Option<&str>) -> Option<&'static str> {
        let reference = reference?;
        [MRK_PRIMARY_ID, MRK_REPLICA_ID]
            .into_iter()
            .find(|id| reference == *id || reference.ends_with(&format!(":key/{id}")))
            .filter(|id| {
                // An ARN must name the key's own region.
                !reference.starts_with("arn:")
                    || reference == mrk_arn(Self::region_of(id), id).as_str()
            })
    }

    fn region_of(key_id: &str) -> &'static str {
        if key_id == MRK_PRIMARY_ID {
            MRK_PRIMARY_REGION
        } else {
            MRK_REPLICA_REGION
        }
    }

    fn metadata(&self, key_id: &str) -> KeyMetadata {
        let state = self.state.lock().unwrap();
        let key = |id: &str| {
            MultiRegionKey::builder()
                .arn(mrk_arn(Self::region_of(id), id))
                .region(Self::region_of(id))
                .build()
        };
        let config = MultiRegionConfiguration::builder()
            .multi_region_key_type(if key_id == MRK_PRIMARY_ID {
                MultiRegionKeyType::Primary
            } else {
                MultiRegionKeyType::Replica
            })
            .primary_key(key(MRK_PRIMARY_ID))
            .replica_keys(key(MRK_REPLICA_ID))
            .build();
        KeyMetadata::builder()
            .key_id(key_id)
            .arn(mrk_arn(Self::region_of(key_id), key_id))
            .aws_account_id(MRK_ACCOUNT)
            .key_state(KeyState::Enabled)
            .enabled(true)
            .origin(OriginType::External)
            .key_spec(SdkKeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .multi_region(true)
            .multi_region_configuration(config)
            .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
            .current_key_material_id(&state.current)
            .description("")
            .build()
            .unwrap()
    }

    fn unwrap_material(&self, wrapped: Option<&[u8]>) -> Option<Vec<u8>> {
        let oaep = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(self.wrapping.clone()).ok()?;
        let mut out = vec![0u8; 512];
        oaep.decrypt(
            &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
            wrapped?,
            &mut out,
            None,
        )
        .ok()
        .map(|p| p.to_vec())
    }

    fn import(
        &self,
        key_id: &str,
        import_type: Option<&ImportType>,
        key_material_id: Option<&str>,
        plaintext: &[u8],
    ) -> Result<String, &'static str> {
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        match import_type {
            Some(ImportType::NewKeyMaterial) => {
                if key_id != MRK_PRIMARY_ID {
                    return Err("UnsupportedOperationException");
                }
                if state.pending.is_some() {
                    return Err("KMSInvalidStateException");
                }
                if state.materials.iter().any(|m| m.bytes == plaintext) {
                    // Material the key already has is not new.
                    return Err("IncorrectKeyMaterialException");
                }
                let id = format!("km-{}", state.materials.len() + 1);
                state.materials.push(MrkMaterial {
                    id: id.clone(),
                    bytes: plaintext.to_vec(),
                    holders: [key_id.to_string()].into(),
                });
                state.pending = Some(id.clone());
                Ok(id)
            }
            Some(ImportType::ExistingKeyMaterial) | None => {
                let wanted = key_material_id.unwrap_or(&state.current).to_string();
                let Some(material) = state.materials.iter_mut().find(|m| m.id == wanted) else {
                    return Err("NotFoundException");
                };
                if material.bytes != plaintext {
                    return Err("IncorrectKeyMaterialException");
                }
                material.holders.insert(key_id.to_string());
                Ok(wanted)
            }
            Some(_) => Err("ValidationException"),
        }
    }

    fn pending_state(state: &MrkState, id: &str) -> KeyMaterialState {
        let all = state
            .materials
            .iter()
            .find(|m| m.id == id)
            .is_some_and(|m| m.holders.len() == 2);
        if all {
            KeyMaterialState::PendingRotation
        } else {
            KeyMaterialState::PendingMultiRegionImportAndRotation
        }
    }

    fn rotations(&self, key_id: &str, all: bool) -> Vec<RotationsListEntry> {
        let state = self.state.lock().unwrap();
        state
            .materials
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let rotated = state.rotated.contains(&m.id);
                let pending = state.pending.as_deref() == Some(m.id.as_str());
                if !(rotated || all && (i == 0 || pending)) {
                    return None;
                }
                let material_state = if m.id == state.current {
                    KeyMaterialState::Current
                } else if pending {
                    Self::pending_state(&state, &m.id)
                } else {
                    KeyMaterialState::NonCurrent
                };
                let mut entry = RotationsListEntry::builder()
                    .key_id(key_id)
                    .key_material_id(&m.id)
                    .key_material_state(material_state)
                    .import_state(ImportState::Imported)
                    .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire);
                if rotated {
                    entry = entry.rotation_type(RotationType::OnDemand);
                }
                Some(entry.build())
            })
            .collect()
    }

    fn rotate(&self, key_id: &str) -> Result<String, &'static str> {
        if key_id != MRK_PRIMARY_ID {
            return Err("UnsupportedOperationException");
        }
        let mut state = self.state.lock().unwrap();
        let Some(pending) = state.pending.clone() else {
            return Err("KMSInvalidStateException");
        };
        if Self::pending_state(&state, &pending) != KeyMaterialState::PendingRotation {
            return Err("KMSInvalidStateException");
        }
        state.current = pending.clone();
        state.pending = None;
        state.rotated.push(pending.clone());
        Ok(pending)
    }

    fn record(&self, call: MrkCall) {
        self.state.lock().unwrap().log.push(call);
    }

    /// The rules serving DescribeKey, GetParametersForImport, ImportKeyMaterial,
    /// ListKeyRotations, RotateKeyOnDemand and DeleteImportedKeyMaterial for both keys.
    pub fn rules(self: &Arc<Self>) -> Vec<Rule> {
        let fake = self.clone();
        let describe = mock!(Client::describe_key)
            .match_requests(|r| Self::resolve(r.key_id()).is_some())
            .then_compute_output(move |r| {
                let id = Self::resolve(r.key_id()).unwrap();
                DescribeKeyOutput::builder()
                    .key_metadata(fake.metadata(id))
                    .build()
            });
        let fake = self.clone();
        let params = mock!(Client::get_parameters_for_import)
            .match_requests(|r| Self::resolve(r.key_id()).is_some())
            .then_compute_output(move |r| {
                GetParametersForImportOutput::builder()
                    .key_id(Self::resolve(r.key_id()).unwrap())
                    .import_token(Blob::new(b"token".to_vec()))
                    .public_key(Blob::new(fake.wrapping_public.clone()))
                    .build()
            });
        let fake = self.clone();
        let import = mock!(Client::import_key_material)
            .match_requests(|r| Self::resolve(r.key_id()).is_some())
            .then_compute_response(move |r| {
                let key_id = Self::resolve(r.key_id()).unwrap();
                let plaintext = fake
                    .unwrap_material(r.encrypted_key_material().map(|b| b.as_ref()))
                    .unwrap_or_default();
                let outcome = fake.import(key_id, r.import_type(), r.key_material_id(), &plaintext);
                fake.record(MrkCall::Import {
                    key_id: key_id.into(),
                    import_type: r.import_type().cloned(),
                    key_material_id: r.key_material_id().map(str::to_string),
                    plaintext,
                    outcome: outcome.clone(),
                });
                match outcome {
                    Ok(id) => MockResponse::Output(
                        ImportKeyMaterialOutput::builder()
                            .key_id(key_id)
                            .key_material_id(id)
                            .build(),
                    ),
                    Err(code) => MockResponse::Http(aws_error(code)),
                }
            });
        let fake = self.clone();
        let rotations = mock!(Client::list_key_rotations)
            .match_requests(|r| Self::resolve(r.key_id()).is_some())
            .then_compute_output(move |r| {
                let key_id = Self::resolve(r.key_id()).unwrap();
                let all = r.include_key_material() == Some(&IncludeKeyMaterial::AllKeyMaterial);
                fake.record(MrkCall::ListKeyRotations {
                    key_id: key_id.into(),
                    all_key_material: all,
                });
                ListKeyRotationsOutput::builder()
                    .set_rotations(Some(fake.rotations(key_id, all)))
                    .truncated(false)
                    .build()
            });
        let fake = self.clone();
        let rotate = mock!(Client::rotate_key_on_demand)
            .match_requests(|r| Self::resolve(r.key_id()).is_some())
            .then_compute_response(move |r| {
                let key_id = Self::resolve(r.key_id()).unwrap();
                let outcome = fake.rotate(key_id);
                fake.record(MrkCall::Rotate {
                    key_id: key_id.into(),
                    outcome: outcome.clone(),
                });
                match outcome {
                    Ok(_) => MockResponse::Output(
                        RotateKeyOnDemandOutput::builder().key_id(key_id).build(),
                    ),
                    Err(code) => MockResponse::Http(aws_error(code)),
                }
            });
        let fake = self.clone();
        let shred = mock!(Client::delete_imported_key_material)
            .match_requests(|r| Self::resolve(r.key_id()).is_some())
            .then_compute_output(move |r| {
                fake.record(MrkCall::DeleteImportedKeyMaterial {
                    key_id: Self::resolve(r.key_id()).unwrap().into(),
                });
                DeleteImportedKeyMaterialOutput::builder().build()
            });
        vec![describe, params, import, rotations, rotate, shred]
    }
}
