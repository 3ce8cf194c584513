//! The snapshot store named by a URL: `redis://` (and `rediss://`, `unix://`) is Redis, `file://DIR` is the local
//! directory store that the zero-setup `mesh up` falls back to when no Redis is reachable. Here rather than in the
//! binary because `mesh bench`'s engine (`mesh-bench`) reads the store a run names the same way the binary does.

use mesh_transport::file_store::FileStore;
use mesh_transport::{SnapshotStore, TransportError};

use crate::RedisStore;

/// Redis or the local file store, chosen by URL: a deployment's store is named by one URL, whichever it is.
#[derive(Clone)]
pub enum AnyStore {
    /// A Redis server (`redis://`, `rediss://`, `unix://`).
    Redis(RedisStore),
    /// The local directory store (`file://DIR`).
    File(FileStore),
}

impl AnyStore {
    /// Connects to the store named by `url`, a Redis over TLS trusting `ca_file` when one is given.
    pub async fn connect(url: &str, ca_file: Option<&std::path::Path>) -> Result<Self, TransportError> {
        match url.strip_prefix("file://") {
            Some(dir) => FileStore::open(dir).map(AnyStore::File),
            None => {
                let ca = match ca_file {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        TransportError::failed(format!("reading the redis CA certificate {}", path.display()), e)
                    })?),
                    None => None,
                };
                RedisStore::connect_with(url, ca).await.map(AnyStore::Redis)
            }
        }
    }
}

impl SnapshotStore for AnyStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, TransportError> {
        match self {
            AnyStore::Redis(s) => s.get(key).await,
            AnyStore::File(s) => s.get(key).await,
        }
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), TransportError> {
        match self {
            AnyStore::Redis(s) => s.set(key, value).await,
            AnyStore::File(s) => s.set(key, value).await,
        }
    }
    async fn hset(&self, key: &str, fields: &[(String, String)]) -> Result<(), TransportError> {
        match self {
            AnyStore::Redis(s) => s.hset(key, fields).await,
            AnyStore::File(s) => s.hset(key, fields).await,
        }
    }
    async fn hset_nx(&self, key: &str, field: &str, value: &str) -> Result<bool, TransportError> {
        match self {
            AnyStore::Redis(s) => s.hset_nx(key, field, value).await,
            AnyStore::File(s) => s.hset_nx(key, field, value).await,
        }
    }
    async fn hget(&self, key: &str, field: &str) -> Result<Option<String>, TransportError> {
        match self {
            AnyStore::Redis(s) => s.hget(key, field).await,
            AnyStore::File(s) => s.hget(key, field).await,
        }
    }
    async fn hgetall(&self, key: &str) -> Result<Vec<(String, String)>, TransportError> {
        match self {
            AnyStore::Redis(s) => s.hgetall(key).await,
            AnyStore::File(s) => s.hgetall(key).await,
        }
    }
}
