//! The agent's on-disk state: its own key and SVID and the last bundle, so a
//! restarted agent reconnects without a new join token. Files are written
//! atomically (temp file, fsync, rename) with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hallmark_ca::Bundle;
use hallmark_core::TrustDomain;

const KEY_FILE: &str = "agent-svid.key";
const CERT_FILE: &str = "agent-svid.pem";
const BUNDLE_FILE: &str = "bundle.jwks";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// The agent's own credentials.
pub struct AgentCredentials {
    pub key_pkcs8: Vec<u8>,
    pub chain: Vec<Vec<u8>>,
}

/// Writes `data` to `path` so that readers see either the old or the new
/// content, never a part; the file is 0600 from its first byte.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), PersistError> {
    let err = |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

pub fn create_dir(dir: &Path) -> Result<(), PersistError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PersistError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

pub fn save_credentials(dir: &Path, creds: &AgentCredentials) -> Result<(), PersistError> {
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", creds.key_pkcs8.clone()));
    let certs: String = creds
        .chain
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.clone())))
        .collect();
    write_atomic(&dir.join(KEY_FILE), key.as_bytes())?;
    write_atomic(&dir.join(CERT_FILE), certs.as_bytes())
}

pub fn load_credentials(dir: &Path) -> Result<Option<AgentCredentials>, PersistError> {
    let key_path = dir.join(KEY_FILE);
    let cert_path = dir.join(CERT_FILE);
    if !key_path.exists() || !cert_path.exists() {
        return Ok(None);
    }
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| PersistError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let corrupt = |p: &Path, reason: String| PersistError::Corrupt {
        path: p.to_path_buf(),
        reason,
    };
    let key = pem::parse(read(&key_path)?).map_err(|e| corrupt(&key_path, e.to_string()))?;
    let chain: Vec<Vec<u8>> = pem::parse_many(read(&cert_path)?)
        .map_err(|e| corrupt(&cert_path, e.to_string()))?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    if chain.is_empty() {
        return Err(corrupt(&cert_path, "no certificate".into()));
    }
    Ok(Some(AgentCredentials {
        key_pkcs8: key.into_contents(),
        chain,
    }))
}

pub fn save_bundle(dir: &Path, bundle: &Bundle) -> Result<(), PersistError> {
    write_atomic(&dir.join(BUNDLE_FILE), &bundle.to_jwks_json())
}

pub fn load_bundle(dir: &Path, td: &TrustDomain) -> Result<Option<Bundle>, PersistError> {
    let path = dir.join(BUNDLE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let data = std::fs::read(&path).map_err(|source| PersistError::Io {
        path: path.clone(),
        source,
    })?;
    Bundle::from_jwks_json(td, &data)
        .map(Some)
        .map_err(|e| PersistError::Corrupt {
            path,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!p.with_extension("tmp").exists());
    }

    #[test]
    fn credentials_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_credentials(dir.path()).unwrap().is_none());
        let creds = AgentCredentials {
            key_pkcs8: vec![1, 2, 3],
            chain: vec![vec![4, 5], vec![6]],
        };
        save_credentials(dir.path(), &creds).unwrap();
        let back = load_credentials(dir.path()).unwrap().unwrap();
        assert_eq!(back.key_pkcs8, creds.key_pkcs8);
        assert_eq!(back.chain, creds.chain);
    }
}
