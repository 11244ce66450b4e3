//! Imported key material: GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial,
//! RotateKeyOnDemand and ListKeyRotations, with AWS's refusals.

use serde_json::{Map, Value, json};

use super::keys::{require_created, require_enabled, require_not_deleting};
use super::{Ctx, page, paged};
use crate::error::{
    KmsError, KmsResult, incorrect_material, invalid_state, not_found, unsupported, validation,
};
use crate::material::{
    Family, WrappingAlgorithm, check_material, key_material_id, wrapping_key_size,
};
use crate::params::{Params, b64, time};
use crate::state::{
    DAY_MS, ImportParams, Imported, Key, MaterialSet, PENDING_IMPORT, Role, SetEntry,
};

/// How long import parameters stay valid.
pub const IMPORT_TOKEN_VALIDITY_MS: i64 = DAY_MS;
/// The furthest ValidTo KMS accepts.
pub const MAX_VALID_TO_MS: i64 = 365 * DAY_MS;

fn require_external(key: &Key) -> KmsResult<()> {
    if !key.is_external() {
        return Err(unsupported(format!(
            "{} origin is {} which is not valid for this operation.",
            key.arn, key.origin
        )));
    }
    Ok(())
}

pub fn get_parameters_for_import(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let algorithm = WrappingAlgorithm::parse(p.str("WrappingAlgorithm")?)?;
    wrapping_key_size(p.str("WrappingKeySpec")?)?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    require_external(key)?;
    require_not_deleting(ctx.state, key)?;
    require_created(ctx.state, key)?;
    let arn = key.arn.clone();
    let wrapping = ctx
        .wrapping
        .take()
        .ok_or_else(|| KmsError::new("KMSInternalException", "no wrapping key was generated"))?;
    let mut token = vec![0u8; 64];
    aws_lc_rs::rand::fill(&mut token)
        .map_err(|_| KmsError::new("KMSInternalException", "random generator failed"))?;
    token.splice(0..0, b"kms-model-import-token:".iter().copied());
    let public_key = wrapping.public_der.clone();
    let expires_ms = ctx.now_ms + IMPORT_TOKEN_VALIDITY_MS;
    ctx.state.tokens.insert(
        token.clone(),
        ImportParams {
            region: ctx.region.to_string(),
            key_id: key_id.clone(),
            algorithm,
            wrapping,
            expires_ms,
        },
    );
    Ok(json!({
        "KeyId": arn,
        "ImportToken": b64(&token),
        "PublicKey": b64(&public_key),
        "ParametersValidTo": time(expires_ms),
    }))
}

/// ExpirationModel and ValidTo of an import, validated: the ValidTo in epoch milliseconds.
fn expiration(ctx: &Ctx<'_>, p: &Params<'_>) -> KmsResult<Option<i64>> {
    let model = p
        .opt_str("ExpirationModel")?
        .unwrap_or("KEY_MATERIAL_EXPIRES");
    let valid_to = p.opt_time_ms("ValidTo")?;
    match (model, valid_to) {
        ("KEY_MATERIAL_EXPIRES", None) => Err(validation(
            "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES (the default)",
        )),
        ("KEY_MATERIAL_EXPIRES", Some(t)) if t <= ctx.now_ms => {
            Err(validation("ValidTo must be in the future"))
        }
        ("KEY_MATERIAL_EXPIRES", Some(t)) if t > ctx.now_ms + MAX_VALID_TO_MS => Err(validation(
            "ValidTo must be at most 365 days after the request",
        )),
        ("KEY_MATERIAL_EXPIRES", Some(t)) => Ok(Some(t)),
        ("KEY_MATERIAL_DOES_NOT_EXPIRE", None) => Ok(None),
        ("KEY_MATERIAL_DOES_NOT_EXPIRE", Some(_)) => Err(validation(
            "ValidTo is not valid when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE",
        )),
        (other, _) => Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'expirationModel' failed to satisfy constraint: Member must satisfy enum value set"
        ))),
    }
}

