//! `hallmark helper`: keeps an X509-SVID, its private key, the trust bundle
//! and optionally a JWT-SVID in files, for software that reads credentials
//! from disk (nginx, databases, the AWS SDK through
//! `AWS_WEB_IDENTITY_TOKEN_FILE`) instead of speaking the Workload API.
//!
//! One task owns the Workload API session and the files: it follows the
//! FetchX509SVID stream (the agent pushes every rotation), refreshes the
//! JWT-SVID at half its lifetime, and hands "files changed" to a separate
//! notifier task that runs the reload command and/or sends the signal, one
//! run at a time. When the agent goes away the session is retried with
//! backoff and the files already written stay in place.
//!
//! What a reader may rely on: every file is replaced atomically (temp file in
//! the same directory, fsync, rename, fsync of the directory), so a reader
//! sees the old or the new content, never a mix or a torn file. The X.509 set
//! is written in the order bundle, key, certificate. The certificate is the
//! commit point: a reader that loads the certificate first and the key second
//! never pairs a new certificate with the old key, and by the time a new
//! certificate is visible the bundle that verifies it is too.

use std::convert::Infallible;
use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use clap::Args;
use hallmark_core::SpiffeId;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{JwtsvidRequest, X509svid, X509svidRequest, X509svidResponse};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::signal::unix::SignalKind;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::cli::WorkloadArgs;
use crate::workload::{client, pem_certs, request, split_der, status_err};

/// The leaf certificate followed by its intermediates, PEM.
pub const SVID_FILE: &str = "svid.pem";
/// The SVID's private key, PKCS#8 PEM.
pub const KEY_FILE: &str = "svid_key.pem";
/// The trust domain's root certificates, PEM.
pub const BUNDLE_FILE: &str = "bundle.pem";
/// Default name of the JWT-SVID file inside the output directory.
pub const DEFAULT_JWT_FILE: &str = "jwt_svid.token";

/// First wait after the Workload API session ends; doubles up to
/// [`BACKOFF_MAX`] and starts over once the agent answers again.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Shortest wait before the next JWT-SVID refresh, so a token already past
/// half its life (or a skewed clock) cannot turn into a busy loop.
const JWT_REFRESH_FLOOR: Duration = Duration::from_secs(1);
/// Wait after a failed JWT-SVID fetch while the X.509 stream stays healthy.
const JWT_RETRY: Duration = Duration::from_secs(2);
/// How long `--once` waits for the agent's first answer: an init container
/// must fail visibly rather than hang.
const ONCE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct HelperArgs {
    /// Directory that receives svid.pem (leaf + intermediates), svid_key.pem
    /// (PKCS#8) and bundle.pem, all 0600; created if missing.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Which of this process's identities to keep [default: the first
    /// (default) SVID the Workload API sends].
    #[arg(long)]
    pub spiffe_id: Option<SpiffeId>,
    /// Also keep a JWT-SVID for this audience in --jwt-file (repeatable: one
    /// token naming every audience).
    #[arg(long = "audience")]
    pub audience: Vec<String>,
    /// File name, inside --out-dir, of the JWT-SVID (what
    /// AWS_WEB_IDENTITY_TOKEN_FILE points at).
    #[arg(long, default_value = DEFAULT_JWT_FILE, requires = "audience")]
    pub jwt_file: String,
    /// Keep an OIDC-profile token (from the agent's token endpoint: `iss` =
    /// the server's OIDC issuer, signed with a key in its discovery JWKS)
    /// instead of a JWT-SVID: what AWS STS, GCP and Azure accept.
    #[arg(long, requires = "audience")]
    pub oidc: bool,
    /// After every change following the first write, run this through
    /// `sh -c` and wait for it (runs never overlap).
    #[arg(long)]
    pub cmd: Option<String>,
    /// After every change following the first write, send this signal
    /// (SIGHUP, HUP, SIGUSR1, ...) to --pid or the pid in --pid-file.
    #[arg(long, value_parser = parse_signal, requires = "signal_target")]
    pub signal: Option<Signal>,
    /// The process --signal goes to.
    #[arg(
        long,
        group = "signal_target",
        requires = "signal",
        value_parser = clap::value_parser!(i32).range(1..)
    )]
    pub pid: Option<i32>,
    /// A file holding the pid --signal goes to, read at every signal so a
    /// restarted process is still found.
    #[arg(long, group = "signal_target", requires = "signal")]
    pub pid_file: Option<PathBuf>,
    /// Write everything once and exit (for init containers); fails if the
    /// Workload API refuses.
    #[arg(long)]
    pub once: bool,
    /// The Workload API socket: a path or unix:///path. Defaults to
    /// $SPIFFE_ENDPOINT_SOCKET, else $HALLMARK_HOME/agent/workload.sock.
    #[arg(long)]
    pub socket: Option<String>,
}

