//! Own writes the watch cache has not shown yet: a reconcile never starts from a copy of its
//! object older than this instance's last status write of it.
//!
//! The controller hands each reconcile the object from its watch cache. Its own status writes
//! reach that cache a little later, through the watch, and do not trigger a reconcile; but
//! something else may (a replica's change triggers its primary), and that reconcile can start
//! before the cache has the write. Planning from the older status redoes work: an AwsKey whose
//! cached status does not yet carry the KeyMaterialId it just imported takes the Secret's material
//! as unproven and imports it again. So each status write of a key records the resourceVersion it
//! made; the watch clears the record when it delivers that version; a reconcile handed any other
//! version while a record stands reads the object from the API instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kube::Resource;
use kube::api::Api;
use serde::de::DeserializeOwned;
use tracing::debug;

/// Per object uid: the resourceVersion of this instance's last status write that the watch
/// has not delivered yet.
#[derive(Debug, Default)]
pub struct Written {
    versions: Mutex<HashMap<String, String>>,
}

impl Written {
    fn versions(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This instance wrote `obj`'s status, making `version` (None: nothing was written).
    pub fn wrote<K: Resource>(&self, obj: &K, version: Option<String>) {
        if let (Some(uid), Some(version)) = (obj.meta().uid.as_ref(), version) {
            self.versions().insert(uid.clone(), version);
        }
    }

    /// The watch delivered `obj` into the cache: a write it carries is no longer ahead of it.
    pub fn seen<K: Resource>(&self, obj: &K) {
        let meta = obj.meta();
        if let (Some(uid), Some(version)) = (meta.uid.as_ref(), meta.resource_version.as_ref()) {
            let mut versions = self.versions();
            if versions.get(uid) == Some(version) {
                versions.remove(uid);
            }
        }
    }

    /// Forgets a deleted object.
    pub fn forget(&self, uid: &str) {
        self.versions().remove(uid);
    }

    /// Objects with a write the watch has not delivered yet.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.versions().len()
    }

    /// The object a reconcile starts from: `cached` itself, unless this instance wrote a
    /// version of it the cache does not hold; then the API's current object (None: it is gone).
    pub async fn fresh<K>(
        &self,
        api: &Api<K>,
        cached: Arc<K>,
    ) -> Result<Option<Arc<K>>, kube::Error>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let meta = cached.meta();
        let Some(uid) = meta.uid.as_deref() else {
            return Ok(Some(cached));
        };
        let behind = match self.versions().get(uid) {
            None => false,
            Some(written) => meta.resource_version.as_ref() != Some(written),
        };
        if !behind {
            return Ok(Some(cached));
        }
        let name = meta.name.clone().unwrap_or_default();
        debug!(
            cached = meta.resource_version.as_deref().unwrap_or_default(),
            "the cached object is older than this instance's last status write: reading it from the API"
        );
        let current = api.get_opt(&name).await?;
        // The API's object holds the write (or a later change), or the object is gone (a
        // namesake is another object): nothing of this instance is ahead of it any more.
        self.forget(uid);
        Ok(current
            .filter(|c| c.meta().uid.as_deref() == Some(uid))
            .map(Arc::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AwsKey, AwsKeySpec, AwsKeyStatus};
    use crate::controller::status;
    use kube::api::{DeleteParams, PostParams};

    fn status_with_key(key_id: &str) -> AwsKeyStatus {
        let mut s = AwsKeyStatus::default();
        s.key.key_id = Some(key_id.to_string());
        s
    }

    /// On the in-memory API server: a copy from before a recorded write is read again (and the
    /// API's object carries the write); a copy the watch delivered, or one of an object this
    /// instance never wrote, is used as it is; an object deleted since is gone.
    #[tokio::test]
    async fn a_copy_older_than_the_last_own_write_is_read_again_from_the_api() {
        let kube = memkube::MemKube::new();
        let api: Api<AwsKey> = Api::namespaced(kube.client(), "default");
        let spec = serde_json::json!({"region": "us-east-1", "keySpec": "SYMMETRIC_DEFAULT",
            "keyMaterial": {"secretRef": {"name": "m", "key": "material"}}});
        let key = AwsKey::new("k", serde_json::from_value::<AwsKeySpec>(spec).unwrap());
        let before = Arc::new(api.create(&PostParams::default(), &key).await.unwrap());
        let written = Written::default();

        // Never written by this instance: the cached copy as it is.
        let same = written.fresh(&api, before.clone()).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&same, &before));

        let first = status::write(&api, "k", None, &status_with_key("a"))
            .await
            .unwrap();
        assert!(first.is_some());
        written.wrote(&*before, first.clone());
        assert_eq!(written.pending(), 1);
        let fresh = written.fresh(&api, before.clone()).await.unwrap().unwrap();
        assert_eq!(fresh.metadata.resource_version, first);
        assert_eq!(
            fresh.status.as_ref().unwrap().key.key_id.as_deref(),
            Some("a")
        );
        assert_eq!(written.pending(), 0, "the API's object holds the write");

        // A second write; the watch delivers the first version, then the second.
        let second = status::write(&api, "k", fresh.status.as_ref(), &status_with_key("b"))
            .await
            .unwrap();
        written.wrote(&*fresh, second.clone());
        written.seen(&*fresh);
        assert_eq!(
            written.pending(),
            1,
            "an older version delivered clears nothing"
        );
        let mut delivered = (*fresh).clone();
        delivered.metadata.resource_version = second;
        written.seen(&delivered);
        assert_eq!(written.pending(), 0);

        // Nothing to write: no version, no record.
        let unchanged = status::write(
            &api,
            "k",
            delivered.status.as_ref(),
            delivered.status.as_ref().unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(unchanged, None);
        written.wrote(&delivered, unchanged);
        assert_eq!(written.pending(), 0);

        // Written, then deleted before the cache caught up: gone, and forgotten.
        let third = status::write(&api, "k", delivered.status.as_ref(), &status_with_key("c"))
            .await
            .unwrap();
        written.wrote(&delivered, third);
        api.delete("k", &DeleteParams::default()).await.unwrap();
        let gone = written.fresh(&api, Arc::new(delivered)).await.unwrap();
        assert!(gone.is_none());
        assert_eq!(written.pending(), 0);
    }
}
