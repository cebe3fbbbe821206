//! The peer of a Unix socket connection, as the kernel recorded it at connect.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

/// A Unix stream plus the kernel's word on who is at the other end, captured at accept.
///
/// Serve it with `Server::builder().serve_with_incoming(..)`; each request
/// then carries a [`PeerInfo`] in its extensions.
#[derive(Debug)]
pub struct PeerStream {
    inner: UnixStream,
    peer: PeerInfo,
}

/// Who connected: credentials from `SO_PEERCRED` and a handle that can prove,
/// later, that the process that connected is still the one holding `pid`.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// PID of the process that called `connect`, as seen from this PID
    /// namespace; 0 when that process is not visible here.
    pub pid: i32,
    /// Effective UID of that process at `connect`.
    pub uid: u32,
    /// Effective GID of that process at `connect`.
    pub gid: u32,
    proof: Proof,
}

/// What ties `PeerInfo::pid` to the process that connected.
#[derive(Clone, Debug)]
pub(super) enum Proof {
    /// A pidfd the kernel took from the socket itself (`SO_PEERPIDFD`): it
    /// names exactly the process that connected, whatever happened to its PID.
    PeerPidfd(Arc<OwnedFd>),
    /// Kernels before 6.5 have no `SO_PEERPIDFD`: a pidfd opened by PID at
    /// accept, with the accept time in clock ticks since boot. The process it
    /// names must have started no later than the accept (see `attest_unix`).
    OpenedAtAccept {
        pidfd: Arc<OwnedFd>,
        accepted_at_ticks: u64,
    },
    /// Nothing to prove with: the connecting process was already reaped at
    /// accept, or the kernel reported no PID.
    Gone,
}

impl PeerStream {
    /// Reads the peer's credentials and pidfd from an accepted stream.
    ///
    /// An error means the kernel would not describe the peer; drop the
    /// connection rather than serve it unattributed.
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        let peer = PeerInfo::from_socket(&stream)?;
        Ok(Self {
            inner: stream,
            peer,
        })
    }

    /// The peer captured at accept.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The underlying stream, e.g. to peek at the first bytes.
    pub fn get_ref(&self) -> &UnixStream {
        &self.inner
    }

    /// The underlying stream.
    pub fn into_inner(self) -> UnixStream {
        self.inner
    }
}

impl PeerInfo {
    /// Captures the peer of a connected Unix socket (any stream: tokio, std,
    /// or one accepted by an HTTP server).
    ///
    /// Falls back to opening a pidfd by PID when the kernel lacks
    /// `SO_PEERPIDFD` (`ENOPROTOOPT`, Linux before 6.5).
    pub fn from_socket(sock: &impl AsFd) -> io::Result<Self> {
        // Taken before anything else: the earlier the accept time, the fewer
        // processes the fallback's start-time rule lets through.
        let accepted_at_ticks = boot_ticks()?;
        let sock = sock.as_fd();
        let cred = getsockopt(&sock, sockopt::PeerCredentials).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("reading SO_PEERCRED of a workload connection: {e}"),
            )
        })?;
        let (pid, uid, gid) = (cred.pid(), cred.uid(), cred.gid());
        if pid <= 0 {
            return Ok(Self::with_proof(pid, uid, gid, Proof::Gone));
        }
        match peer_pidfd(sock) {
            Ok(fd) => Ok(Self::with_proof(
                pid,
                uid,
                gid,
                Proof::PeerPidfd(Arc::new(fd)),
            )),
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                Self::opened_at_accept(pid, uid, gid, accepted_at_ticks)
            }
            // The peer was reaped before accept: kernels up to 6.15 refuse a
            // pidfd for it (EINVAL), later ones may answer ESRCH.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ESRCH)) => {
                Ok(Self::with_proof(pid, uid, gid, Proof::Gone))
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("reading SO_PEERPIDFD of a workload connection from pid {pid}: {e}"),
            )),
        }
    }

    /// The fallback for kernels without `SO_PEERPIDFD`: a pidfd opened by
    /// PID, to be checked against `accepted_at_ticks` at attestation.
    pub(super) fn opened_at_accept(
        pid: i32,
        uid: u32,
        gid: u32,
        accepted_at_ticks: u64,
    ) -> io::Result<Self> {
        let proof = match pidfd_open(pid) {
            Ok(pidfd) => Proof::OpenedAtAccept {
                pidfd: Arc::new(pidfd),
                accepted_at_ticks,
            },
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Proof::Gone,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("pidfd_open of workload pid {pid}: {e}"),
                ))
            }
        };
        Ok(Self::with_proof(pid, uid, gid, proof))
    }

    pub(super) fn with_proof(pid: i32, uid: u32, gid: u32, proof: Proof) -> Self {
        Self {
            pid,
            uid,
            gid,
            proof,
        }
    }

    pub(super) fn proof(&self) -> &Proof {
        &self.proof
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether the process a pidfd names still exists, i.e. has not been reaped.
/// Until it is reaped its PID cannot be given to another process.
pub(super) fn pidfd_is_alive(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: signal 0 with a null siginfo and no flags sends nothing; the
    // kernel only looks the process up. The descriptor is borrowed, so open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0 as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(false),
        // The process exists; only signalling it is not allowed (an agent
        // without CAP_KILL looking at another user's process).
        Some(libc::EPERM) => Ok(true),
        _ => Err(err),
    }
}