/// Runs `hallmark helper` until interrupted, or once with `--once`.
pub async fn run(args: HelperArgs) -> Result<()> {
    let once = args.once;
    let cfg = Config::from_args(args)?;
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating --out-dir {}", cfg.out_dir.display()))?;
    if once {
        return write_once(&cfg).await;
    }
    let notifier = spawn_notifier(cfg.cmd.clone(), cfg.signal.clone());
    let keeper = Keeper {
        cfg,
        notifier,
        last_x509: None,
        jwt_due: None,
        initialized: false,
    };
    keep(keeper).await
}

/// The validated command line.
struct Config {
    out_dir: PathBuf,
    spiffe_id: Option<SpiffeId>,
    jwt: Option<JwtTarget>,
    cmd: Option<String>,
    signal: Option<(Signal, SignalTarget)>,
    conn: WorkloadArgs,
}

struct JwtTarget {
    audience: Vec<String>,
    path: PathBuf,
    /// Fetch from the token endpoint (OIDC profile) rather than
    /// FetchJWTSVID.
    oidc: bool,
}

#[derive(Clone, Debug)]
enum SignalTarget {
    Pid(i32),
    PidFile(PathBuf),
}

impl Config {
    fn from_args(a: HelperArgs) -> Result<Self> {
        if let Some(bad) = a.audience.iter().find(|s| s.trim().is_empty()) {
            bail!("--audience `{bad}`: an audience must not be empty");
        }
        let jwt = if a.audience.is_empty() {
            None
        } else {
            check_jwt_file_name(&a.jwt_file)?;
            Some(JwtTarget {
                path: a.out_dir.join(&a.jwt_file),
                audience: a.audience,
                oidc: a.oidc,
            })
        };
        let target = match (a.pid, a.pid_file) {
            (Some(pid), _) => Some(SignalTarget::Pid(pid)),
            (None, Some(f)) => Some(SignalTarget::PidFile(f)),
            (None, None) => None,
        };
        let signal = match (a.signal, target) {
            (Some(s), Some(t)) => Some((s, t)),
            (None, None) => None,
            // clap's `requires` rules make the two go together.
            _ => bail!("--signal needs --pid or --pid-file, and they need --signal"),
        };
        Ok(Config {
            out_dir: a.out_dir,
            spiffe_id: a.spiffe_id,
            jwt,
            cmd: a.cmd,
            signal,
            conn: WorkloadArgs {
                socket: a.socket,
                json: false,
            },
        })
    }
}

/// The JWT file lives next to the X.509 files so that its temp file is in
/// the same directory (rename is only atomic within one file system).
fn check_jwt_file_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        bail!("--jwt-file `{name}`: expected a plain file name inside --out-dir, without `/`");
    }
    if [SVID_FILE, KEY_FILE, BUNDLE_FILE].contains(&name) {
        bail!("--jwt-file `{name}`: that name is taken by the X.509 files");
    }
    Ok(())
}

/// `--signal` accepts `SIGHUP`, `HUP` or `hup`.
fn parse_signal(s: &str) -> Result<Signal, String> {
    let upper = s.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("`{s}` is not a signal name (e.g. SIGHUP, HUP, SIGUSR1)"))
}

// ---------------------------------------------------------------------------
// The session
// ---------------------------------------------------------------------------

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

