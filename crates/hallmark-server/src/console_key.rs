//! The key console tokens are minted and checked with: 32 random bytes in
//! `<data-dir>/console.key` (0600), created on first start. A token is
//! `hmc1.<expiry unix secs>.<nonce hex>.<HMAC-SHA256 hex>` over the first
//! three parts, so a server checks it with no datastore read; it is good on
//! the server whose key signed it, until it expires.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use aws_lc_rs::hmac;
use rand::RngCore;

const PREFIX: &str = "hmc1";
/// The file in the data directory.
pub const CONSOLE_KEY_FILE: &str = "console.key";
/// The longest a minted token lives.
pub const MAX_CONSOLE_TOKEN_TTL: Duration = Duration::from_secs(30 * 86400);

/// Why a console token is refused. The text never repeats the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleTokenError {
    #[error("is not a console token (expected hmc1.<expiry>.<nonce>.<mac> from `hallmark console token`)")]
    Malformed,
    #[error("was not minted by this server (or its console key changed)")]
    BadSignature,
    #[error("expired at unix time {0}; mint another with `hallmark console token`")]
    Expired(i64),
}

/// The console key of one server.
pub struct ConsoleKey {
    key: hmac::Key,
}

impl std::fmt::Debug for ConsoleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleKey(..)")
    }
}

impl ConsoleKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        ConsoleKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// Reads `<dir>/console.key`, or creates it (0600) with fresh random
    /// bytes. A file of the wrong length is an error, not replaced.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(CONSOLE_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => return Ok(Self::from_bytes(&bytes)),
            Ok(bytes) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} holds {} bytes, expected 32: delete it to make a new key (tokens minted with the old one stop working)",
                        path.display(),
                        bytes.len()
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A token good until `expires_secs` (unix seconds).
    pub fn mint(&self, expires_secs: i64) -> String {
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let body = format!("{PREFIX}.{expires_secs}.{}", hex::encode(nonce));
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", hex::encode(tag.as_ref()))
    }

    /// Checks a token at `now_secs`; answers its expiry (unix seconds).
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<i64, ConsoleTokenError> {
        let (body, mac) = token.rsplit_once('.').ok_or(ConsoleTokenError::Malformed)?;
        let mut parts = body.split('.');
        let (Some(PREFIX), Some(expiry), Some(nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ConsoleTokenError::Malformed);
        };
        let expiry: i64 = expiry.parse().map_err(|_| ConsoleTokenError::Malformed)?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConsoleTokenError::Malformed);
        }
        let mac = hex::decode(mac).map_err(|_| ConsoleTokenError::Malformed)?;
        hmac::verify(&self.key, body.as_bytes(), &mac)
            .map_err(|_| ConsoleTokenError::BadSignature)?;
        if expiry <= now_secs {
            return Err(ConsoleTokenError::Expired(expiry));
        }
        Ok(expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let k = ConsoleKey::from_bytes(&[7; 32]);
        let t = k.mint(1_000);
        assert_eq!(k.verify(&t, 999), Ok(1_000));
        assert_eq!(k.verify(&t, 1_000), Err(ConsoleTokenError::Expired(1_000)));
    }

    #[test]
    fn another_key_or_an_edited_token_is_refused() {
        let k = ConsoleKey::from_bytes(&[7; 32]);
        let other = ConsoleKey::from_bytes(&[8; 32]);
        let t = k.mint(1_000);
        assert_eq!(other.verify(&t, 0), Err(ConsoleTokenError::BadSignature));
        let longer = t.replacen(".1000.", ".9000.", 1);
        assert_eq!(k.verify(&longer, 0), Err(ConsoleTokenError::BadSignature));
        for bad in ["", "hmc1", "hmc1.x.y.z", "hmc2.1000.00.00", "a.b.c.d.e"] {
            assert_eq!(k.verify(bad, 0), Err(ConsoleTokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn the_key_file_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = ConsoleKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(CONSOLE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = ConsoleKey::load_or_create(dir.path()).unwrap();
        assert_eq!(b.verify(&a.mint(10), 0), Ok(10));
        std::fs::write(dir.path().join(CONSOLE_KEY_FILE), b"short").unwrap();
        let e = ConsoleKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("expected 32"), "{e}");
    }
}
