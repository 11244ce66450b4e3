//! The account's KMS state: keys per Region, aliases, material sets shared by the Regions of a
//! multi-Region key, import parameters, and what the manual clock does to them.

use std::collections::{BTreeMap, HashMap};

use zeroize::Zeroizing;

use crate::error::{KmsError, KmsResult, not_found};
use crate::material::{Family, WrappingAlgorithm, WrappingKey, family};

pub const DAY_MS: i64 = 86_400_000;

/// The role of a material in its key's material set (`KeyMaterialState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Current,
    NonCurrent,
    /// Imported with NEW_KEY_MATERIAL, not rotated to yet.
    Pending,
}

/// One material of a key (set): its id, role and rotation date.
#[derive(Clone, Debug)]
pub struct SetEntry {
    pub id: String,
    pub role: Role,
    pub rotation_date_ms: Option<i64>,
}

/// The materials of a key, shared by every Region of a multi-Region key, in import order.
#[derive(Clone, Debug, Default)]
pub struct MaterialSet {
    pub entries: Vec<SetEntry>,
}

impl MaterialSet {
    pub fn current(&self) -> Option<&SetEntry> {
        self.entries.iter().find(|e| e.role == Role::Current)
    }
    pub fn pending(&self) -> Option<&SetEntry> {
        self.entries.iter().find(|e| e.role == Role::Pending)
    }
    pub fn get(&self, id: &str) -> Option<&SetEntry> {
        self.entries.iter().find(|e| e.id == id)
    }
}

/// Material held by the key of one Region.
pub struct Imported {
    pub bytes: Zeroizing<Vec<u8>>,
    pub valid_to_ms: Option<i64>,
    pub description: Option<String>,
}

/// How deletion of a key is scheduled.
#[derive(Clone, Copy, Debug)]
pub struct Deletion {
    pub window_days: i64,
    /// None while a primary waits for its replicas (PendingReplicaDeletion).
    pub date_ms: Option<i64>,
}

/// A KMS key in one Region.
pub struct Key {
    /// Creation order in the account (ListKeys lists oldest first).
    pub seq: u64,
    pub region: String,
    pub key_id: String,
    pub arn: String,
    pub created_ms: i64,
    pub description: String,
    pub key_spec: String,
    pub key_usage: String,
    pub origin: String,
    pub enabled: bool,
    pub deletion: Option<Deletion>,
    pub policy: String,
    pub tags: BTreeMap<String, String>,
    pub multi_region: bool,
    /// The Region of the multi-Region primary (this key's own Region when it is the primary).
    pub primary_region: Option<String>,
    /// Materials this Region holds, by KeyMaterialId.
    pub imports: BTreeMap<String, Imported>,
    pub rotations_on_demand: u32,
    /// A replica is `Creating` until this time (epoch milliseconds).
    pub created_by_ms: i64,
}

impl Key {
    pub fn family(&self) -> Family {
        family(&self.key_spec)
    }
    pub fn is_replica(&self) -> bool {
        self.primary_region
            .as_deref()
            .is_some_and(|p| p != self.region)
    }
    pub fn is_external(&self) -> bool {
        self.origin == "EXTERNAL"
    }
}

/// The parameters one GetParametersForImport handed out.
pub struct ImportParams {
    pub region: String,
    pub key_id: String,
    pub algorithm: WrappingAlgorithm,
    pub wrapping: WrappingKey,
    pub expires_ms: i64,
}

