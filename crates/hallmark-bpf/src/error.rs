//! Why capture or enforcement could not start or run, in words an operator
//! can act on.

use std::error::Error as StdError;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::enforce_records::{PairKey, MAX_SEGS};

/// A boxed cause from the BPF loader.
pub type Source = Box<dyn StdError + Send + Sync + 'static>;

/// Why flow capture is unavailable or failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The process may not load BPF programs or create maps.
    #[error("BPF not permitted (needs CAP_BPF+CAP_PERFMON or root): {0}")]
    NoPermission(String),
    /// The kernel exposes no BTF, which CO-RE programs need.
    #[error("kernel BTF missing at /sys/kernel/btf/vmlinux: {0}")]
    NoBtf(String),
    /// UDP capture needs a cgroup2 hierarchy to attach to.
    #[error("no cgroup2 hierarchy to attach UDP capture to: {0}")]
    NoCgroup2(String),
    /// The kernel refused to load a program (or the object's maps).
    #[error("loading BPF program {program} failed: {source}")]
    Load {
        /// Program (or `object` for the maps of the whole object).
        program: &'static str,
        /// The loader's error.
        #[source]
        source: Source,
    },
    /// The kernel refused to attach a loaded program.
    #[error("attaching BPF program {program} failed: {source}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// The loader's error.
        #[source]
        source: Source,
    },
    /// Reading the TCP snapshot iterator failed.
    #[error("reading the TCP socket snapshot failed: {0}")]
    Snapshot(String),
}

impl CaptureError {
    /// A short stable label for status pages and metrics: `no-permission`,
    /// `no-btf`, `no-cgroup2`, `load-failed`, `attach-failed`,
    /// `snapshot-failed`.
    pub fn reason(&self) -> &'static str {
        match self {
            CaptureError::NoPermission(_) => "no-permission",
            CaptureError::NoBtf(_) => "no-btf",
            CaptureError::NoCgroup2(_) => "no-cgroup2",
            CaptureError::Load { .. } => "load-failed",
            CaptureError::Attach { .. } => "attach-failed",
            CaptureError::Snapshot(_) => "snapshot-failed",
        }
    }

    /// A load error, reported as [`CaptureError::NoPermission`] when its
    /// cause is EPERM/EACCES (a kernel or capability refusal is the likely
    /// story then, not a broken program).
    pub(crate) fn load(program: &'static str, source: impl Into<Source>) -> CaptureError {
        let source = source.into();
        match permission_denied(source.as_ref()) {
            Some(msg) => CaptureError::NoPermission(format!("loading {program}: {msg}")),
            None => CaptureError::Load { program, source },
        }
    }

    /// As [`CaptureError::load`], for attaching.
    pub(crate) fn attach(program: &'static str, source: impl Into<Source>) -> CaptureError {
        let source = source.into();
        match permission_denied(source.as_ref()) {
            Some(msg) => CaptureError::NoPermission(format!("attaching {program}: {msg}")),
            None => CaptureError::Attach { program, source },
        }
    }
}

/// Why enforcement could not start, or why a policy image was refused. A
/// refused image changes nothing: the one in force stays.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// Loading or attaching failed (permission, BTF, cgroup, verifier).
    #[error(transparent)]
    Setup(#[from] CaptureError),
    /// Pinning to, or taking over from, a bpffs directory failed.
    #[error("pinned enforcement at {path}: {message}")]
    Pin {
        /// The pin directory or file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A pair has more port segments than the kernel table holds.
    #[error("pair {pair:?} has {segments} port segments, at most {max} fit", max = MAX_SEGS)]
    TooManySegments {
        /// The pair.
        pair: PairKey,
        /// How many it has.
        segments: usize,
    },
    /// A pair's segments are empty or their starts do not strictly increase.
    #[error("pair {pair:?}: {reason}")]
    BadSegments {
        /// The pair.
        pair: PairKey,
        /// What is wrong.
        reason: &'static str,
    },
    /// The image needs more entries than a map may hold for one generation.
    #[error("map {map} would need {needed} entries, capacity {capacity}")]
    Capacity {
        /// The map.
        map: &'static str,
        /// Entries the image needs.
        needed: usize,
        /// Entries one image may use.
        capacity: usize,
    },
    /// A peer prefix is longer than its address family allows.
    #[error("peer prefix {addr}/{prefix_len} is invalid")]
    BadPrefix {
        /// The address.
        addr: IpAddr,
        /// The prefix length.
        prefix_len: u8,
    },
    /// A map operation failed; an install in progress was rolled back.
    #[error("{op} on map {map} failed: {message}")]
    Map {
        /// The map.
        map: &'static str,
        /// What was being done.
        op: &'static str,
        /// The kernel's error.
        message: String,
    },
}

impl EnforceError {
    /// A short stable label for status pages and metrics: the setup
    /// error's label, or `pin-failed`, `too-many-segments`, `bad-segments`,
    /// `capacity`, `bad-prefix`, `map-failed`.
    pub fn reason(&self) -> &'static str {
        match self {
            EnforceError::Setup(e) => e.reason(),
            EnforceError::Pin { .. } => "pin-failed",
            EnforceError::TooManySegments { .. } => "too-many-segments",
            EnforceError::BadSegments { .. } => "bad-segments",
            EnforceError::Capacity { .. } => "capacity",
            EnforceError::BadPrefix { .. } => "bad-prefix",
            EnforceError::Map { .. } => "map-failed",
        }
    }

    pub(crate) fn map(map: &'static str, op: &'static str, e: impl std::fmt::Display) -> Self {
        EnforceError::Map {
            map,
            op,
            message: e.to_string(),
        }
    }

    pub(crate) fn pin(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        EnforceError::Pin {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// Walks an error's causes for an EPERM/EACCES io error; returns the full
/// chain as text when one is found.
pub(crate) fn permission_denied(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    let mut found = false;
    let mut text = Vec::new();
    while let Some(e) = cur {
        text.push(e.to_string());
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(
                io.raw_os_error(),
                Some(libc_eperm::EPERM | libc_eperm::EACCES)
            ) {
                found = true;
            }
        }
        cur = e.source();
    }
    found.then(|| text.join(": "))
}

/// The two errno values, without a libc dependency for two numbers.
mod libc_eperm {
    pub const EPERM: i32 = 1;
    pub const EACCES: i32 = 13;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("bpf_prog_load failed")]
    struct Wrapped(#[source] io::Error);

    #[test]
    fn eperm_anywhere_in_the_chain_means_no_permission() {
        let err = CaptureError::load("hm_tcp_btf", Wrapped(io::Error::from_raw_os_error(1)));
        assert_eq!(err.reason(), "no-permission");
        let text = err.to_string();
        assert!(
            text.starts_with("BPF not permitted (needs CAP_BPF+CAP_PERFMON or root)"),
            "{text}"
        );
        assert!(text.contains("hm_tcp_btf"), "{text}");
    }

    #[test]
    fn other_errors_keep_their_kind() {
        let err = CaptureError::attach("hm_udp_egress", Wrapped(io::Error::from_raw_os_error(22)));
        assert_eq!(err.reason(), "attach-failed");
        assert!(err
            .to_string()
            .contains("attaching BPF program hm_udp_egress failed"));
        let err = CaptureError::load("object", "bad ELF");
        assert_eq!(err.reason(), "load-failed");
        assert_eq!(CaptureError::NoBtf("x".into()).reason(), "no-btf");
        assert_eq!(CaptureError::NoCgroup2("x".into()).reason(), "no-cgroup2");
        assert_eq!(
            CaptureError::Snapshot("x".into()).reason(),
            "snapshot-failed"
        );
    }
}
