//! SHA-256 of executables, remembered per file version.
//!
//! Every Workload API call is attested, and attesting hashes the caller's
//! executable; hashing a 100 MB binary per request would let one busy
//! workload exhaust the agent. The digest is therefore kept per file version,
//! keyed by what the kernel changes whenever the content can have changed.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};

/// Enough for every distinct binary of a busy node; beyond it the cache is
/// cleared, which costs one re-hash per binary and bounds memory.
const CAPACITY: usize = 1024;

/// The agent's one cache of executable digests.
pub(super) static EXECUTABLES: LazyLock<DigestCache> = LazyLock::new(|| DigestCache::new(CAPACITY));

/// A bounded map from file version to SHA-256.
pub(super) struct DigestCache {
    entries: Mutex<HashMap<FileVersion, [u8; 32]>>,
    capacity: usize,
}

/// Identifies one content of one file.
///
/// `ctime` is part of the key although `mtime` alone looks enough: the owner
/// of a file can rewrite it and then set `mtime` back (utimensat), but every
/// write or time change sets `ctime` to now, and only the clock's owner can
/// move that. Without it, a rewritten binary would keep the old digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileVersion {
    fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl DigestCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// SHA-256 of the open file's content, from the cache when this version
    /// of the file was hashed before.
    pub(super) fn sha256(&self, file: &File) -> io::Result<[u8; 32]> {
        self.get_or_hash(file, sha256_of)
    }

    /// The digest when this version of the file was hashed before; no I/O
    /// beyond an fstat.
    pub(super) fn cached(&self, file: &File) -> io::Result<Option<[u8; 32]>> {
        let version = FileVersion::of(&file.metadata()?);
        Ok(self.lock().get(&version).copied())
    }

    fn get_or_hash(
        &self,
        file: &File,
        hash: impl FnOnce(&File) -> io::Result<[u8; 32]>,
    ) -> io::Result<[u8; 32]> {
        let before = FileVersion::of(&file.metadata()?);
        if let Some(digest) = self.lock().get(&before) {
            return Ok(*digest);
        }
        // Hashed without the lock held: a large binary must not stall every
        // other attestation. Two callers may hash the same file at once;
        // both get the same answer.
        let digest = hash(file)?;
        // A file written while it was read yields a digest of neither
        // version; refuse it rather than attest or remember it.
        if FileVersion::of(&file.metadata()?) != before {
            return Err(io::Error::other(
                "the executable changed while it was being hashed",
            ));
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(before, digest);
        Ok(digest)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<FileVersion, [u8; 32]>> {
        // Nothing panics while the map is held half-updated (get, clear and
        // insert are each complete), so a poisoned map is still a sound cache.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Reads at explicit offsets so the digest does not depend on where the
/// file's cursor happens to be.
fn sha256_of(file: &File) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(&mut buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::fs::{FileTimes, OpenOptions};
    use std::io::{Seek, SeekFrom, Write};

    fn counting<'a>(calls: &'a Cell<u32>) -> impl Fn(&File) -> io::Result<[u8; 32]> + 'a {
        move |f| {
            calls.set(calls.get() + 1);
            sha256_of(f)
        }
    }

    fn hex_of(d: [u8; 32]) -> String {
        hex::encode(d)
    }

    #[test]
    fn digest_is_sha256_of_whole_content_regardless_of_cursor() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(b"abc").unwrap();
        tmp.as_file_mut().seek(SeekFrom::Start(2)).unwrap();
        assert_eq!(
            hex_of(sha256_of(tmp.as_file()).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Larger than one read buffer.
        let big = vec![7u8; 256 * 1024 * 2 + 5];
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&big).unwrap();
        let want: [u8; 32] = Sha256::digest(&big).into();
        assert_eq!(sha256_of(tmp.as_file()).unwrap(), want);
    }

    #[test]
    fn same_version_is_hashed_once() {
        let cache = DigestCache::new(8);
        let calls = Cell::new(0);
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(b"binary").unwrap();
        let first = cache.get_or_hash(tmp.as_file(), counting(&calls)).unwrap();
        // A second descriptor on the same file hits the same entry.
        let again = File::open(tmp.path()).unwrap();
        let second = cache.get_or_hash(&again, counting(&calls)).unwrap();
        assert_eq!(first, second);
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn rewrite_with_restored_mtime_is_hashed_again() {
        let cache = DigestCache::new(8);
        let calls = Cell::new(0);
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), b"good").unwrap();
        let f = File::open(tmp.path()).unwrap();
        let mtime = f.metadata().unwrap().modified().unwrap();
        let good = cache.get_or_hash(&f, counting(&calls)).unwrap();

        // Same size, same inode, mtime put back: only ctime tells.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut w = OpenOptions::new().write(true).open(tmp.path()).unwrap();
        w.write_all(b"evil").unwrap();
        w.set_times(FileTimes::new().set_modified(mtime)).unwrap();
        drop(w);
        assert_eq!(f.metadata().unwrap().modified().unwrap(), mtime);

        let evil = cache.get_or_hash(&f, counting(&calls)).unwrap();
        assert_eq!(calls.get(), 2);
        assert_ne!(good, evil);
        assert_eq!(evil, <[u8; 32]>::from(Sha256::digest(b"evil")));
    }

    #[test]
    fn change_during_hashing_is_refused_and_not_cached() {
        let cache = DigestCache::new(8);
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), b"v1").unwrap();
        let f = File::open(tmp.path()).unwrap();
        let path = tmp.path().to_path_buf();
        let err = cache
            .get_or_hash(&f, |f| {
                let d = sha256_of(f);
                std::fs::write(&path, b"v2 longer").unwrap();
                d
            })
            .unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn full_cache_is_cleared_not_grown() {
        let cache = DigestCache::new(3);
        let calls = Cell::new(0);
        let files: Vec<_> = (0..4)
            .map(|i| {
                let mut t = tempfile::NamedTempFile::new().unwrap();
                write!(t, "file {i}").unwrap();
                t
            })
            .collect();
        for t in &files[..3] {
            cache.get_or_hash(t.as_file(), counting(&calls)).unwrap();
        }
        assert_eq!(cache.len(), 3);
        cache
            .get_or_hash(files[3].as_file(), counting(&calls))
            .unwrap();
        assert_eq!(cache.len(), 1);
        // The first file was dropped with the rest and is hashed again.
        cache
            .get_or_hash(files[0].as_file(), counting(&calls))
            .unwrap();
        assert_eq!(calls.get(), 5);
        assert_eq!(cache.len(), 2);
    }
}
