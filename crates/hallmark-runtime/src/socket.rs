//! Unix socket checks that say what a person should fix: missing, not a
//! socket, or not accessible, named after the daemon that should be there.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Which daemon a socket belongs to, for reasons a person can act on.
#[derive(Debug)]
pub(crate) struct Daemon {
    name: &'static str,
    access: &'static str,
}

pub(crate) const DOCKERD: Daemon = Daemon {
    name: "dockerd",
    access: "root or the docker group",
};

pub(crate) const CRI_DAEMON: Daemon = Daemon {
    name: "the CRI runtime (containerd, CRI-O)",
    access: "root",
};

/// Why a socket path cannot be used before anything is sent to it: missing,
/// unreadable, or not a socket at all.
pub(crate) fn check_socket(path: &Path, daemon: &Daemon) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(()),
        Ok(meta) => {
            let what = if meta.is_dir() {
                "a directory"
            } else if meta.is_file() {
                "a regular file"
            } else {
                "a device or pipe"
            };
            Err(format!(
                "not a socket but {what}: point the agent at {}'s API socket",
                daemon.name
            ))
        }
        Err(e) => Err(socket_reason(e.kind(), daemon)),
    }
}

/// What a person should check when a socket cannot be used.
pub(crate) fn socket_reason(kind: ErrorKind, daemon: &Daemon) -> String {
    match kind {
        ErrorKind::NotFound => format!("no such file: is {} running?", daemon.name),
        ErrorKind::PermissionDenied => format!(
            "permission denied: the agent needs read/write access to the socket ({})",
            daemon.access
        ),
        ErrorKind::ConnectionRefused => format!(
            "connection refused: nothing listens on the socket (stale file left by a \
             stopped {}?)",
            daemon.name
        ),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => format!(
            "connection reset: {} closed the connection (restarting or stopped?)",
            daemon.name
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_checks() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(check_socket(&sock, &DOCKERD), Ok(()));

        let missing = check_socket(&dir.path().join("nope.sock"), &DOCKERD).unwrap_err();
        assert_eq!(missing, "no such file: is dockerd running?");

        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let e = check_socket(&file, &DOCKERD).unwrap_err();
        assert!(e.starts_with("not a socket but a regular file"), "{e}");
        let e = check_socket(dir.path(), &CRI_DAEMON).unwrap_err();
        assert!(
            e.starts_with("not a socket but a directory") && e.contains("CRI"),
            "{e}"
        );

        let denied = socket_reason(ErrorKind::PermissionDenied, &DOCKERD);
        assert!(denied.contains("root or the docker group"), "{denied}");
    }
}
