//! Host facts capture depends on: the cgroup2 mount, the monotonic clock
//! BPF timestamps use, and a cheap check that capture can work at all.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData};
use nix::time::{clock_gettime, ClockId};

use crate::error::{permission_denied, CaptureError};

/// Where the kernel exposes its BTF.
pub(crate) const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Nanoseconds on CLOCK_MONOTONIC: the clock of `bpf_ktime_get_ns`, so
/// it compares directly with the timestamps in [`crate::TcpEvent`] and
/// [`crate::UdpFlow`].
pub fn monotonic_now_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 keeps the signature total.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|ts| (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The mount point of the cgroup2 hierarchy, from `/proc/self/mountinfo`
/// (it is `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_mount_in(&text)
}

/// Finds the first cgroup2 mount in mountinfo text.
pub(crate) fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mount-point options [optional...] - fstype source super
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = pre.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks without loading programs whether capture can work here: kernel
/// BTF present, BPF maps may be created (the permission check), and a
/// cgroup2 hierarchy exists. `Err` says which is missing.
pub fn probe() -> Result<(), CaptureError> {
    check_btf()?;
    check_permission()?;
    cgroup2_mount()
        .map(|_| ())
        .ok_or_else(|| CaptureError::NoCgroup2("no cgroup2 entry in /proc/self/mountinfo".into()))
}

pub(crate) fn check_btf() -> Result<(), CaptureError> {
    File::open(BTF_PATH)
        .map(|_| ())
        .map_err(|e| CaptureError::NoBtf(e.to_string()))
}

/// Capability bits (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether the effective capabilities in `/proc/self/status` text allow
/// loading tracing programs: CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN.
/// `Err` names what is missing.
pub(crate) fn bpf_caps_in(status: &str) -> Result<(), String> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or("no CapEff line in /proc/self/status")?
        .trim();
    let eff =
        u64::from_str_radix(hex, 16).map_err(|e| format!("CapEff `{hex}` is not hex: {e}"))?;
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    Err(format!(
        "effective capabilities {hex} lack {} (and CAP_SYS_ADMIN)",
        missing.join(" and ")
    ))
}

pub(crate) fn check_permission() -> Result<(), CaptureError> {
    // Capabilities first: with unprivileged BPF enabled a map could be
    // created without them, yet no tracing program would load.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        bpf_caps_in(&status).map_err(CaptureError::NoPermission)?;
    }
    // Then the kernel's word (LSMs and seccomp can refuse despite caps).
    match Array::<MapData, u32>::create(1, 0) {
        Ok(_) => Ok(()),
        Err(e) => Err(match permission_denied(&e) {
            Some(msg) => CaptureError::NoPermission(format!("creating a test map: {msg}")),
            None => CaptureError::load("object", e),
        }),
    }
}

/// Opens a cgroup directory to attach to.
pub(crate) fn open_cgroup(path: &Path) -> Result<File, CaptureError> {
    File::open(path)
        .map_err(|e| CaptureError::NoCgroup2(format!("opening {}: {e}", path.display())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_on_hybrid_and_unified_hosts() {
        let hybrid = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd
";
        assert_eq!(
            cgroup2_mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_in(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_in("1 0 0:1 / / rw - ext4 /dev/sda rw\n"),
            None
        );
        assert_eq!(cgroup2_mount_in(""), None);
        let spaced = "35 24 0:30 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount_in(spaced), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn capabilities_decide_permission() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(bpf_caps_in(root), Ok(()));
        // CAP_BPF (39) + CAP_PERFMON (38) without CAP_SYS_ADMIN.
        assert_eq!(bpf_caps_in("CapEff:\t000000c000000000\n"), Ok(()));
        // CAP_SYS_ADMIN alone.
        assert_eq!(bpf_caps_in("CapEff:\t0000000000200000\n"), Ok(()));
        let none = bpf_caps_in("CapEff:\t0000000000000000\n").unwrap_err();
        assert!(none.contains("lack CAP_BPF and CAP_PERFMON"), "{none}");
        let half = bpf_caps_in("CapEff:\t0000008000000000\n").unwrap_err();
        assert!(
            half.contains("lack CAP_PERFMON") && !half.contains("CAP_BPF and"),
            "{half}"
        );
        assert!(bpf_caps_in("Name:\tx\n").unwrap_err().contains("no CapEff"));
        assert!(bpf_caps_in("CapEff:\tzz\n")
            .unwrap_err()
            .contains("not hex"));
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_now_ns();
        let b = monotonic_now_ns();
        assert!(a > 0 && b >= a);
    }
}
