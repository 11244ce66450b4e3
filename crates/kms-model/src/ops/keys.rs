//! Key management: create, describe, list, enable/disable, describe, delete, replicate, tags
//! and aliases.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::policy::{check_policy, default_policy};
use super::{Ctx, page, paged};
use crate::error::{KmsError, KmsResult, invalid_state, not_found, unsupported, validation};
use crate::material::{
    self, KEY_SPECS, encryption_algorithms, key_material_id, mac_algorithm, signing_algorithms,
    usages,
};
use crate::params::{Params, time};
use crate::state::{
    Deletion, Imported, Key, MaterialSet, PENDING_DELETION, PENDING_IMPORT,
    PENDING_REPLICA_DELETION, Role, SetEntry, State, key_arn,
};

/// `KeyMetadata` of a key as DescribeKey (and CreateKey, ReplicateKey) report it.
pub fn metadata(state: &State, key: &Key) -> Value {
    let key_state = state.key_state(key);
    let mut m = Map::new();
    m.insert("AWSAccountId".into(), json!(state.account));
    m.insert("KeyId".into(), json!(key.key_id));
    m.insert("Arn".into(), json!(key.arn));
    m.insert("CreationDate".into(), time(key.created_ms));
    m.insert("Enabled".into(), json!(key_state == "Enabled"));
    m.insert("Description".into(), json!(key.description));
    m.insert("KeyUsage".into(), json!(key.key_usage));
    m.insert("KeyState".into(), json!(key_state));
    m.insert("Origin".into(), json!(key.origin));
    m.insert("KeyManager".into(), json!("CUSTOMER"));
    m.insert("CustomerMasterKeySpec".into(), json!(key.key_spec));
    m.insert("KeySpec".into(), json!(key.key_spec));
    let enc = encryption_algorithms(&key.key_spec, &key.key_usage);
    if !enc.is_empty() {
        m.insert("EncryptionAlgorithms".into(), json!(enc));
    }
    let sig = signing_algorithms(&key.key_spec, &key.key_usage);
    if !sig.is_empty() {
        m.insert("SigningAlgorithms".into(), json!(sig));
    }
    if let Some(mac) = mac_algorithm(&key.key_spec) {
        m.insert("MacAlgorithms".into(), json!([mac]));
    }
    if let Some(d) = key.deletion {
        match d.date_ms {
            Some(t) => {
                m.insert("DeletionDate".into(), time(t));
            }
            None => {
                m.insert("PendingDeletionWindowInDays".into(), json!(d.window_days));
            }
        }
    }
    if key.is_external() && !key.imports.is_empty() {
        let valid_to = key.imports.values().filter_map(|i| i.valid_to_ms).min();
        match valid_to {
            Some(t) => {
                m.insert("ExpirationModel".into(), json!("KEY_MATERIAL_EXPIRES"));
                m.insert("ValidTo".into(), time(t));
            }
            None => {
                m.insert(
                    "ExpirationModel".into(),
                    json!("KEY_MATERIAL_DOES_NOT_EXPIRE"),
                );
            }
        }
    }
    if key.family() == material::Family::Symmetric
        && let Some(current) = state.sets.get(&key.key_id).and_then(MaterialSet::current)
    {
        m.insert("CurrentKeyMaterialId".into(), json!(current.id));
    }
    m.insert("MultiRegion".into(), json!(key.multi_region));
    if let Some(primary_region) = &key.primary_region {
        let related: Vec<&Key> = state.related(&key.key_id).collect();
        let entry = |k: &Key| json!({"Arn": k.arn, "Region": k.region});
        let primary = related.iter().find(|k| &k.region == primary_region);
        let replicas: Vec<Value> = related
            .iter()
            .filter(|k| &k.region != primary_region)
            .map(|k| entry(k))
            .collect();
        m.insert(
            "MultiRegionConfiguration".into(),
            json!({
                "MultiRegionKeyType": if key.is_replica() { "REPLICA" } else { "PRIMARY" },
                "PrimaryKey": primary.map(|k| entry(k)).unwrap_or(Value::Null),
                "ReplicaKeys": replicas,
            }),
        );
    }
    Value::Object(m)
}