/// Runs sessions until SIGINT or SIGTERM, waiting with backoff between them.
async fn keep(mut keeper: Keeper) -> Result<()> {
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
        let mut c = client(&self.cfg.conn).await?;
        let mut stream = c
            .fetch_x509svid(request(X509svidRequest {}))
            .await
            .map_err(status_err)
            .context("FetchX509SVID")?
            .into_inner();
        loop {
            let due = self.jwt_due;
            tokio::select! {
                msg = stream.message() => {
                    let resp = msg
                        .map_err(status_err)
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
async fn write_once(cfg: &Config) -> Result<()> {
    let mut c = client(&cfg.conn).await?;
    let first = async {
        let mut stream = c
            .fetch_x509svid(request(X509svidRequest {}))
            .await
            .map_err(status_err)?
            .into_inner();
        stream
            .message()
            .await
            .map_err(status_err)?
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

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// Writes bundle, key, then certificate (see the module docs for why that
/// order). Everything is decoded before the first write, so a malformed
/// answer leaves all files as they were.
fn write_x509(dir: &Path, svid: &X509svid) -> Result<()> {
    let chain = split_der(&svid.x509_svid).context("X509-SVID chain")?;
    let bundle = split_der(&svid.bundle).context("X509-SVID bundle")?;
    let Some(leaf) = chain.first() else {
        bail!("X509-SVID for {}: the chain is empty", svid.spiffe_id);
    };
    if bundle.is_empty() {
        bail!("X509-SVID for {}: the bundle is empty", svid.spiffe_id);
    }
    if svid.x509_svid_key.is_empty() {
        bail!("X509-SVID for {}: the private key is empty", svid.spiffe_id);
    }
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| anyhow!("X509-SVID for {}: leaf does not parse: {e}", svid.spiffe_id))?;
    let serial = cert.raw_serial_as_string();
    let not_after = cert.validity().not_after.to_string();
    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", svid.x509_svid_key.clone()));

    write_atomic(&dir.join(BUNDLE_FILE), pem_certs(&bundle).as_bytes())?;
    write_atomic(&dir.join(KEY_FILE), key_pem.as_bytes())?;
    write_atomic(&dir.join(SVID_FILE), pem_certs(&chain).as_bytes())?;
    info!(
        dir = %dir.display(),
        files = %format!("{BUNDLE_FILE}, {KEY_FILE}, {SVID_FILE}"),
        spiffe_id = %svid.spiffe_id,
        serial = %serial,
        not_after = %not_after,
        bundle_roots = bundle.len(),
        "wrote X509-SVID"
    );
    Ok(())
}

/// Fetches the JWT-SVID for `spiffe_id`, writes it, and returns how long
/// until it is due for refresh.
async fn fetch_and_write_jwt(
    c: &mut SpiffeWorkloadApiClient<Channel>,
    conn: &WorkloadArgs,
    target: &JwtTarget,
    spiffe_id: &str,
) -> Result<Duration> {
    let token = if target.oidc {
        fetch_oidc_token(conn, &target.audience, spiffe_id).await?
    } else {
        fetch_jwt_svid(c, target, spiffe_id).await?
    };
    let kind = if target.oidc {
        "OIDC token"
    } else {
        "JWT-SVID"
    };
    let claims = JwtClaims::parse(&token).with_context(|| format!("{kind} for {spiffe_id}"))?;
    // No trailing newline: some SDKs send the file's bytes verbatim.
    write_atomic(&target.path, token.as_bytes())?;
    info!(
        file = %target.path.display(),
        spiffe_id = %claims.sub,
        audience = ?target.audience,
        exp = claims.exp,
        "wrote {kind}"
    );
    Ok(refresh_delay(claims.iat, claims.exp, unix_now()))
}

/// Largest token endpoint answer read; tokens are a few KiB.
const MAX_TOKEN_ANSWER: u64 = 1 << 20;

/// `POST /v1/tokens/oidc` over the agent's socket (plain HTTP/1.1, one
/// request per connection).
async fn fetch_oidc_token(
    conn: &WorkloadArgs,
    audience: &[String],
    spiffe_id: &str,
) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = crate::workload::socket_path(&conn.socket)?;
    let body = serde_json::json!({ "aud": audience, "spiffe_id": spiffe_id }).to_string();
    let request = format!(
        "POST /v1/tokens/oidc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let what = || format!("token endpoint on {}", path.display());
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .with_context(|| format!("connecting to the {}", what()))?;
    stream
        .write_all(request.as_bytes())
        .await
        .with_context(what)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_TOKEN_ANSWER)
        .read_to_end(&mut raw)
        .await
        .with_context(what)?;
    let (status, body) = split_http_answer(&raw).with_context(what)?;
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| anyhow!("{}: answer is not JSON: {e}", what()))?;
    if status != 200 {
        let msg = json["error"].as_str().unwrap_or("no error message");
        bail!("{}: HTTP {status}: {msg}", what());
    }
    json["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{}: the answer has no `token`", what()))
}

/// The status code and body of a complete HTTP/1.1 answer read until the
/// server closed the connection (Content-Length framing; the endpoint never
/// chunks).
fn split_http_answer(raw: &[u8]) -> Result<(u16, &[u8])> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP answer"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| anyhow!("HTTP header is not UTF-8"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
    let mut body = &raw[end + 4..];
    let length = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    if let Some(n) = length {
        if body.len() < n {
            bail!("HTTP answer cut short ({} of {n} bytes)", body.len());
        }
        body = &body[..n];
    }
    Ok((status, body))
}

async fn fetch_jwt_svid(
    c: &mut SpiffeWorkloadApiClient<Channel>,
    target: &JwtTarget,
    spiffe_id: &str,
) -> Result<String> {
    let resp = c
        .fetch_jwtsvid(request(JwtsvidRequest {
            audience: target.audience.clone(),
            spiffe_id: spiffe_id.to_string(),
        }))
        .await
        .map_err(status_err)
        .with_context(|| {
            format!(
                "FetchJWTSVID for {spiffe_id}, audience {:?}",
                target.audience
            )
        })?
        .into_inner();
    resp.svids
        .into_iter()
        .next()
        .map(|s| s.svid)
        .ok_or_else(|| anyhow!("FetchJWTSVID for {spiffe_id}: the answer holds no token"))
}

/// Replaces `path` with `data`, mode 0600, so that a reader sees either the
/// old file or the complete new one: temp file in the same directory,
/// fsync, rename over the target, fsync the directory so the rename itself
/// survives a crash.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        bail!("writing {}: not a file path", path.display());
    };
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    // A leftover from a crash could carry other permissions; create_new
    // below then guarantees the mode is ours.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", tmp.display())),
    }
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask may only clear bits of 0600, but set it explicitly so
        // the mode never depends on the environment.
        f.set_permissions(Permissions::from_mode(0o600))?;
        f.write_all(data)?;
        f.sync_all()
    };
    write().with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// JWT refresh timing
