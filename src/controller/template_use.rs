//! Which keys use which `AwsKeyPolicyTemplate` (pure, no I/O): an index kept from the events of
//! the AwsKey and AwsReplicaKey watches, which says how many keys name each template and which
//! templates' counts an event changed.

use std::collections::{HashMap, HashSet};

/// One watch (a key kind in one scope) feeding the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WatchId(usize);

/// What a watch reported about one key, or about its listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEvent<'a> {
    /// A (re-)list starts: keys it does not report again are gone.
    ListStarted,
    /// The key exists and names `template` (None: no template, or the object cannot be read).
    Present {
        namespace: &'a str,
        name: &'a str,
        template: Option<&'a str>,
    },
    /// The key was deleted.
    Deleted { namespace: &'a str, name: &'a str },
    /// The (re-)list is complete.
    ListDone,
}

/// A key as the index knows it: its watch (so an AwsKey and an AwsReplicaKey of one name
/// differ), namespace and name.
type KeyId = (WatchId, String, String);

#[derive(Debug, Default)]
struct WatchState {
    /// The watch has completed its first list: its keys are all known.
    synced: bool,
    /// During a (re-)list: the keys it reported so far.
    listed: Option<HashSet<KeyId>>,
}

/// The template each key names, and the number of keys per template.
#[derive(Debug, Default)]
pub struct TemplateUse {
    watches: Vec<WatchState>,
    template_of: HashMap<KeyId, String>,
    counts: HashMap<String, u32>,
}

impl TemplateUse {
    /// Registers a watch; the counts are complete once every registered watch listed its keys.
    pub fn add_watch(&mut self) -> WatchId {
        self.watches.push(WatchState::default());
        WatchId(self.watches.len() - 1)
    }

    /// Whether every watch has listed its keys at least once (before that, counts are partial).
    pub fn synced(&self) -> bool {
        self.watches.iter().all(|w| w.synced)
    }

    /// How many keys name `template`.
    pub fn count(&self, template: &str) -> u32 {
        self.counts.get(template).copied().unwrap_or(0)
    }

    /// Records one event of `watch`; returns the templates whose count changed.
    pub fn record(&mut self, watch: WatchId, event: KeyEvent<'_>) -> Vec<String> {
        let mut changed = vec![];
        match event {
            KeyEvent::ListStarted => {
                if let Some(state) = self.watches.get_mut(watch.0) {
                    state.listed = Some(HashSet::new());
                }
            }
            KeyEvent::Present {
                namespace,
                name,
                template,
            } => {
                let id = (watch, namespace.to_string(), name.to_string());
                if let Some(listed) = self
                    .watches
                    .get_mut(watch.0)
                    .and_then(|s| s.listed.as_mut())
                {
                    listed.insert(id.clone());
                }
                self.set(id, template, &mut changed);
            }
            KeyEvent::Deleted { namespace, name } => {
                let id = (watch, namespace.to_string(), name.to_string());
                self.set(id, None, &mut changed);
            }
            KeyEvent::ListDone => {
                let Some(state) = self.watches.get_mut(watch.0) else {
                    return changed;
                };
                state.synced = true;
                let Some(listed) = state.listed.take() else {
                    return changed;
                };
                // Keys deleted while the watch was down are absent from the new list.
                let gone: Vec<KeyId> = self
                    .template_of
                    .keys()
                    .filter(|id| id.0 == watch && !listed.contains(*id))
                    .cloned()
                    .collect();
                for id in gone {
                    self.set(id, None, &mut changed);
                }
            }
        }
        changed
    }

    /// Records that key `id` names `template`, noting the templates whose count changes.
    fn set(&mut self, id: KeyId, template: Option<&str>, changed: &mut Vec<String>) {
        let before = match template {
            Some(t) => self.template_of.insert(id, t.to_string()),
            None => self.template_of.remove(&id),
        };
        if before.as_deref() == template {
            return;
        }
        if let Some(old) = before {
            if let Some(n) = self.counts.get_mut(&old) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.counts.remove(&old);
                }
            }
            changed.push(old);
        }
        if let Some(new) = template {
            *self.counts.entry(new.to_string()).or_insert(0) += 1;
            changed.push(new.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present<'a>(name: &'a str, template: Option<&'a str>) -> KeyEvent<'a> {
        KeyEvent::Present {
            namespace: "team",
            name,
            template,
        }
    }

    fn listed(index: &mut TemplateUse, watch: WatchId, keys: &[(&str, Option<&str>)]) {
        index.record(watch, KeyEvent::ListStarted);
        for (name, template) in keys {
            index.record(watch, present(name, *template));
        }
        index.record(watch, KeyEvent::ListDone);
    }

    #[test]
    fn counts_follow_creation_change_and_deletion_of_keys() {
        let mut index = TemplateUse::default();
        let keys = index.add_watch();
        let replicas = index.add_watch();
        assert!(!index.synced());
        listed(&mut index, keys, &[("a", Some("std")), ("b", Some("std"))]);
        assert!(!index.synced(), "the replica watch has not listed yet");
        listed(&mut index, replicas, &[("a", Some("std")), ("c", None)]);
        assert!(index.synced());
        // An AwsKey and an AwsReplicaKey of the same name are two keys.
        assert_eq!(index.count("std"), 3);
        assert_eq!(index.count("other"), 0);

        // A status write (same template) changes nothing and triggers nothing.
        assert!(index.record(keys, present("a", Some("std"))).is_empty());
        // A key moving to another template changes both counts.
        assert_eq!(
            index.record(keys, present("b", Some("other"))),
            ["std", "other"]
        );
        assert_eq!((index.count("std"), index.count("other")), (2, 1));
        // A key dropping its templateRef, and a deleted key.
        assert_eq!(index.record(replicas, present("a", None)), ["std"]);
        assert_eq!(
            index.record(
                keys,
                KeyEvent::Deleted {
                    namespace: "team",
                    name: "b"
                }
            ),
            ["other"]
        );
        assert_eq!((index.count("std"), index.count("other")), (1, 0));
        // Deleting a key the index does not count changes nothing.
        assert!(
            index
                .record(
                    replicas,
                    KeyEvent::Deleted {
                        namespace: "team",
                        name: "c"
                    }
                )
                .is_empty()
        );
    }

    #[test]
    fn a_relist_drops_keys_deleted_while_the_watch_was_down() {
        let mut index = TemplateUse::default();
        let keys = index.add_watch();
        listed(
            &mut index,
            keys,
            &[("a", Some("std")), ("b", Some("std")), ("c", Some("pci"))],
        );
        assert_eq!((index.count("std"), index.count("pci")), (2, 1));
        index.record(keys, KeyEvent::ListStarted);
        assert!(index.record(keys, present("a", Some("std"))).is_empty());
        assert!(index.record(keys, present("c", Some("pci"))).is_empty());
        assert_eq!(index.record(keys, KeyEvent::ListDone), ["std"]);
        assert_eq!((index.count("std"), index.count("pci")), (1, 1));
        // Keys of another namespace are other keys.
        index.record(
            keys,
            KeyEvent::Present {
                namespace: "other-team",
                name: "a",
                template: Some("std"),
            },
        );
        assert_eq!(index.count("std"), 2);
    }
}