#[derive(Clone, Debug)]
pub struct Alias {
    pub target: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// Everything the account holds.
#[derive(Default)]
pub struct State {
    pub account: String,
    pub keys: BTreeMap<(String, String), Key>,
    pub sets: HashMap<String, MaterialSet>,
    pub aliases: BTreeMap<(String, String), Alias>,
    pub tokens: HashMap<Vec<u8>, ImportParams>,
    pub next_seq: u64,
    /// The clock at the last [`State::tick`].
    pub now_ms: i64,
    /// How long a new replica stays `Creating` (0: it is ready at once).
    pub replica_creation_ms: i64,
    /// Access keys handed out by AssumeRole → the assumed-role session ARN.
    pub sessions: HashMap<String, String>,
    /// Roles registered with the model → the ExternalId their trust policy requires.
    pub roles: HashMap<String, Option<String>>,
}

/// `KeyState` names.
pub const ENABLED: &str = "Enabled";
pub const DISABLED: &str = "Disabled";
pub const PENDING_IMPORT: &str = "PendingImport";
pub const PENDING_DELETION: &str = "PendingDeletion";
pub const PENDING_REPLICA_DELETION: &str = "PendingReplicaDeletion";
pub const CREATING: &str = "Creating";

impl State {
    pub fn new(account: &str) -> State {
        State {
            account: account.to_string(),
            ..State::default()
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    pub fn key(&self, region: &str, key_id: &str) -> KmsResult<&Key> {
        self.keys
            .get(&(region.to_string(), key_id.to_string()))
            .ok_or_else(|| missing_key(&self.account, region, key_id))
    }

    pub fn key_mut(&mut self, region: &str, key_id: &str) -> KmsResult<&mut Key> {
        let account = self.account.clone();
        self.keys
            .get_mut(&(region.to_string(), key_id.to_string()))
            .ok_or_else(|| missing_key(&account, region, key_id))
    }

    /// The keys of a multi-Region key in every Region (one key for a single-Region key).
    pub fn related(&self, key_id: &str) -> impl Iterator<Item = &Key> {
        self.keys.values().filter(move |k| k.key_id == key_id)
    }

    /// Whether this key holds every current and non-current material of its set.
    fn holds_all(&self, key: &Key) -> bool {
        match self.sets.get(&key.key_id) {
            None => false,
            Some(set) => {
                set.current().is_some()
                    && set
                        .entries
                        .iter()
                        .filter(|e| e.role != Role::Pending)
                        .all(|e| key.imports.contains_key(&e.id))
            }
        }
    }

    /// The `KeyState` of a key.
    pub fn key_state(&self, key: &Key) -> &'static str {
        match key.deletion {
            None if key.created_by_ms > self.now_ms => CREATING,
            Some(Deletion { date_ms: None, .. }) => PENDING_REPLICA_DELETION,
            Some(_) => PENDING_DELETION,
            None if key.is_external() && !self.holds_all(key) => PENDING_IMPORT,
            None if key.enabled => ENABLED,
            None => DISABLED,
        }
    }

    /// `KeyMaterialState` of a pending material: whether every replica holds it.
    pub fn pending_state(&self, key_id: &str, material_id: &str) -> &'static str {
        if self
            .related(key_id)
            .all(|k| k.imports.contains_key(material_id))
        {
            "PENDING_ROTATION"
        } else {
            "PENDING_MULTI_REGION_IMPORT_AND_ROTATION"
        }
    }

    /// What the clock did since the last look: expired material is deleted, keys whose
    /// waiting period ended are deleted, primaries whose last replica is gone start theirs.
    pub fn tick(&mut self, now_ms: i64) {
        self.now_ms = self.now_ms.max(now_ms);
        for key in self.keys.values_mut() {
            key.imports
                .retain(|_, m| m.valid_to_ms.is_none_or(|t| t > now_ms));
        }
        self.tokens.retain(|_, p| p.expires_ms + DAY_MS > now_ms);
        loop {
            let due: Vec<(String, String)> = self
                .keys
                .iter()
                .filter(|(_, k)| {
                    k.deletion
                        .is_some_and(|d| d.date_ms.is_some_and(|t| t <= now_ms))
                })
                .map(|(id, _)| id.clone())
                .collect();
            for (region, key_id) in &due {
                self.keys.remove(&(region.clone(), key_id.clone()));
                self.aliases
                    .retain(|(r, _), a| !(r == region && &a.target == key_id));
            }
            let mut started = false;
            let waiting: Vec<(String, String)> = self
                .keys
                .iter()
                .filter(|(_, k)| k.deletion.is_some_and(|d| d.date_ms.is_none()))
                .map(|(id, _)| id.clone())
                .collect();
            for (region, key_id) in waiting {
                if self.related(&key_id).count() == 1
                    && let Some(key) = self.keys.get_mut(&(region, key_id))
                    && let Some(d) = key.deletion.as_mut()
                {
                    d.date_ms = Some(now_ms + d.window_days * DAY_MS);
                    started = true;
                }
            }
            let live: std::collections::HashSet<&String> =
                self.keys.values().map(|k| &k.key_id).collect();
            self.sets.retain(|id, _| live.contains(id));
            if due.is_empty() && !started {
                break;
            }
        }
    }
}

pub fn key_arn(account: &str, region: &str, key_id: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:key/{key_id}")
}

fn missing_key(account: &str, region: &str, key_id: &str) -> KmsError {
    not_found(format!(
        "Key '{}' does not exist",
        key_arn(account, region, key_id)
    ))
}
