//! [`SnapshotStore`] over Redis: the only crate that names the redis client.
//!
//! Uses a `ConnectionManager`, which reconnects by itself after Redis restarts; a command issued while Redis is down
//! fails with [`TransportError::Unreachable`] and the caller retries with backoff.
#![warn(missing_docs)]

mod any;

pub use any::AnyStore;

use mesh_transport::{SnapshotStore, TransportError};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

/// A Redis connection shared by clones.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    url: String,
}

fn err(url: &str, e: &redis::RedisError) -> TransportError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        TransportError::Unreachable {
            what: format!("redis {}", mesh_transport::redact_url(url)),
            detail: e.to_string(),
        }
    } else {
        TransportError::failed("redis command", e)
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port[/db]`, `rediss://` for TLS with the system's CAs); fails if Redis
    /// cannot be reached now.
    pub async fn connect(url: &str) -> Result<Self, TransportError> {
        Self::connect_with(url, None).await
    }

    /// [`Self::connect`], trusting `ca_pem` (a PEM CA certificate) for a `rediss://` server: how a deployment
    /// with its own CA reaches its Redis over TLS. A user and password in the URL log in as that ACL user.
    pub async fn connect_with(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Self, TransportError> {
        let shown = mesh_transport::redact_url(url);
        let client = match ca_pem {
            Some(root_cert) if url.starts_with("rediss://") => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) },
            ),
            Some(_) => {
                return Err(TransportError::failed(
                    format!("connecting to {shown:?}"),
                    "a CA certificate is given but the URL is not rediss:// (TLS)",
                ));
            }
            None => redis::Client::open(url),
        }
        .map_err(|e| TransportError::failed(format!("parsing redis url {shown:?}"), e))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(5)));
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(|e| err(url, &e))?;
        Ok(Self { conn, url: url.to_owned() })
    }

    /// The URL connected to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl SnapshotStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, TransportError> {
        let mut c = self.conn.clone();
        c.get(key).await.map_err(|e| err(&self.url, &e))
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), TransportError> {
        let mut c = self.conn.clone();
        c.set(key, value).await.map_err(|e| err(&self.url, &e))
    }

    async fn hset(&self, key: &str, fields: &[(String, String)]) -> Result<(), TransportError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        c.hset_multiple(key, fields).await.map_err(|e| err(&self.url, &e))
    }

    async fn hset_nx(&self, key: &str, field: &str, value: &str) -> Result<bool, TransportError> {
        let mut c = self.conn.clone();
        c.hset_nx(key, field, value).await.map_err(|e| err(&self.url, &e))
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<String>, TransportError> {
        let mut c = self.conn.clone();
        c.hget(key, field).await.map_err(|e| err(&self.url, &e))
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, String)>, TransportError> {
        let mut c = self.conn.clone();
        c.hgetall(key).await.map_err(|e| err(&self.url, &e))
    }
}
