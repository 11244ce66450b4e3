//! The KMS operations: one function per `TrentService.<Operation>`, over the account state.

mod crypto;
mod import;
mod keys;
mod policy;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::error::{KmsError, KmsResult, not_found, unsupported};
use crate::material::WrappingKey;
use crate::params::Params;
use crate::state::State;

/// One request's view of the world.
pub struct Ctx<'a> {
    pub state: &'a mut State,
    pub region: &'a str,
    /// ARN of the calling principal (from the access key of the signature).
    pub caller_arn: &'a str,
    pub now_ms: i64,
    /// A wrapping key generated ahead of the lock (GetParametersForImport only).
    pub wrapping: Option<WrappingKey>,
}

impl Ctx<'_> {
    pub fn account(&self) -> &str {
        &self.state.account
    }

    /// The key id a `KeyId` parameter names: key id, key ARN, and (where the operation
    /// accepts them) alias name or alias ARN. The key must exist in the request's Region.
    pub fn resolve(&self, ident: &str, allow_alias: bool) -> KmsResult<String> {
        let account = &self.state.account;
        let (region, rest) = match ident.strip_prefix("arn:aws:kms:") {
            Some(arn) => {
                let mut parts = arn.splitn(3, ':');
                let region = parts.next().unwrap_or_default();
                let acct = parts.next().unwrap_or_default();
                let resource = parts.next().unwrap_or_default();
                if acct != account || region.is_empty() || resource.is_empty() {
                    return Err(KmsError::new(
                        "InvalidArnException",
                        format!("Invalid arn {ident}"),
                    ));
                }
                (region, resource)
            }
            None if ident.starts_with("arn:") => {
                return Err(KmsError::new(
                    "InvalidArnException",
                    format!("Invalid arn {ident}"),
                ));
            }
            None => (self.region, ident),
        };
        if region != self.region {
            return Err(not_found(format!("Invalid arn {region}")));
        }
        let key_id = if rest.starts_with("alias/") {
            if !allow_alias {
                return Err(not_found(format!(
                    "Key '{ident}' does not exist (this operation does not take aliases)"
                )));
            }
            self.state
                .aliases
                .get(&(region.to_string(), rest.to_string()))
                .map(|a| a.target.clone())
                .ok_or_else(|| {
                    not_found(format!(
                        "Alias arn:aws:kms:{region}:{account}:{rest} is not found."
                    ))
                })?
        } else {
            rest.strip_prefix("key/").unwrap_or(rest).to_string()
        };
        self.state.key(region, &key_id)?;
        Ok(key_id)
    }
}

/// Runs one operation; the JSON answer or the KMS error.
pub fn dispatch(ctx: &mut Ctx<'_>, operation: &str, params: &Params<'_>) -> KmsResult<Value> {
    match operation {
        "CreateKey" => keys::create_key(ctx, params),
        "DescribeKey" => keys::describe_key(ctx, params),
        "ListKeys" => keys::list_keys(ctx, params),
        "EnableKey" => keys::enable_key(ctx, params, true),
        "DisableKey" => keys::enable_key(ctx, params, false),
        "UpdateKeyDescription" => keys::update_key_description(ctx, params),
        "ScheduleKeyDeletion" => keys::schedule_key_deletion(ctx, params),
        "CancelKeyDeletion" => keys::cancel_key_deletion(ctx, params),
        "ReplicateKey" => keys::replicate_key(ctx, params),
        "UpdatePrimaryRegion" => keys::update_primary_region(ctx, params),
        "TagResource" => keys::tag_resource(ctx, params),
        "UntagResource" => keys::untag_resource(ctx, params),
        "ListResourceTags" => keys::list_resource_tags(ctx, params),
        "CreateAlias" => keys::create_alias(ctx, params),
        "UpdateAlias" => keys::update_alias(ctx, params),
        "DeleteAlias" => keys::delete_alias(ctx, params),
        "ListAliases" => keys::list_aliases(ctx, params),
        "GetKeyPolicy" => policy::get_key_policy(ctx, params),
        "PutKeyPolicy" => policy::put_key_policy(ctx, params),
        "GetParametersForImport" => import::get_parameters_for_import(ctx, params),
        "ImportKeyMaterial" => import::import_key_material(ctx, params),
        "DeleteImportedKeyMaterial" => import::delete_imported_key_material(ctx, params),
        "RotateKeyOnDemand" => import::rotate_key_on_demand(ctx, params),
        "ListKeyRotations" => import::list_key_rotations(ctx, params),
        "Encrypt" => crypto::encrypt(ctx, params),
        "Decrypt" => crypto::decrypt(ctx, params),
        "GenerateMac" => crypto::generate_mac(ctx, params),
        "VerifyMac" => crypto::verify_mac(ctx, params),
        "Sign" => crypto::sign(ctx, params),
        "Verify" => crypto::verify(ctx, params),
        "GetPublicKey" => crypto::get_public_key(ctx, params),
        other => Err(unsupported(format!(
            "the KMS model does not implement {other}"
        ))),
    }
}

/// One page of `items` after `marker`; the next marker when more remain.
pub fn page<T>(
    items: Vec<T>,
    marker: Option<&str>,
    limit: usize,
) -> KmsResult<(Vec<T>, Option<String>)> {
    let start = match marker {
        None => 0,
        Some(m) => STANDARD
            .decode(m)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.strip_prefix("kms-model:")
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .filter(|n| *n <= items.len())
            .ok_or_else(|| KmsError::new("InvalidMarkerException", "The marker is not valid"))?,
    };
    let end = (start + limit).min(items.len());
    let next = (end < items.len()).then(|| STANDARD.encode(format!("kms-model:{end}")));
    let page = items.into_iter().skip(start).take(end - start).collect();
    Ok((page, next))
}

/// Adds `NextMarker` / `Truncated` to a list answer.
pub fn paged(mut out: serde_json::Map<String, Value>, next: Option<String>) -> Value {
    out.insert("Truncated".into(), Value::Bool(next.is_some()));
    if let Some(n) = next {
        out.insert("NextMarker".into(), Value::String(n));
    }
    Value::Object(out)
}
