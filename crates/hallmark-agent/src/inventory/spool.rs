//! The inventory spool file: the latest snapshot on disk, so an operator
//! (or a restarted agent's tools) can see what ran here even while the
//! server is unreachable. Rewritten after changes, at most every
//! [`DEBOUNCE`], atomically and readable by root only (it names images,
//! labels and PIDs of every container on the node).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hallmark_core::Workload;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Inner, RuntimeStatus};
use crate::persist;

/// The shortest time between two writes of the spool file.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The spool file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolDocument {
    pub context_name: String,
    /// Unix milliseconds.
    pub written_at_ms: i64,
    pub runtime: RuntimeStatus,
    /// Every container in the inventory, by container ID.
    pub workloads: Vec<Workload>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The document could not be turned into JSON.
    #[error("inventory spool {path}: encoding: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Writing, syncing or renaming the file failed.
    #[error("inventory spool: {0}")]
    Write(#[from] persist::PersistError),
    /// The blocking write task did not complete.
    #[error("inventory spool {path}: write task failed: {reason}")]
    Task { path: PathBuf, reason: String },
}

/// Writes `doc` to `path` atomically with mode 0600.
pub fn write(path: &Path, doc: &SpoolDocument) -> Result<(), SpoolError> {
    let json = serde_json::to_vec_pretty(doc).map_err(|source| SpoolError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            persist::create_dir(dir)?;
        }
    }
    persist::write_atomic(path, &json)?;
    Ok(())
}

/// The spool task: waits for a change, writes, then lets changes pile up
/// for [`DEBOUNCE`] before the next write. Writes once more on shutdown
/// if something changed since the last write.
pub async fn run(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        let stop = tokio::select! {
            _ = inner.spool_work.notified() => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if inner.take_spool_dirty() {
            write_now(&inner, &mut failing).await;
        }
        if stop {
            return;
        }
        let stop = tokio::select! {
            _ = tokio::time::sleep(DEBOUNCE) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if stop {
            if inner.take_spool_dirty() {
                write_now(&inner, &mut failing).await;
            }
            return;
        }
    }
}

async fn write_now(inner: &Inner, failing: &mut bool) {
    let doc = inner.spool_document();
    let path = inner.spool_path.clone();
    let result = tokio::task::spawn_blocking(move || write(&path, &doc))
        .await
        .unwrap_or_else(|e| {
            Err(SpoolError::Task {
                path: inner.spool_path.clone(),
                reason: e.to_string(),
            })
        });
    match result {
        Ok(()) => {
            if *failing {
                tracing::info!(path = %inner.spool_path.display(), "inventory spool written again");
            }
            *failing = false;
        }
        Err(e) => {
            // Once per failure streak: a full disk fails every write.
            if !*failing {
                tracing::warn!(error = %e, "writing the inventory spool failed");
            }
            *failing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hallmark_core::RuntimeSource;
    use std::os::unix::fs::PermissionsExt;

    fn doc(n: usize) -> SpoolDocument {
        SpoolDocument {
            context_name: "lab".into(),
            written_at_ms: 42,
            runtime: RuntimeStatus {
                runtime: "docker".into(),
                endpoint: "/var/run/docker.sock".into(),
                version: "docker 20.10.24".into(),
                degraded: false,
                reason: String::new(),
            },
            workloads: (0..n)
                .map(|i| Workload::partial(&format!("c{i}"), RuntimeSource::Docker, "x"))
                .collect(),
        }
    }

    #[test]
    fn written_private_atomic_and_readable_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("inventory.json");
        write(&path, &doc(3)).unwrap();
        write(&path, &doc(2)).unwrap();
        let back: SpoolDocument =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, doc(2));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("inventory.json")]);
    }

    #[test]
    fn unwritable_path_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: rename cannot replace it.
        let path = dir.path().join("inventory.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), b"x").unwrap();
        let e = write(&path, &doc(0)).unwrap_err().to_string();
        assert!(e.contains("inventory"), "{e}");
    }
}
