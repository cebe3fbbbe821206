//! The session: one task follows the Workload API's X.509 stream, writes
//! the files, keeps the JWT-SVID fresh, and starts over with backoff when
//! the agent goes away.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hallmark_core::SpiffeId;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{X509svid, X509svidRequest, X509svidResponse};
use tokio::signal::unix::SignalKind;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::{info, warn};

use super::jwt::{fetch_and_write_jwt, JWT_RETRY};
use super::{write_x509, Config, ONCE_TIMEOUT};
use crate::connect::{workload_client, workload_error, workload_request};

/// First wait after the Workload API session ends; doubles up to
/// [`BACKOFF_MAX`] and starts over once the agent answers again.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Owns the files and what was last written to them.
struct Keeper {
    cfg: Config,
    notifier: Option<Arc<Notify>>,
    /// The SVID as last written, to skip answers that change nothing.
    last_x509: Option<X509svid>,
    /// When the JWT-SVID is next due; `None` before the first X.509 write or
    /// without `--audience`.
    jwt_due: Option<Instant>,
    /// Set after the first write: only later changes notify, so the
    /// workload is not reloaded for the files it started with.
    initialized: bool,
}

/// Runs sessions until SIGINT or SIGTERM, waiting with backoff between them;
/// `notifier` hears of every change after the first write.
pub(super) async fn keep(cfg: Config, notifier: Option<Arc<Notify>>) -> Result<()> {
    let mut keeper = Keeper {
        cfg,
        notifier,
        last_x509: None,
        jwt_due: None,
        initialized: false,
    };
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut backoff = Backoff::default();
    loop {
        let err = tokio::select! {
            r = keeper.session(&mut backoff) => match r {
                Err(e) => e,
                Ok(never) => match never {},
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let wait = backoff.next_wait();
        warn!(
            error = %format!("{err:#}"),
            retry_in = ?wait,
            "Workload API session ended; keeping the files already written"
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    info!("stopping on signal");
    Ok(())
}

impl Keeper {
    /// One Workload API session: follows the X.509 stream and the JWT-SVID
    /// refresh deadline until the agent goes away or a file cannot be
    /// written.
    async fn session(&mut self, backoff: &mut Backoff) -> Result<Infallible> {
        let mut c = workload_client(&self.cfg.conn).await?;
        let mut stream = c
            .fetch_x509svid(workload_request(X509svidRequest {}))
            .await
            .map_err(workload_error)
            .context("FetchX509SVID")?
            .into_inner();
        loop {
            let due = self.jwt_due;
            tokio::select! {
                msg = stream.message() => {
                    let resp = msg
                        .map_err(workload_error)
                        .context("FetchX509SVID stream")?
                        .ok_or_else(|| anyhow!("the agent closed the FetchX509SVID stream"))?;
                    backoff.reset();
                    self.on_x509(&mut c, &resp).await?;
                }
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    if self.refresh_jwt(&mut c).await {
                        self.changed();
                    }
                }
            }
        }
    }

    async fn on_x509(
        &mut self,
        c: &mut SpiffeWorkloadApiClient<Channel>,
        resp: &X509svidResponse,
    ) -> Result<()> {
        let Some(svid) = pick(resp, self.cfg.spiffe_id.as_ref()) else {
            warn!(
                want = %self.cfg.spiffe_id.as_ref().map(SpiffeId::as_str).unwrap_or("any"),
                have = ?resp.svids.iter().map(|s| s.spiffe_id.as_str()).collect::<Vec<_>>(),
                "the Workload API answer holds no matching SVID; keeping the files already written"
            );
            return Ok(());
        };
        if self.last_x509.as_ref() == Some(svid) {
            return Ok(());
        }
        write_x509(&self.cfg.out_dir, svid)?;
        self.last_x509 = Some(svid.clone());
        // A new X.509 SVID may mean a new identity or signing key: refresh
        // the token now rather than at its half-life.
        self.refresh_jwt(c).await;
        self.changed();
        Ok(())
    }

    /// Fetches and writes the JWT-SVID and schedules the next refresh;
    /// `true` if the file was rewritten. A failure keeps the old token and
    /// retries soon.
    async fn refresh_jwt(&mut self, c: &mut SpiffeWorkloadApiClient<Channel>) -> bool {
        let Some(target) = &self.cfg.jwt else {
            return false;
        };
        let Some(id) = self.last_x509.as_ref().map(|s| s.spiffe_id.clone()) else {
            return false;
        };
        match fetch_and_write_jwt(c, &self.cfg.conn, target, &id).await {
            Ok(delay) => {
                self.jwt_due = Some(Instant::now() + delay);
                true
            }
            Err(e) => {
                warn!(
                    error = %format!("{e:#}"),
                    retry_in = ?JWT_RETRY,
                    "JWT-SVID refresh failed; keeping the token already written"
                );
                self.jwt_due = Some(Instant::now() + JWT_RETRY);
                false
            }
        }
    }

    fn changed(&mut self) {
        if self.initialized {
            if let Some(n) = &self.notifier {
                n.notify_one();
            }
        }
        self.initialized = true;
    }
}

/// `--once`: one answer, every file written, or an error naming the refusal.
pub(super) async fn write_once(cfg: &Config) -> Result<()> {
    let mut c = workload_client(&cfg.conn).await?;
    let first = async {
        let mut stream = c
            .fetch_x509svid(workload_request(X509svidRequest {}))
            .await
            .map_err(workload_error)?
            .into_inner();
        stream
            .message()
            .await
            .map_err(workload_error)?
            .ok_or_else(|| anyhow!("the agent closed the stream without an answer"))
    };
    let resp = tokio::time::timeout(ONCE_TIMEOUT, first)
        .await
        .map_err(|_| anyhow!("no answer within {ONCE_TIMEOUT:?}"))
        .and_then(|r| r)
        .context("FetchX509SVID")?;
    let svid = pick(&resp, cfg.spiffe_id.as_ref()).ok_or_else(|| {
        anyhow!(
            "--spiffe-id {}: not among this process's identities {:?}",
            cfg.spiffe_id.as_ref().map(SpiffeId::as_str).unwrap_or(""),
            resp.svids
                .iter()
                .map(|s| s.spiffe_id.as_str())
                .collect::<Vec<_>>()
        )
    })?;
    write_x509(&cfg.out_dir, svid)?;
    if let Some(target) = &cfg.jwt {
        fetch_and_write_jwt(&mut c, &cfg.conn, target, &svid.spiffe_id).await?;
    }
    Ok(())
}

/// The SVID named by `--spiffe-id`, else the first (the default one).
fn pick<'a>(resp: &'a X509svidResponse, want: Option<&SpiffeId>) -> Option<&'a X509svid> {
    match want {
        Some(id) => resp.svids.iter().find(|s| s.spiffe_id == id.as_str()),
        None => resp.svids.first(),
    }
}

struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(BACKOFF_MAX);
        wait
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..7).map(|_| b.next_wait()).collect();
        assert_eq!(waits[0], BACKOFF_START);
        assert_eq!(waits[1], BACKOFF_START * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert_eq!(waits[6], BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next_wait(), BACKOFF_START);
    }
}