fn new_key_id(multi_region: bool) -> KmsResult<String> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| KmsError::new("KMSInternalException", "random generator failed"))?;
    if multi_region {
        return Ok(format!("mrk-{}", hex::encode(b)));
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

fn tag_error(message: impl Into<String>) -> KmsError {
    KmsError::new("TagException", message)
}

/// Tags as KMS accepts them: keys 1-128 characters, not `aws:`, values up to 256, 50 per key.
fn merge_tags(tags: &mut BTreeMap<String, String>, new: &[(String, String)]) -> KmsResult<()> {
    for (k, v) in new {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            return Err(tag_error(format!(
                "tag {k:?}: keys are 1-128 characters, values up to 256"
            )));
        }
        let allowed = |s: &str| {
            s.chars()
                .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
        };
        if !allowed(k) || !allowed(v) {
            return Err(tag_error(format!(
                "tag {k:?}: keys and values may hold letters, digits, spaces and _ . : / = + - @"
            )));
        }
        if k.starts_with("aws:") {
            return Err(tag_error(
                "Tag keys cannot begin with aws: (reserved for AWS)",
            ));
        }
    }
    let mut merged = tags.clone();
    merged.extend(new.iter().cloned());
    if merged.len() > 50 {
        return Err(tag_error("A KMS key can have at most 50 tags"));
    }
    *tags = merged;
    Ok(())
}

fn check_description(description: &str) -> KmsResult<()> {
    if description.chars().count() > 8192 {
        return Err(validation("Description is longer than 8192 characters"));
    }
    Ok(())
}

/// The `Policy` (checked; the default policy when absent) and `Tags` of a new key.
fn policy_and_tags(
    p: &Params<'_>,
    account: &str,
    caller_arn: &str,
) -> KmsResult<(String, BTreeMap<String, String>)> {
    let bypass = p
        .opt_bool("BypassPolicyLockoutSafetyCheck")?
        .unwrap_or(false);
    let policy = match p.opt_str("Policy")? {
        Some(policy) => {
            check_policy(policy, account, caller_arn, bypass)?;
            policy.to_string()
        }
        None => default_policy(account),
    };
    let mut tags = BTreeMap::new();
    merge_tags(&mut tags, &p.opt_tags("Tags")?.unwrap_or_default())?;
    Ok((policy, tags))
}

pub fn create_key(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let spec = p
        .opt_str("KeySpec")?
        .or(p.opt_str("CustomerMasterKeySpec")?)
        .unwrap_or("SYMMETRIC_DEFAULT");
    if !KEY_SPECS.contains(&spec) {
        return Err(validation(format!(
            "1 validation error detected: Value '{spec}' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set"
        )));
    }
    let usage = p.opt_str("KeyUsage")?.unwrap_or("ENCRYPT_DECRYPT");
    if !usages(spec).contains(&usage) {
        return Err(validation(format!(
            "KeyUsage {usage} is not compatible with KeySpec {spec}"
        )));
    }
    let origin = p.opt_str("Origin")?.unwrap_or("AWS_KMS");
    if origin != "AWS_KMS" && origin != "EXTERNAL" {
        return Err(unsupported(format!(
            "the KMS model does not support Origin {origin}"
        )));
    }
    let multi_region = p.opt_bool("MultiRegion")?.unwrap_or(false);
    let description = p.opt_str("Description")?.unwrap_or_default();
    check_description(description)?;
    let key_id = new_key_id(multi_region)?;
    let account = ctx.account().to_string();
    let (policy, tags) = policy_and_tags(p, &account, ctx.caller_arn)?;
    let arn = key_arn(&account, ctx.region, &key_id);
    let mut key = Key {
        seq: ctx.state.next_seq(),
        region: ctx.region.to_string(),
        key_id: key_id.clone(),
        arn,
        created_ms: ctx.now_ms,
        description: description.to_string(),
        key_spec: spec.to_string(),
        key_usage: usage.to_string(),
        origin: origin.to_string(),
        enabled: true,
        deletion: None,
        policy,
        tags,
        multi_region,
        primary_region: multi_region.then(|| ctx.region.to_string()),
        imports: BTreeMap::new(),
        rotations_on_demand: 0,
        created_by_ms: 0,
    };
    if origin == "AWS_KMS" {
        let bytes = material::generate(spec)?;
        let id = key_material_id(&key_id, &bytes);
        ctx.state.sets.insert(
            key_id.clone(),
            MaterialSet {
                entries: vec![SetEntry {
                    id: id.clone(),
                    role: Role::Current,
                    rotation_date_ms: None,
                }],
            },
        );
        key.imports.insert(
            id,
            Imported {
                bytes,
                valid_to_ms: None,
                description: None,
            },
        );
    }
    let meta = metadata(ctx.state, &key);
    ctx.state.keys.insert((ctx.region.to_string(), key_id), key);
    Ok(json!({ "KeyMetadata": meta }))
}

