//! Files of the state directory, private to their user: the directory 0700, files 0600, and nothing opened through
//! a symbolic link. The directory holds the settings (a Redis URL may carry a password), the logs and the control
//! socket; on a shared machine another user must neither read them nor plant a link that makes the supervisor write
//! elsewhere (`.mesh/logs/agent-sales.log -> ~victim/.bashrc`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

/// Creates `path` (and missing parents) as 0700 directories; refuses a symlink. An existing directory keeps its
/// mode: it may be one the user shares on purpose (`--state-dir /tmp` must not make /tmp private), and what this
/// module creates in it is private anyway.
pub fn create_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(io::Error::other(format!(
            "{} is a symbolic link; remove it, the state directory must be real",
            path.display()
        )));
    }
    Ok(())
}

/// Opens `path` for appending (created 0600), never through a symlink (fails with ELOOP instead).
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(OFlag::O_NOFOLLOW.bits()).open(path)
}

/// Creates or truncates `path` (0600) for writing, never through a symlink.
pub fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Opens `path` for reading and writing without truncating (created 0600), never through a symlink.
pub fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Makes every file this process creates from now on private (umask 077), so that files written by code that does
/// not use this module (the children: Kafka's and Redis's data, which the supervisor's children inherit) are too.
pub fn restrict_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_are_private_and_links_are_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("state/logs");
        create_dir(&dir).expect("created");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let log = dir.join("a.log");
        open_append(&log).expect("log");
        assert_eq!(mode(&log), 0o600);

        let target = tmp.path().join("victim");
        std::fs::write(&target, "keep").expect("victim");
        let planted = dir.join("b.log");
        std::os::unix::fs::symlink(&target, &planted).expect("symlink");
        assert!(open_append(&planted).is_err(), "appending through a link is refused");
        assert!(create(&planted).is_err(), "truncating through a link is refused");
        assert_eq!(std::fs::read_to_string(&target).expect("victim"), "keep");

        let linked_dir = tmp.path().join("linked");
        std::os::unix::fs::symlink(tmp.path(), &linked_dir).expect("symlink");
        assert!(create_dir(&linked_dir).is_err(), "a linked state directory is refused");

        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).expect("dir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        create_dir(&shared).expect("existing");
        assert_eq!(mode(&shared), 0o755, "an existing directory keeps its mode");
        create_dir(&shared.join("logs")).expect("new");
        assert_eq!(mode(&shared.join("logs")), 0o700, "what is created in it is private");
    }
}