pub fn import_key_material(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let token = p.blob("ImportToken")?;
    let wrapped = p.blob("EncryptedKeyMaterial")?;
    let import_type = p.opt_str("ImportType")?;
    let requested_id = p.opt_str("KeyMaterialId")?;
    let description = p.opt_str("KeyMaterialDescription")?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    require_external(key)?;
    require_not_deleting(ctx.state, key)?;
    require_created(ctx.state, key)?;
    let symmetric = key.family() == Family::Symmetric;
    if !symmetric && (import_type.is_some() || requested_id.is_some() || description.is_some()) {
        return Err(validation(
            "ImportType, KeyMaterialId and KeyMaterialDescription are only valid for symmetric encryption keys",
        ));
    }
    if let Some(t) = import_type
        && t != "NEW_KEY_MATERIAL"
        && t != "EXISTING_KEY_MATERIAL"
    {
        return Err(validation(format!(
            "1 validation error detected: Value '{t}' at 'importType' failed to satisfy constraint: Member must satisfy enum value set"
        )));
    }
    if import_type == Some("NEW_KEY_MATERIAL") && requested_id.is_some() {
        return Err(validation(
            "You cannot specify a KeyMaterialId with ImportType NEW_KEY_MATERIAL",
        ));
    }
    let params = ctx.state.tokens.get(&token).ok_or_else(|| {
        KmsError::new(
            "InvalidImportTokenException",
            "The import token is not valid",
        )
    })?;
    if params.key_id != key_id || params.region != ctx.region {
        return Err(KmsError::new(
            "InvalidImportTokenException",
            "The import token was issued for another KMS key",
        ));
    }
    if params.expires_ms <= ctx.now_ms {
        return Err(KmsError::new(
            "ExpiredImportTokenException",
            "The import token has expired; call GetParametersForImport again",
        ));
    }
    let valid_to = expiration(ctx, p)?;
    let bytes = params.wrapping.unwrap(params.algorithm, &wrapped)?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    check_material(&key.key_spec, &bytes)?;
    let id = key_material_id(&key_id, &bytes);
    let is_replica = key.is_replica();
    let set = ctx.state.sets.get(&key_id).cloned().unwrap_or_default();
    let first = set.entries.is_empty();
    let kind = import_type.unwrap_or(if first || !symmetric {
        "NEW_KEY_MATERIAL"
    } else {
        "EXISTING_KEY_MATERIAL"
    });
    let mut new_set = set.clone();
    if first {
        if import_type == Some("EXISTING_KEY_MATERIAL") && !is_replica {
            return Err(incorrect_material(
                "No key material was imported into this KMS key before",
            ));
        }
        if is_replica && import_type == Some("NEW_KEY_MATERIAL") {
            return Err(unsupported(
                "New key material can only be imported into the primary Region key",
            ));
        }
        new_set.entries.push(SetEntry {
            id: id.clone(),
            role: Role::Current,
            rotation_date_ms: None,
        });
    } else if kind == "NEW_KEY_MATERIAL" && symmetric {
        if is_replica {
            return Err(unsupported(
                "New key material can only be imported into the primary Region key",
            ));
        }
        if set.get(&id).is_some() {
            return Err(incorrect_material(format!(
                "This key material ({id}) is already associated with the KMS key; import it with EXISTING_KEY_MATERIAL"
            )));
        }
        if let Some(pending) = set.pending() {
            return Err(invalid_state(format!(
                "Key material {} is already pending rotation; rotate or delete it first",
                pending.id
            )));
        }
        if ctx.state.key_state(key) == PENDING_IMPORT {
            return Err(invalid_state(format!(
                "{} is pending import; re-import its current key material first",
                key.arn
            )));
        }
        new_set.entries.push(SetEntry {
            id: id.clone(),
            role: Role::Pending,
            rotation_date_ms: None,
        });
    } else {
        // EXISTING_KEY_MATERIAL (and every re-import into asymmetric and HMAC keys).
        let expected = match requested_id {
            Some(requested) => {
                if set.get(requested).is_none() {
                    return Err(incorrect_material(format!(
                        "Key material {requested} is not associated with this KMS key"
                    )));
                }
                requested.to_string()
            }
            None => set
                .current()
                .map(|e| e.id.clone())
                .ok_or_else(|| incorrect_material("The KMS key has no current key material"))?,
        };
        if expected != id {
            return Err(incorrect_material(
                "The key material is not the same key material that was previously imported into this KMS key",
            ));
        }
    }
    let was_pending_import = ctx.state.key_state(key) == PENDING_IMPORT;
    ctx.state.sets.insert(key_id.clone(), new_set);
    let key = ctx.state.key_mut(ctx.region, &key_id)?;
    let previous_description = key.imports.get(&id).and_then(|m| m.description.clone());
    key.imports.insert(
        id.clone(),
        Imported {
            bytes,
            valid_to_ms: valid_to,
            description: description.map(str::to_string).or(previous_description),
        },
    );
    if was_pending_import {
        key.enabled = true;
    }
    let key = ctx.state.key(ctx.region, &key_id)?;
    let mut out = json!({"KeyId": key.arn});
    if symmetric {
        out["KeyMaterialId"] = json!(id);
    }
    Ok(out)
}

pub fn delete_imported_key_material(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let requested = p.opt_str("KeyMaterialId")?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    require_external(key)?;
    let arn = key.arn.clone();
    let is_replica = key.is_replica();
    let set = ctx.state.sets.get(&key_id).cloned().unwrap_or_default();
    let id = match requested {
        Some(r) => set
            .get(r)
            .map(|e| e.id.clone())
            .ok_or_else(|| not_found(format!("Key material {r} is not associated with {arn}")))?,
        None => match set.current() {
            Some(c) => c.id.clone(),
            // Nothing was ever imported: no effect.
            None => return Ok(json!({"KeyId": arn})),
        },
    };
    let pending = set.get(&id).is_some_and(|e| e.role == Role::Pending);
    if pending && !is_replica {
        // Deleting material pending rotation on the primary deletes it everywhere.
        if let Some(s) = ctx.state.sets.get_mut(&key_id) {
            s.entries.retain(|e| e.id != id);
        }
        for k in ctx.state.keys.values_mut().filter(|k| k.key_id == key_id) {
            k.imports.remove(&id);
        }
    } else {
        ctx.state.key_mut(ctx.region, &key_id)?.imports.remove(&id);
    }
    let mut out = json!({"KeyId": arn});
    if ctx.state.key(ctx.region, &key_id)?.family() == Family::Symmetric {
        out["KeyMaterialId"] = json!(id);
    }
    Ok(out)
}