pub fn describe_key(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, true)?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    Ok(json!({ "KeyMetadata": metadata(ctx.state, key) }))
}

pub fn list_keys(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let limit = p.limit(100, 1000)?;
    let mut keys: Vec<&Key> = ctx
        .state
        .keys
        .values()
        .filter(|k| k.region == ctx.region)
        .collect();
    keys.sort_by_key(|k| k.seq);
    let keys: Vec<Value> = keys
        .into_iter()
        .map(|k| json!({"KeyId": k.key_id, "KeyArn": k.arn}))
        .collect();
    let (keys, next) = page(keys, p.opt_str("Marker")?, limit)?;
    let mut out = Map::new();
    out.insert("Keys".into(), Value::Array(keys));
    Ok(paged(out, next))
}

/// KMSInvalidStateException unless the key is Enabled or Disabled.
fn require_manageable(state: &State, key: &Key) -> KmsResult<()> {
    match state.key_state(key) {
        PENDING_IMPORT => Err(invalid_state(format!("{} is pending import.", key.arn))),
        PENDING_DELETION | PENDING_REPLICA_DELETION => {
            Err(invalid_state(format!("{} is pending deletion.", key.arn)))
        }
        crate::state::CREATING => Err(invalid_state(format!("{} is creating.", key.arn))),
        _ => Ok(()),
    }
}

/// The key is Enabled: DisabledException when disabled, KMSInvalidStateException otherwise.
pub fn require_enabled(state: &State, key: &Key) -> KmsResult<()> {
    match state.key_state(key) {
        crate::state::ENABLED => Ok(()),
        crate::state::DISABLED => Err(KmsError::new(
            "DisabledException",
            format!("{} is disabled.", key.arn),
        )),
        PENDING_IMPORT => Err(invalid_state(format!("{} is pending import.", key.arn))),
        other => Err(invalid_state(format!("{} is {other}.", key.arn))),
    }
}

/// KMSInvalidStateException while a replica is still being created.
pub fn require_created(state: &State, key: &Key) -> KmsResult<()> {
    if state.key_state(key) == crate::state::CREATING {
        return Err(invalid_state(format!("{} is creating.", key.arn)));
    }
    Ok(())
}

/// KMSInvalidStateException when the key is pending deletion.
pub fn require_not_deleting(state: &State, key: &Key) -> KmsResult<()> {
    match state.key_state(key) {
        PENDING_DELETION | PENDING_REPLICA_DELETION => {
            Err(invalid_state(format!("{} is pending deletion.", key.arn)))
        }
        _ => Ok(()),
    }
}

pub fn enable_key(ctx: &mut Ctx<'_>, p: &Params<'_>, enable: bool) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    require_manageable(ctx.state, key)?;
    ctx.state.key_mut(ctx.region, &key_id)?.enabled = enable;
    Ok(json!({}))
}

pub fn update_key_description(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let description = p.str("Description")?;
    check_description(description)?;
    require_not_deleting(ctx.state, ctx.state.key(ctx.region, &key_id)?)?;
    ctx.state.key_mut(ctx.region, &key_id)?.description = description.to_string();
    Ok(json!({}))
}

pub fn schedule_key_deletion(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let window = p.opt_int("PendingWindowInDays")?.unwrap_or(30);
    if !(7..=30).contains(&window) {
        return Err(validation(format!(
            "1 validation error detected: Value '{window}' at 'pendingWindowInDays' failed to satisfy constraint: Member must have value between 7 and 30"
        )));
    }
    let key = ctx.state.key(ctx.region, &key_id)?;
    require_not_deleting(ctx.state, key)?;
    let has_replicas =
        !key.is_replica() && key.primary_region.is_some() && ctx.state.related(&key_id).count() > 1;
    let date_ms = (!has_replicas).then(|| ctx.now_ms + window * crate::state::DAY_MS);
    let key = ctx.state.key_mut(ctx.region, &key_id)?;
    key.deletion = Some(Deletion {
        window_days: window,
        date_ms,
    });
    let key = ctx.state.key(ctx.region, &key_id)?;
    let mut out = json!({
        "KeyId": key.arn,
        "KeyState": ctx.state.key_state(key),
        "PendingWindowInDays": window,
    });
    if let Some(t) = date_ms {
        out["DeletionDate"] = time(t);
    }
    Ok(out)
}

