//! `AwsKey` checks: CEL rules, keyfleet's spec validation, and — with the rest of the input —
//! its `kmsRef`, its Secret and key material, and alias conflicts.
//!
//! The spec and material checks call the controller's own code ([`desired::spec_errors`] —
//! every check of [`desired::desired_key`] —, [`desired::import_settings`],
//! [`desired::adopt_key_region`], [`KeyMaterial::from_secret_value`],
//! [`KeyMaterial::check_wrapping`]), so a finding here is a refusal the operator would make.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::finding::{Check, Finding, ObjectRef};
use super::kind::{Bundle, Kind, KindContext, Typed, report};
use super::object::{Object, ObjectFindings};
use super::secret::{SecretDoc, SecretValue};
use crate::api::{
    AwsKey, AwsKms, DEFAULT_CONNECTION, KeySpec, MaterialEncoding, Pkcs11Token, SecretKeySelector,
};
use crate::desired;
use crate::material::KeyMaterial;
use crate::tenancy;

impl Kind for AwsKey {
    fn into_typed(self) -> Typed {
        Typed::AwsKey(Box::new(self))
    }

    fn check(&self, _object: &Object, out: &mut ObjectFindings<'_>, ctx: &KindContext<'_>) {
        // Every refusal at once: `desired_key` (what the controller calls) stops at the first.
        report(out, desired::spec_errors(&self.spec, ctx.options.now));
        report(out, desired::adopt_key_region(&self.spec).err());
    }

    fn check_bundle(bundle: &Bundle<'_>, findings: &mut Vec<Finding>) {
        let mut keys: Vec<(&Object, &AwsKey)> = Vec::new();
        let mut kmses: HashMap<&str, &AwsKms> = HashMap::new();
        let mut tokens: HashMap<&str, &Pkcs11Token> = HashMap::new();
        for (object, typed) in bundle.typed() {
            match typed {
                Typed::AwsKey(key) => keys.push((object, key)),
                // A duplicate AwsKms is reported as such; the last one is what would be applied.
                Typed::AwsKms(kms) => {
                    kmses.insert(object.name(), kms);
                }
                Typed::Pkcs11Token(token) => {
                    tokens.insert(object.name(), token);
                }
                Typed::AwsReplicaKey(_) | Typed::AwsKeyPolicyTemplate(_) => {}
            }
        }
        // Secrets (by index in the bundle) whose own problems are already reported.
        let mut secrets_reported: HashSet<usize> = HashSet::new();
        for &(object, key) in &keys {
            let mut checks = KeyChecks {
                bundle,
                object,
                key,
                out: bundle.findings_for(object),
            };
            checks.kms_ref(&kmses);
            checks.token_ref(&tokens);
            checks.secrets(findings, &mut secrets_reported);
            findings.extend(checks.out.finish());
        }
        check_aliases(bundle, &keys, &kmses, findings);
    }
}

/// What checking one AwsKey against the rest of the input needs: the bundle, the key, and the
/// findings on it.
struct KeyChecks<'a, 'b> {
    bundle: &'a Bundle<'b>,
    object: &'a Object,
    key: &'a AwsKey,
    out: ObjectFindings<'a>,
}

impl KeyChecks<'_, '_> {
    /// The key's AwsKms: its alias prefix and regions, and present (only with `require_refs`).
    fn kms_ref(&mut self, kmses: &HashMap<&str, &AwsKms>) {
        let spec = &self.key.spec;
        let name = spec
            .kms_ref
            .as_ref()
            .map_or(DEFAULT_CONNECTION, |r| r.name.as_str());
        if let Some(kms) = kmses.get(name)
            && let Err(refusal) = tenancy::alias(
                name,
                spec.alias.as_deref(),
                kms.spec.alias_prefix.as_deref(),
                self.object.namespace(),
            )
        {
            self.out.add_at(
                Check::Reference,
                "/spec/alias",
                refusal.reason,
                refusal.message,
            );
        }
        let Some(kms_ref) = &spec.kms_ref else {
            return;
        };
        match kmses.get(kms_ref.name.as_str()) {
            Some(kms) if !kms.spec.allows_region(&spec.region) => self.out.add_at(
                Check::Reference,
                "/spec/region",
                "RegionNotAllowed",
                format!(
                    "region {} is not allowed by AwsKms/{} (allowed: {}); use an allowed region, \
                     or another kmsRef",
                    spec.region,
                    kms_ref.name,
                    kms.spec.regions.join(", ")
                ),
            ),
            Some(_) => {}
            None if self.bundle.options.require_refs => self.out.add_at(
                Check::Reference,
                "/spec/kmsRef/name",
                "KmsConnectionNotFound",
                format!(
                    "AwsKms {} is not in the validated manifests (--require-refs); add it, or \
                     remove spec.kmsRef to use the AwsKms named default",
                    kms_ref.name
                ),
            ),
            None => {}
        }
    }

