//! The Workload API socket: binds it, accepts connections, captures each
//! peer's credentials at accept (before the first byte is looked at), and
//! hands each connection to one of the two APIs served on it by its first
//! bytes: HTTP/2 (gRPC) to the SPIFFE Workload API ([`crate::workload`]),
//! anything else to the HTTP/1.1 token endpoint ([`crate::token_endpoint`]).

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use nix::sys::socket::{recv, MsgFlags};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::attestor::PeerStream;
use crate::h2_authority::AuthorityFix;
use crate::token_endpoint::TokenEndpoint;
use crate::workload::WorkloadService;

/// How long a connection may stay silent before its protocol is known.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Every HTTP/2 connection starts with this preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Enough of the preface to tell it from every HTTP/1.1 request line.
const SNIFF_LEN: usize = 4;

/// Binds the socket at `path`, replacing a stale socket file but never one
/// another agent still listens on. The socket is open to every local user
/// (0777): who may get what is decided by attestation, not by file
/// permissions.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another agent is listening on it",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(l)
}

/// Serves both APIs on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: UnixListener,
    workload: WorkloadService,
    tokens: Arc<TokenEndpoint>,
    mut shutdown: watch::Receiver<bool>,
) {
    let incoming = accept(listener, Some(tokens));
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(workload))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
    {
        tracing::error!(error = %e, "Workload API stopped");
    }
}

/// The gRPC side alone: every accepted connection, with its peer's
/// credentials and gRPC C-core's `:authority` repaired (see
/// [`AuthorityFix`]), for a tonic server.
pub fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = Result<AuthorityFix<PeerStream>, io::Error>> {
    accept(listener, None)
}

/// The accept loop. With `tokens`, connections that do not open with the
/// HTTP/2 preface are served by the token endpoint instead of being
/// yielded.
fn accept(
    listener: UnixListener,
    tokens: Option<Arc<TokenEndpoint>>,
) -> impl Stream<Item = Result<AuthorityFix<PeerStream>, io::Error>> {
    let (tx, rx) = mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match (PeerStream::new(stream), &tokens) {
                    (Ok(p), None) => {
                        if tx.send(Ok(AuthorityFix::new(p))).await.is_err() {
                            return;
                        }
                    }
                    // Sniffing waits for the client's first bytes: never in
                    // the accept loop, where one silent client would stall
                    // everyone.
                    (Ok(p), Some(tokens)) => {
                        let (tx, tokens) = (tx.clone(), tokens.clone());
                        tokio::spawn(async move {
                            match sniff_http2(p.get_ref()).await {
                                Ok(true) => {
                                    let _ = tx.send(Ok(AuthorityFix::new(p))).await;
                                }
                                Ok(false) => tokens.serve(p).await,
                                Err(e) => {
                                    tracing::debug!(error = %e, "reading a Workload API connection's first bytes failed")
                                }
                            }
                        });
                    }
                    (Err(e), _) => tracing::debug!(error = %e, "reading peer credentials failed"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a Workload API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Whether the connection opens with the HTTP/2 preface (gRPC), judged from
/// its first bytes without consuming them.
pub async fn sniff_http2(stream: &UnixStream) -> io::Result<bool> {
    tokio::time::timeout(SNIFF_TIMEOUT, async {
        let mut buf = [0u8; SNIFF_LEN];
        loop {
            stream.readable().await?;
            let peeked = stream.try_io(Interest::READABLE, || {
                recv(stream.as_raw_fd(), &mut buf, MsgFlags::MSG_PEEK).map_err(io::Error::from)
            });
            match peeked {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before sending a request",
                    ))
                }
                Ok(n) => {
                    if buf[..n] != H2_PREFACE[..n] {
                        return Ok(false);
                    }
                    if n >= SNIFF_LEN {
                        return Ok(true);
                    }
                    // A strict prefix of the preface: a peek returns the
                    // same bytes until more arrive, so wait a little rather
                    // than spin on a socket that stays readable.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request within 10s"))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report
mod tests {
    use super::*;

    #[tokio::test]
    async fn sniffing_tells_http2_from_http1_without_consuming() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (first, second, want) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &b""[..], true),
            (b"PR", b"I * HTTP/2.0", true),
            (b"POST /v1/tokens/oidc HTTP/1.1\r\n", b"", false),
            (b"P", b"UT / HTTP/1.1\r\n", false),
            (b"GET / HTTP/1.1\r\n", b"", false),
        ] {
            let (a, mut b) = UnixStream::pair().unwrap();
            b.write_all(first).await.unwrap();
            let writer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                b.write_all(second).await.unwrap();
                b
            });
            assert_eq!(sniff_http2(&a).await.unwrap(), want, "{first:?}");
            let _b = writer.await.unwrap();
            let mut buf = vec![0u8; first.len()];
            let mut a = a;
            a.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, first, "peeking must leave the bytes in place");
        }
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        assert!(sniff_http2(&a).await.is_err());
    }
}