pub fn cancel_key_deletion(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let key = ctx.state.key_mut(ctx.region, &key_id)?;
    if key.deletion.is_none() {
        return Err(invalid_state(format!(
            "{} is not pending deletion.",
            key.arn
        )));
    }
    key.deletion = None;
    key.enabled = false;
    Ok(json!({ "KeyId": key.arn }))
}

pub fn replicate_key(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let replica_region = p.str("ReplicaRegion")?.to_string();
    let primary = ctx.state.key(ctx.region, &key_id)?;
    if !primary.multi_region {
        return Err(unsupported(format!(
            "{} is not a multi-Region key.",
            primary.arn
        )));
    }
    if primary.is_replica() {
        return Err(unsupported(format!(
            "{} is a replica key; replicate its primary key.",
            primary.arn
        )));
    }
    require_not_deleting(ctx.state, primary)?;
    if replica_region == ctx.region {
        return Err(validation(
            "ReplicaRegion must differ from the primary key's Region",
        ));
    }
    let account = ctx.account().to_string();
    if ctx
        .state
        .keys
        .contains_key(&(replica_region.clone(), key_id.clone()))
    {
        return Err(KmsError::new(
            "AlreadyExistsException",
            format!(
                "Replica {} already exists.",
                key_arn(&account, &replica_region, &key_id)
            ),
        ));
    }
    let description = p.opt_str("Description")?.unwrap_or_default();
    check_description(description)?;
    let (policy, tags) = policy_and_tags(p, &account, ctx.caller_arn)?;
    // Material is shared only when KMS made it; imported material must be imported again.
    let imports = if primary.is_external() {
        BTreeMap::new()
    } else {
        primary
            .imports
            .iter()
            .map(|(id, m)| {
                (
                    id.clone(),
                    Imported {
                        bytes: m.bytes.clone(),
                        valid_to_ms: None,
                        description: None,
                    },
                )
            })
            .collect()
    };
    let replica = Key {
        seq: 0,
        region: replica_region.clone(),
        key_id: key_id.clone(),
        arn: key_arn(&account, &replica_region, &key_id),
        created_ms: ctx.now_ms,
        description: description.to_string(),
        key_spec: primary.key_spec.clone(),
        key_usage: primary.key_usage.clone(),
        origin: primary.origin.clone(),
        enabled: true,
        deletion: None,
        policy: policy.clone(),
        tags: tags.clone(),
        multi_region: true,
        primary_region: primary.primary_region.clone(),
        imports,
        rotations_on_demand: 0,
        created_by_ms: ctx.now_ms + ctx.state.replica_creation_ms,
    };
    let replica = Key {
        seq: ctx.state.next_seq(),
        ..replica
    };
    ctx.state
        .keys
        .insert((replica_region.clone(), key_id.clone()), replica);
    let replica = ctx.state.key(&replica_region, &key_id)?;
    let tag_list: Vec<Value> = tags
        .iter()
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    Ok(json!({
        "ReplicaKeyMetadata": metadata(ctx.state, replica),
        "ReplicaPolicy": policy,
        "ReplicaTags": tag_list,
    }))
}

pub fn update_primary_region(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let new_primary = p.str("PrimaryRegion")?.to_string();
    let key = ctx.state.key(ctx.region, &key_id)?;
    if !key.multi_region || key.is_replica() {
        return Err(unsupported(format!(
            "{} is not a multi-Region primary key.",
            key.arn
        )));
    }
    require_manageable(ctx.state, key)?;
    if !ctx
        .state
        .keys
        .contains_key(&(new_primary.clone(), key_id.clone()))
    {
        return Err(not_found(format!(
            "{key_id} has no replica in {new_primary}"
        )));
    }
    for k in ctx.state.keys.values_mut().filter(|k| k.key_id == key_id) {
        k.primary_region = Some(new_primary.clone());
    }
    Ok(json!({}))
}

pub fn tag_resource(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let tags = p
        .opt_tags("Tags")?
        .ok_or_else(|| validation("Tags must not be null"))?;
    require_not_deleting(ctx.state, ctx.state.key(ctx.region, &key_id)?)?;
    merge_tags(&mut ctx.state.key_mut(ctx.region, &key_id)?.tags, &tags)?;
    Ok(json!({}))
}