pub fn rotate_key_on_demand(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let key = ctx.state.key(ctx.region, &key_id)?;
    if key.family() != Family::Symmetric {
        return Err(unsupported(format!(
            "{} is not a symmetric encryption key; on-demand rotation is not supported",
            key.arn
        )));
    }
    if key.is_replica() {
        return Err(unsupported(format!(
            "{} is a replica key; rotate the primary key",
            key.arn
        )));
    }
    require_enabled(ctx.state, key)?;
    if key.rotations_on_demand >= 25 {
        return Err(KmsError::new(
            "LimitExceededException",
            "A KMS key can be rotated on demand at most 25 times",
        ));
    }
    let arn = key.arn.clone();
    let mut set = ctx.state.sets.get(&key_id).cloned().unwrap_or_default();
    if key.is_external() {
        let pending = set.pending().map(|e| e.id.clone()).ok_or_else(|| {
            invalid_state(format!(
                "{arn} has no imported key material pending rotation; import new key material first"
            ))
        })?;
        if ctx.state.pending_state(&key_id, &pending) != "PENDING_ROTATION" {
            return Err(invalid_state(format!(
                "Key material {pending} is not imported into every replica key yet"
            )));
        }
        promote(&mut set, &pending, ctx.now_ms);
    } else {
        let bytes = crate::material::generate(&key.key_spec)?;
        let id = key_material_id(&key_id, &bytes);
        set.entries.push(SetEntry {
            id: id.clone(),
            role: Role::Pending,
            rotation_date_ms: None,
        });
        promote(&mut set, &id, ctx.now_ms);
        for k in ctx.state.keys.values_mut().filter(|k| k.key_id == key_id) {
            k.imports.insert(
                id.clone(),
                Imported {
                    bytes: bytes.clone(),
                    valid_to_ms: None,
                    description: None,
                },
            );
        }
    }
    ctx.state.sets.insert(key_id.clone(), set);
    ctx.state.key_mut(ctx.region, &key_id)?.rotations_on_demand += 1;
    Ok(json!({"KeyId": key_id}))
}

fn promote(set: &mut MaterialSet, id: &str, now_ms: i64) {
    for e in &mut set.entries {
        if e.role == Role::Current {
            e.role = Role::NonCurrent;
        }
        if e.id == id {
            e.role = Role::Current;
            e.rotation_date_ms = Some(now_ms);
        }
    }
}

pub fn list_key_rotations(ctx: &mut Ctx<'_>, p: &Params<'_>) -> KmsResult<Value> {
    let key_id = ctx.resolve(p.str("KeyId")?, false)?;
    let limit = p.limit(100, 1000)?;
    let all = match p.opt_str("IncludeKeyMaterial")? {
        None | Some("ROTATIONS_ONLY") => false,
        Some("ALL_KEY_MATERIAL") => true,
        Some(other) => {
            return Err(validation(format!(
                "1 validation error detected: Value '{other}' at 'includeKeyMaterial' failed to satisfy constraint: Member must satisfy enum value set"
            )));
        }
    };
    let key = ctx.state.key(ctx.region, &key_id)?;
    if key.family() != Family::Symmetric {
        return Err(unsupported(format!(
            "{} does not support key rotation",
            key.arn
        )));
    }
    let set = ctx.state.sets.get(&key_id).cloned().unwrap_or_default();
    let mut entries = Vec::new();
    for e in &set.entries {
        if !all && e.rotation_date_ms.is_none() {
            continue;
        }
        let mut m = Map::new();
        m.insert("KeyId".into(), json!(key_id));
        m.insert("KeyMaterialId".into(), json!(e.id));
        let state = match e.role {
            Role::Current => "CURRENT",
            Role::NonCurrent => "NON_CURRENT",
            Role::Pending => ctx.state.pending_state(&key_id, &e.id),
        };
        m.insert("KeyMaterialState".into(), json!(state));
        if let Some(t) = e.rotation_date_ms {
            m.insert("RotationDate".into(), time(t));
            m.insert("RotationType".into(), json!("ON_DEMAND"));
        }
        if key.is_external() {
            let imported = key.imports.get(&e.id);
            m.insert(
                "ImportState".into(),
                json!(if imported.is_some() {
                    "IMPORTED"
                } else {
                    "PENDING_IMPORT"
                }),
            );
            if let Some(i) = imported {
                match i.valid_to_ms {
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
                if let Some(d) = &i.description {
                    m.insert("KeyMaterialDescription".into(), json!(d));
                }
            }
        }
        entries.push(Value::Object(m));
    }
    let (entries, next) = page(entries, p.opt_str("Marker")?, limit)?;
    let mut out = Map::new();
    out.insert("Rotations".into(), Value::Array(entries));
    Ok(paged(out, next))
}