// ---------------------------------------------------------------------------

/// The claims the refresh schedule and the log line need. The token is not
/// verified here: it comes from the local agent over its socket, and the
/// relying party verifies it.
#[derive(Debug, Deserialize, PartialEq)]
struct JwtClaims {
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
}

impl JwtClaims {
    fn parse(token: &str) -> Result<Self> {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("JWT-SVID: not a compact JWS (three dot-separated parts)");
        };
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|e| anyhow!("JWT-SVID: payload is not unpadded base64url: {e}"))?;
        serde_json::from_slice(&json).map_err(|e| {
            anyhow!(
                "JWT-SVID: payload is not a JSON object with string `sub` and integer `exp`: {e}"
            )
        })
    }
}

/// Time until half the token's lifetime has passed, never less than
/// [`JWT_REFRESH_FLOOR`]. The lifetime starts at `iat`, or now when the
/// token has none or the agent's clock runs ahead of ours.
fn refresh_delay(iat: Option<i64>, exp: i64, now: i64) -> Duration {
    let issued = iat.unwrap_or(now).min(now);
    let due = issued + (exp - issued) / 2;
    let secs = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
    Duration::from_secs(secs).max(JWT_REFRESH_FLOOR)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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

// ---------------------------------------------------------------------------
// Notifying the workload
// ---------------------------------------------------------------------------

/// Starts the task that runs `--cmd` and sends `--signal` after a change.
/// `Notify` holds at most one pending permit, so changes that arrive while a
/// command runs collapse into one more run, and two runs never overlap.
fn spawn_notifier(
    cmd: Option<String>,
    signal: Option<(Signal, SignalTarget)>,
) -> Option<Arc<Notify>> {
    if cmd.is_none() && signal.is_none() {
        return None;
    }
    let notify = Arc::new(Notify::new());
    let wake = Arc::clone(&notify);
    tokio::spawn(async move {
        loop {
            wake.notified().await;
            if let Some(cmd) = &cmd {
                run_cmd(cmd).await;
            }
            if let Some((sig, target)) = &signal {
                match send_signal(*sig, target) {
                    Ok(pid) => info!(signal = %sig, pid, "signalled the workload"),
                    Err(e) => warn!(error = %format!("{e:#}"), "could not signal the workload"),
                }
            }
        }
    });
    Some(notify)
}

async fn run_cmd(cmd: &str) {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => info!(cmd, status = %s, "reload command finished"),
        Ok(s) => warn!(cmd, status = %s, "reload command failed"),
        Err(e) => warn!(cmd, error = %e, "could not start the reload command"),
    }
}