pub fn untag_resource(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let keys = p
        .opt_str_list("TagKeys")?
        .ok_or_else(|| validation("TagKeys must not be null"))?;
    require_not_deleting(ctx.state, ctx.state.key(ctx.region, &key_id)?)?;
    let key = ctx.state.key_mut(ctx.region, &key_id)?;
    for k in keys {
        key.tags.remove(&k);
    }
    Ok(json!({}))
}

pub fn list_resource_tags(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let limit = p.limit(50, 50)?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    let tags: Vec<Value> = key
        .tags
        .iter()
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    let (tags, next) = page(tags, p.opt_str("Marker")?, limit)?;
    let mut out = Map::new();
    out.insert("Tags".into(), Value::Array(tags));
    Ok(paged(out, next))
}

fn check_alias_name(name: &str) -> KmsResult<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c));
    if !name.starts_with("alias/") || name.len() <= 6 || name.len() > 256 || !valid_chars {
        return Err(validation(format!(
            "Alias name {name:?} must begin with alias/ and contain only alphanumerics, /, _ and -"
        )));
    }
    if name.starts_with("alias/aws/") {
        return Err(KmsError::new(
            "NotAuthorizedException",
            "alias/aws/ is reserved for AWS managed keys",
        ));
    }
    Ok(())
}

fn alias_arn(account: &str, region: &str, name: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:{name}")
}

pub fn create_alias(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let name = p.str("AliasName")?.to_string();
    check_alias_name(&name)?;
    let key_id = ctx.resolve(p.str("TargetKeyId")?, false)?;
    require_not_deleting(ctx.state, ctx.state.key(ctx.region, &key_id)?)?;
    let id = (ctx.region.to_string(), name.clone());
    if ctx.state.aliases.contains_key(&id) {
        return Err(KmsError::new(
            "AlreadyExistsException",
            format!(
                "An alias with the name {} already exists",
                alias_arn(ctx.account(), ctx.region, &name)
            ),
        ));
    }
    ctx.state.aliases.insert(
        id,
        crate::state::Alias {
            target: key_id,
            created_ms: ctx.now_ms,
            updated_ms: ctx.now_ms,
        },
    );
    Ok(json!({}))
}

pub fn update_alias(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let name = p.str("AliasName")?.to_string();
    let key_id = ctx.resolve(p.str("TargetKeyId")?, false)?;
    let id = (ctx.region.to_string(), name.clone());
    let old = ctx
        .state
        .aliases
        .get(&id)
        .ok_or_else(|| {
            not_found(format!(
                "Alias {} is not found.",
                alias_arn(ctx.account(), ctx.region, &name)
            ))
        })?
        .target
        .clone();
    let new_key = ctx.state.key(ctx.region, &key_id)?;
    require_not_deleting(ctx.state, new_key)?;
    if let Ok(old_key) = ctx.state.key(ctx.region, &old)
        && (old_key.family() != new_key.family() || old_key.key_usage != new_key.key_usage)
    {
        return Err(validation(
            "the new target key must have the same key type and key usage as the current one",
        ));
    }
    if let Some(a) = ctx.state.aliases.get_mut(&id) {
        a.target = key_id;
        a.updated_ms = ctx.now_ms;
    }
    Ok(json!({}))
}

pub fn delete_alias(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let name = p.str("AliasName")?.to_string();
    let account = ctx.account().to_string();
    ctx.state
        .aliases
        .remove(&(ctx.region.to_string(), name.clone()))
        .map(|_| json!({}))
        .ok_or_else(|| {
            not_found(format!(
                "Alias {} is not found.",
                alias_arn(&account, ctx.region, &name)
            ))
        })
}

pub fn list_aliases(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let limit = p.limit(50, 100)?;
    let key_id = match p.opt_str("KeyId")? {
        Some(k) => Some(ctx.resolve(k, false)?),
        None => None,
    };
    let account = ctx.account().to_string();
    let aliases: Vec<Value> = ctx
        .state
        .aliases
        .iter()
        .filter(|((r, _), a)| r == ctx.region && key_id.as_ref().is_none_or(|k| &a.target == k))
        .map(|((r, name), a)| {
            json!({
                "AliasName": name,
                "AliasArn": alias_arn(&account, r, name),
                "TargetKeyId": a.target,
                "CreationDate": time(a.created_ms),
                "LastUpdatedDate": time(a.updated_ms),
            })
        })
        .collect();
    let (aliases, next) = page(aliases, p.opt_str("Marker")?, limit)?;
    let mut out = Map::new();
    out.insert("Aliases".into(), Value::Array(aliases));
    Ok(paged(out, next))
}