/// Clock ticks since boot, the unit of `/proc/<pid>/stat` field 22, counted
/// the way the kernel counts it (boot-time clock, truncated to whole ticks).
pub(super) fn boot_ticks() -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let hz = clock_ticks_per_second()?;
    let nanos = u128::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
        + u128::try_from(ts.tv_nsec).unwrap_or(0);
    let ticks = nanos / (1_000_000_000 / u128::from(hz));
    u64::try_from(ticks).map_err(|_| io::Error::other("boot time in clock ticks overflows u64"))
}

fn clock_ticks_per_second() -> io::Result<u64> {
    // SAFETY: sysconf takes an integer name and has no other effect.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    match u64::try_from(hz) {
        Ok(hz) if (1..=1_000_000_000).contains(&hz) => Ok(hz),
        _ => Err(io::Error::other(format!(
            "sysconf(_SC_CLK_TCK) returned {hz}, not a tick rate"
        ))),
    }
}

fn peer_pidfd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: both pointers reference live locals, and `len` holds the size
    // of the buffer `fd` provides.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if fd < 0 {
        return Err(io::Error::other(format!(
            "SO_PEERPIDFD succeeded but returned descriptor {fd}"
        )));
    }
    // SAFETY: on success the kernel installed a new descriptor in our table
    // that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(rc)
        .map_err(|_| io::Error::other(format!("pidfd_open returned {rc}, not a descriptor")))?;
    // SAFETY: the kernel installed this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream as StdUnixStream;
    use std::process::Command;

    #[test]
    fn socketpair_peer_is_this_process() {
        let (a, _b) = StdUnixStream::pair().unwrap();
        let peer = PeerInfo::from_socket(&a).unwrap();
        assert_eq!(peer.pid, std::process::id() as i32);
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.gid, nix::unistd::getegid().as_raw());
        match peer.proof() {
            Proof::PeerPidfd(fd) => assert!(pidfd_is_alive(fd.as_fd()).unwrap()),
            other => panic!("this kernel has SO_PEERPIDFD, got proof {other:?}"),
        }
    }

    #[test]
    fn pidfd_tells_reaped_from_alive_and_zombie() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pidfd = pidfd_open(child.id() as i32).unwrap();
        assert!(pidfd_is_alive(pidfd.as_fd()).unwrap());
        child.kill().unwrap();
        // Killed but not yet reaped: a zombie still holds its PID, so it
        // still counts as alive. Give the kernel a moment to finish the exit.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(pidfd_is_alive(pidfd.as_fd()).unwrap());
        child.wait().unwrap();
        assert!(!pidfd_is_alive(pidfd.as_fd()).unwrap());
    }

    #[test]
    fn fallback_of_a_reaped_pid_is_gone() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        // The PID is free now (unless something grabbed it in between, in
        // which case the fallback rightly opens that process instead).
        let peer = PeerInfo::opened_at_accept(pid, 0, 0, boot_ticks().unwrap()).unwrap();
        if let Proof::OpenedAtAccept { pidfd, .. } = peer.proof() {
            let fdinfo =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
                    .unwrap();
            assert!(fdinfo.contains(&format!("Pid:\t{pid}\n")), "{fdinfo}");
        } else {
            assert!(matches!(peer.proof(), Proof::Gone));
        }
    }

    #[test]
    fn boot_ticks_match_proc_stat_units() {
        // This process started before now, and within the last hour.
        let now = boot_ticks().unwrap();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after_comm = stat.rsplit_once(')').unwrap().1;
        let start: u64 = after_comm
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        let hz = clock_ticks_per_second().unwrap();
        assert!(start <= now, "start {start} > now {now}");
        assert!(now - start < 3600 * hz, "start {start}, now {now}");
    }

    #[tokio::test]
    async fn peer_stream_delegates_io_and_reports_peer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut stream = PeerStream::new(a).unwrap();
        assert_eq!(stream.connect_info().pid, std::process::id() as i32);
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        b.write_all(b"pong").await.unwrap();
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