    /// The Pkcs11Token of an HSM key: present (and admitting every namespace, or a selector
    /// keyfleet checks at run time against the namespace's labels), or absent (only with
    /// `require_refs`).
    fn token_ref(&mut self, tokens: &HashMap<&str, &Pkcs11Token>) {
        let Some(pkcs11) = &self.key.spec.key_material.pkcs11 else {
            return;
        };
        let name = pkcs11.token_ref.name.as_str();
        if tokens.contains_key(name) || !self.bundle.options.require_refs {
            return;
        }
        self.out.add_at(
            Check::Reference,
            "/spec/keyMaterial/pkcs11/tokenRef/name",
            "Pkcs11TokenNotFound",
            format!(
                "Pkcs11Token {name} (used by AwsKey {}/{}) is not in the validated manifests \
                 (--require-refs); add it, or fix keyMaterial.pkcs11.tokenRef",
                self.object.namespace(),
                self.object.name()
            ),
        );
    }

    /// The Secrets a key reads: its `secretRef` (whose material must also fit the wrapping) and
    /// every `retained` one.
    fn secrets(&mut self, findings: &mut Vec<Finding>, secrets_reported: &mut HashSet<usize>) {
        let spec = &self.key.spec;
        let source = &spec.key_material;
        let mut checks = SecretChecks {
            bundle: self.bundle,
            object: self.object,
            spec: spec.key_spec,
            out: &mut self.out,
            findings,
            secrets_reported,
        };
        // A PKCS#11 key has no Secret to check offline (the token is checked at run time).
        if let Some(secret_ref) = &source.secret_ref {
            let base = "/spec/keyMaterial/secretRef";
            // With keyMaterial.generate, keyfleet creates the Secret when it is missing.
            let created_if_missing = source.generate.is_some();
            if let Some(material) =
                checks.material(secret_ref, source.encoding, base, created_if_missing)
                && let Ok(settings) = desired::import_settings(source, spec.key_spec)
                && let Err(e) =
                    material.check_wrapping(settings.algorithm, settings.wrapping_key_spec)
            {
                checks.out.add_at(
                    Check::Material,
                    "/spec/keyMaterial/wrappingKeySpec",
                    e.reason(),
                    e.to_string(),
                );
            }
        }
        for (i, retained) in source.retained.iter().enumerate() {
            let base = format!("/spec/keyMaterial/retained/{i}/secretRef");
            checks.material(&retained.secret_ref, retained.encoding, &base, false);
        }
    }
}

/// What checking the Secrets of one key needs.
struct SecretChecks<'a, 'b, 'o> {
    bundle: &'a Bundle<'b>,
    object: &'a Object,
    spec: KeySpec,
    out: &'a mut ObjectFindings<'o>,
    findings: &'a mut Vec<Finding>,
    secrets_reported: &'a mut HashSet<usize>,
}

