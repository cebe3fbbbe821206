//! Workload attestors: who is calling, in selectors, from the kernel's word.
//!
//! A Workload API call arrives on a Unix socket. [`PeerStream`] wraps each
//! accepted connection and captures, at accept, the peer credentials
//! (`SO_PEERCRED`) and a pidfd naming the process that connected
//! (`SO_PEERPIDFD`). tonic hands that [`PeerInfo`] to every request on the
//! connection, and [`attest_unix`] turns it into `unix:*` selectors.
//!
//! The PID alone is not an identity: a process can connect, hand the socket
//! to a child and exit, and another program can then be given the same PID.
//! Everything the attestor reads from `/proc/<pid>` is therefore used only
//! once the pidfd has shown, after the read, that the connecting process
//! still exists: a PID is not handed out again while its process exists
//! (even as a zombie), so what was read belonged to the caller.

mod digest;
mod peer;
mod unix;

pub use peer::{PeerInfo, PeerStream};
pub use unix::{
    attest_pid, attest_process, attest_process_cached, attest_unix, AttestError, Attested,
};

/// Clock ticks since boot, the unit of a process's start time: a moment
/// to pass to [`attest_pid`].
pub fn boot_ticks() -> std::io::Result<u64> {
    peer::boot_ticks()
}