fn send_signal(sig: Signal, target: &SignalTarget) -> Result<i32> {
    let pid = match target {
        SignalTarget::Pid(p) => *p,
        SignalTarget::PidFile(f) => read_pid_file(f)?,
    };
    nix::sys::signal::kill(Pid::from_raw(pid), sig)
        .with_context(|| format!("sending {sig} to pid {pid}"))?;
    Ok(pid)
}

/// Reads a pid file; zero and negative values are refused because kill(2)
/// would take them as "my process group" or "every process".
fn read_pid_file(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --pid-file {}", path.display()))?;
    parse_pid(&text).with_context(|| format!("--pid-file {}", path.display()))
}

fn parse_pid(text: &str) -> Result<i32> {
    let t = text.trim();
    match t.parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => bail!("`{t}` is not a process id (a positive integer)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        helper: HelperArgs,
    }

    fn parse(args: &[&str]) -> Result<HelperArgs, clap::Error> {
        let mut all = vec!["helper"];
        all.extend_from_slice(args);
        TestCli::try_parse_from(all).map(|c| c.helper)
    }

    #[test]
    fn signal_names() {
        let cases: &[(&str, Option<Signal>)] = &[
            ("SIGHUP", Some(Signal::SIGHUP)),
            ("HUP", Some(Signal::SIGHUP)),
            ("hup", Some(Signal::SIGHUP)),
            ("SIGUSR1", Some(Signal::SIGUSR1)),
            ("usr2", Some(Signal::SIGUSR2)),
            ("TERM", Some(Signal::SIGTERM)),
            ("", None),
            ("SIG", None),
            ("1", None),
            ("SIGNOPE", None),
        ];
        for (input, want) in cases {
            let got = parse_signal(input).ok();
            assert_eq!(got, *want, "parse_signal({input:?})");
        }
        let err = parse_signal("NOPE").expect_err("NOPE is no signal");
        assert!(err.contains("NOPE"), "{err}");
    }

    #[test]
    fn pids() {
        let cases: &[(&str, Option<i32>)] = &[
            ("42", Some(42)),
            (" 42\n", Some(42)),
            ("1", Some(1)),
            ("0", None),
            ("-1", None),
            ("", None),
            ("4x", None),
            ("99999999999", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_pid(input).ok(), *want, "parse_pid({input:?})");
        }
    }

    #[test]
    fn jwt_file_names() {
        let cases: &[(&str, bool)] = &[
            ("jwt_svid.token", true),
            ("token", true),
            (".hidden", true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("/abs", false),
            ("svid.pem", false),
            ("svid_key.pem", false),
            ("bundle.pem", false),
        ];
        for (name, ok) in cases {
            assert_eq!(
                check_jwt_file_name(name).is_ok(),
                *ok,
                "--jwt-file {name:?}"
            );
        }
    }

    #[test]
    fn refresh_at_half_life() {
        // (iat, exp, now) -> seconds until refresh
        let cases: &[(Option<i64>, i64, i64, u64)] = &[
            (Some(1000), 1300, 1000, 150),
            (Some(1000), 1300, 1100, 50),
            (Some(1000), 1300, 1149, 1),
            (Some(1000), 1300, 1200, 1),
            (None, 1300, 1100, 100),
            (Some(1000), 900, 1000, 1),
            (Some(2000), 1300, 1000, 150),
            (Some(1000), 1010, 1000, 5),
        ];
        for &(iat, exp, now, want) in cases {
            assert_eq!(
                refresh_delay(iat, exp, now),
                Duration::from_secs(want),
                "refresh_delay({iat:?}, {exp}, {now})"
            );
        }
    }

    fn token(payload: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"ES256"}"#), enc(payload))
    }

    #[test]
    fn jwt_claims() {
        let ok = JwtClaims::parse(&token(
            r#"{"sub":"spiffe://td/a","aud":["x"],"exp":1300,"iat":1000}"#,
        ))
        .expect("valid token");
        assert_eq!(
            ok,
            JwtClaims {
                sub: "spiffe://td/a".into(),
                exp: 1300,
                iat: Some(1000)
            }
        );
        let no_iat = JwtClaims::parse(&token(r#"{"sub":"s","exp":5}"#)).expect("no iat");
        assert_eq!(no_iat.iat, None);

        let bad: &[(String, &str)] = &[
            ("a.b".into(), "three"),
            ("a.b.c.d".into(), "three"),
            ("a.!!!.c".into(), "base64url"),
            (token(r#"{"sub":"s"}"#), "exp"),
            (token(r#"{"exp":5}"#), "sub"),
            (token(r#"{"sub":"s","exp":"soon"}"#), "exp"),
            (token("[]"), "JSON object"),
        ];
        for (input, needle) in bad {
            let err = format!("{:#}", JwtClaims::parse(input).expect_err(input));
            assert!(err.contains(needle), "parse({input:?}): {err}");
        }
    }

    #[test]
    fn http_answers_split_into_status_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"token\":\"t\"}";
        let (status, body) = split_http_answer(ok).expect("complete answer");
        assert_eq!(status, 200);
        assert_eq!(body, b"{\"token\":\"t\"}");
        let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(split_http_answer(forbidden).expect("answer").1, b"{}");
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n"[..],
            b"HTTP/1.1 2x0 OK\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{}",
        ] {
            assert!(
                split_http_answer(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

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

    #[test]
    fn atomic_write_replaces_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.pem");
        std::fs::write(&path, "old").expect("seed");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        // A stale temp file with a wide mode must not leak its mode.
        let stale = dir.path().join(".f.pem.tmp");
        std::fs::write(&stale, "junk").expect("stale");
        std::fs::set_permissions(&stale, Permissions::from_mode(0o666)).expect("chmod");

        write_atomic(&path, b"new").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!stale.exists(), "temp file left behind");
    }

    #[test]
    fn atomic_write_into_missing_dir_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing/f.pem");
        let err = format!("{:#}", write_atomic(&path, b"x").expect_err("no dir"));
        assert!(err.contains("missing/.f.pem.tmp"), "{err}");
    }

    #[test]
    fn flag_rules() {
        let ok = parse(&["--out-dir", "/o", "--signal", "HUP", "--pid", "7"]).expect("valid");
        assert_eq!(ok.signal, Some(Signal::SIGHUP));
        assert_eq!(ok.pid, Some(7));
        let cfg = Config::from_args(
            parse(&["--out-dir", "/o", "--audience", "a", "--audience", "b"]).expect("valid"),
        )
        .expect("config");
        let jwt = cfg.jwt.expect("jwt target");
        assert_eq!(jwt.audience, ["a", "b"]);
        assert_eq!(jwt.path, PathBuf::from("/o/jwt_svid.token"));

        let refused: &[&[&str]] = &[
            &[],
            &["--out-dir", "/o", "--signal", "HUP"],
            &["--out-dir", "/o", "--pid", "7"],
            &["--out-dir", "/o", "--signal", "HUP", "--pid", "0"],
            &[
                "--out-dir",
                "/o",
                "--signal",
                "HUP",
                "--pid",
                "7",
                "--pid-file",
                "/p",
            ],
            &["--out-dir", "/o", "--jwt-file", "t"],
            &["--out-dir", "/o", "--spiffe-id", "not-an-id"],
        ];
        for args in refused {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
        let bad_cfg: &[&[&str]] = &[
            &["--out-dir", "/o", "--audience", ""],
            &["--out-dir", "/o", "--audience", "a", "--jwt-file", "x/y"],
        ];
        for args in bad_cfg {
            let a = parse(args).expect("clap accepts");
            assert!(Config::from_args(a).is_err(), "{args:?} was accepted");
        }
    }
}