impl SecretChecks<'_, '_, '_> {
    /// One referenced Secret (`base`: the JSON pointer of the reference): present in the key's
    /// namespace (then its material is checked, and returned when it fits the key spec),
    /// present only in other namespaces (never readable), or absent (only with
    /// `require_refs`, and not for a Secret keyfleet creates when missing).
    fn material(
        &mut self,
        secret_ref: &SecretKeySelector,
        encoding: MaterialEncoding,
        base: &str,
        created_if_missing: bool,
    ) -> Option<KeyMaterial> {
        let (bundle, object) = (self.bundle, self.object);
        let namespace = object.namespace();
        let named: Vec<(usize, &SecretDoc)> = bundle
            .secrets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.object.name() == secret_ref.name)
            .collect();
        // Of duplicates, the last is what would be applied.
        let Some(&(index, secret)) = named
            .iter()
            .rev()
            .find(|(_, s)| s.object.namespace() == namespace)
        else {
            let mut elsewhere: Vec<&str> =
                named.iter().map(|(_, s)| s.object.namespace()).collect();
            elsewhere.sort_unstable();
            elsewhere.dedup();
            if !elsewhere.is_empty() {
                self.out.add_at(
                    Check::Reference,
                    &format!("{base}/name"),
                    "SecretNotFound",
                    format!(
                        "Secret {:?} is in namespace {}, not in {namespace}: an AwsKey reads its \
                         Secret only from its own namespace (secretRef has no namespace); move the \
                         Secret (or the AwsKey) so they share a namespace",
                        secret_ref.name,
                        elsewhere.join(", ")
                    ),
                );
            } else if bundle.options.require_refs && !created_if_missing {
                self.out.add_at(
                    Check::Reference,
                    &format!("{base}/name"),
                    "SecretNotFound",
                    format!(
                        "Secret {namespace}/{} is not in the validated manifests (--require-refs)",
                        secret_ref.name
                    ),
                );
            }
            return None;
        };

        let mut on_secret = bundle.findings_for(&secret.object);
        if self.secrets_reported.insert(index) {
            for (pointer, reason, message) in secret.problems() {
                on_secret.add_at(Check::Material, &pointer, reason, message);
            }
        }
        let material = match secret.value(&secret_ref.key) {
            SecretValue::Missing => {
                let keys = secret.keys();
                self.out.add_at(
                    Check::Reference,
                    &format!("{base}/key"),
                    "SecretKeyMissing",
                    format!(
                        "Secret {namespace}/{} has no key {:?} (it has: {}); put the key material \
                         under that key, or fix secretRef.key",
                        secret_ref.name,
                        secret_ref.key,
                        if keys.is_empty() {
                            "no keys".to_string()
                        } else {
                            keys.join(", ")
                        }
                    ),
                );
                None
            }
            SecretValue::Invalid => None, // reported on the Secret by `problems`
            SecretValue::Bytes { bytes, pointer } => {
                match KeyMaterial::from_secret_value(self.spec, encoding, &bytes) {
                    Err(e) => {
                        on_secret.add_at(
                            Check::Material,
                            &pointer,
                            e.reason(),
                            format!(
                                "key material for {} ({}, encoding {encoding}): {e}",
                                object.id, self.spec
                            ),
                        );
                        None
                    }
                    Ok(material) => Some(material),
                }
            }
        };
        self.findings.extend(on_secret.finish());
        material
    }
}

/// Who a key's alias is unique for: an alias names one key per AWS account and region.
/// Keys whose account cannot be told apart offline (an AwsKms that is not in the input, a
/// role in another account) are kept apart, so only certain conflicts are reported.
fn account_of(key: &AwsKey, kmses: &HashMap<&str, &AwsKms>) -> String {
    let operator = |endpoint: Option<&str>| format!("operator@{}", endpoint.unwrap_or_default());
    match &key.spec.kms_ref {
        None => operator(None),
        Some(r) => match kmses.get(r.name.as_str()) {
            None => format!("AwsKms/{}", r.name),
            Some(kms) => {
                let endpoint = kms.spec.endpoint_url.as_deref();
                match kms
                    .spec
                    .role_arn
                    .as_deref()
                    .and_then(|a| a.split(':').nth(4))
                {
                    Some(account) => format!("{account}@{}", endpoint.unwrap_or_default()),
                    None => operator(endpoint),
                }
            }
        },
    }
}

fn check_aliases(
    bundle: &Bundle<'_>,
    keys: &[(&Object, &AwsKey)],
    kmses: &HashMap<&str, &AwsKms>,
    findings: &mut Vec<Finding>,
) {
    // (account, region, alias) → claimants, one per distinct object.
    let mut claims: BTreeMap<(String, &str, &str), Vec<&Object>> = BTreeMap::new();
    for (object, key) in keys {
        let Some(alias) = key.spec.alias.as_deref() else {
            continue;
        };
        let claimants = claims
            .entry((account_of(key, kmses), &key.spec.region, alias))
            .or_default();
        if !claimants.iter().any(|o| o.id == object.id) {
            claimants.push(object);
        }
    }
    for ((_, region, alias), claimants) in &claims {
        if claimants.len() < 2 {
            continue;
        }
        for object in claimants {
            let others: Vec<String> = claimants
                .iter()
                .filter(|o| o.id != object.id)
                .map(|o| format!("{} ({})", describe(&o.id), bundle.location(o)))
                .collect();
            let mut out = bundle.findings_for(object);
            out.add_at(
                Check::Reference,
                "/spec/alias",
                "DuplicateAlias",
                format!(
                    "{alias} in {region} is also claimed by {}; an alias names one key per \
                     account and region, so keyfleet refuses all but one of them (AliasInUse)",
                    others.join(", ")
                ),
            );
            findings.extend(out.finish());
        }
    }
}

fn describe(id: &ObjectRef) -> String {
    id.to_string()
}
