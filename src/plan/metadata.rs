//! Tags-and-aliases step of the plan: the desired tags are set, the desired alias points at
//! the key, no other alias does.

use std::collections::BTreeMap;

use super::{Action, Blocker, DesiredKey, ObservedKey, Plan};

/// The alias as KMS sees it, when the desired alias is not on this key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AliasTarget {
    /// The desired alias does not exist.
    Free,
    /// It points at another key.
    OtherKey(String),
}

pub(super) fn plan_metadata(
    desired: &DesiredKey,
    observed: &ObservedKey,
    desired_alias_target: Option<&AliasTarget>,
    plan: &mut Plan,
) {
    let (to_tag, to_untag) = tag_changes(&desired.tags, &observed.tags);
    if !to_tag.is_empty() {
        plan.actions.push(Action::TagResource(to_tag));
    }
    if !to_untag.is_empty() {
        plan.actions.push(Action::UntagResource(to_untag));
    }
    if let Some(alias) = &desired.alias
        && !observed.aliases.contains(alias)
    {
        match desired_alias_target {
            Some(AliasTarget::OtherKey(_)) => plan.block(Blocker::AliasInUse(alias.clone())),
            _ => plan.actions.push(Action::CreateAlias(alias.clone())),
        }
    }
    for alias in &observed.aliases {
        if desired.alias.as_ref() != Some(alias) {
            plan.actions.push(Action::DeleteAlias(alias.clone()));
        }
    }
}

/// Tags to set (new or changed values) and tag keys to remove. Tags AWS reserves (`aws:`) are
/// never touched.
fn tag_changes(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let to_tag = desired
        .iter()
        .filter(|(k, v)| observed.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let to_untag = observed
        .keys()
        .filter(|k| !desired.contains_key(*k) && !k.starts_with("aws:"))
        .cloned()
        .collect();
    (to_tag, to_untag)
}
