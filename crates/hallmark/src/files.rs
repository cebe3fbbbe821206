//! Credential files replaced atomically: a reader sees the old file or the
//! complete new one, never a torn write (`hallmark helper`, `hallmark svid
//! fetch --out`).

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Replaces `path` with `data`, file mode `mode`, so that a reader sees either the
/// old file or the complete new one: temp file in the same directory,
/// fsync, rename over the target, fsync the directory so the rename itself
/// survives a crash.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        bail!("writing {}: not a file path", path.display());
    };
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    // A leftover from a crash could carry other permissions; create_new
    // below then guarantees the mode is ours.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", tmp.display())),
    }
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may clear bits of the mode: set it explicitly so it
        // never depends on the environment.
        f.set_permissions(Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()
    };
    write().with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.pem");
        std::fs::write(&path, "old").expect("seed");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        // A stale temp file with a wide mode must not leak its mode.
        let stale = dir.path().join(".f.pem.tmp");
        std::fs::write(&stale, "junk").expect("stale");
        std::fs::set_permissions(&stale, Permissions::from_mode(0o666)).expect("chmod");

        write_atomic(&path, b"new", 0o600).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!stale.exists(), "temp file left behind");
    }

    #[test]
    fn atomic_write_into_missing_dir_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing/f.pem");
        let err = format!(
            "{:#}",
            write_atomic(&path, b"x", 0o600).expect_err("no dir")
        );
        assert!(err.contains("missing/.f.pem.tmp"), "{err}");
    }
}
