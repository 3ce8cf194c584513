//! A [`SnapshotStore`] in a local directory: the fallback of the zero-setup `mesh up` when no Redis is reachable.
//! Every process of a local deployment opens the same directory; each key is one file, replaced atomically
//! (write, fsync, rename), and hash updates hold an exclusive file lock, so `hset_nx` is atomic across processes.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{SnapshotStore, TransportError};

/// The store; clones share the directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: Arc<PathBuf>,
}

fn fail(op: &str, e: impl ToString) -> TransportError {
    TransportError::failed(op, e)
}

impl FileStore {
    /// Opens (and creates) the directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, TransportError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| fail("creating the file store", e))?;
        Ok(Self { dir: Arc::new(dir) })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        // Keys hold ':'; keep them readable but safe as file names.
        let safe: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '+' })
            .collect();
        self.dir.join(safe)
    }

    fn read(path: &Path) -> Result<Option<Vec<u8>>, TransportError> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fail("reading the file store", e)),
        }
    }

    fn write(path: &Path, bytes: &[u8]) -> Result<(), TransportError> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(|e| fail("writing the file store", e))?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| fail("writing the file store", e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail("writing the file store", e))
    }

    fn with_hash<T>(
        &self,
        key: &str,
        update: impl FnOnce(&mut BTreeMap<String, String>) -> (bool, T),
    ) -> Result<T, TransportError> {
        let path = self.path(key);
        let lock_path = path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| fail("locking the file store", e))?;
        lock.lock().map_err(|e| fail("locking the file store", e))?;
        let mut map: BTreeMap<String, String> = match Self::read(&path)? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| fail("reading a hash from the file store", e))?,
            None => BTreeMap::new(),
        };
        let (changed, out) = update(&mut map);
        if changed {
            let bytes = serde_json::to_vec(&map).map_err(|e| fail("writing a hash to the file store", e))?;
            Self::write(&path, &bytes)?;
        }
        drop(lock);
        Ok(out)
    }

    fn hash(&self, key: &str) -> Result<BTreeMap<String, String>, TransportError> {
        match Self::read(&self.path(key))? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| fail("reading a hash from the file store", e)),
            None => Ok(BTreeMap::new()),
        }
    }
}

impl SnapshotStore for FileStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, TransportError> {
        Self::read(&self.path(key))
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), TransportError> {
        Self::write(&self.path(key), value)
    }

    async fn hset(&self, key: &str, fields: &[(String, String)]) -> Result<(), TransportError> {
        self.with_hash(key, |m| {
            for (k, v) in fields {
                m.insert(k.clone(), v.clone());
            }
            (true, ())
        })
    }

    async fn hset_nx(&self, key: &str, field: &str, value: &str) -> Result<bool, TransportError> {
        self.with_hash(key, |m| {
            if m.contains_key(field) {
                (false, false)
            } else {
                m.insert(field.to_owned(), value.to_owned());
                (true, true)
            }
        })
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<String>, TransportError> {
        Ok(self.hash(key)?.remove(field))
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, String)>, TransportError> {
        Ok(self.hash(key)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        // The store never awaits anything: poll once with a no-op waker.
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("file store futures complete at once"),
        }
    }

    #[test]
    fn behaves_like_the_redis_subset() {
        let dir = std::env::temp_dir().join(format!("mesh-file-store-{}", std::process::id()));
        let s = FileStore::open(&dir).expect("open");
        assert_eq!(block(s.get("a:b")).expect("get"), None);
        block(s.set("a:b", b"x")).expect("set");
        assert_eq!(block(s.get("a:b")).expect("get"), Some(b"x".to_vec()));
        block(s.hset("h", &[("f".into(), "1".into()), ("g".into(), "2".into())])).expect("hset");
        assert!(block(s.hset_nx("h", "n", "3")).expect("nx"));
        assert!(!block(s.hset_nx("h", "n", "4")).expect("nx"));
        assert_eq!(block(s.hget("h", "n")).expect("hget"), Some("3".into()));
        assert_eq!(block(s.hgetall("h")).expect("all").len(), 3);
        let _ = std::fs::remove_dir_all(dir);
    }
}
