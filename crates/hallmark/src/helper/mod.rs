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

mod jwt;
mod notify;
mod session;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hallmark_core::SpiffeId;
use hallmark_proto::workload::X509svid;
use nix::sys::signal::Signal;
use tracing::info;

use crate::connect::{pem_certs, split_der, WorkloadArgs};
use crate::files::write_atomic;
use notify::{parse_signal, SignalTarget};

/// The leaf certificate followed by its intermediates, PEM.
pub const SVID_FILE: &str = "svid.pem";
/// The SVID's private key, PKCS#8 PEM.
pub const KEY_FILE: &str = "svid_key.pem";
/// The trust domain's root certificates, PEM.
pub const BUNDLE_FILE: &str = "bundle.pem";
/// Default name of the JWT-SVID file inside the output directory.
pub const DEFAULT_JWT_FILE: &str = "jwt_svid.token";
/// Every file the helper writes is readable by its owner only.
const FILE_MODE: u32 = 0o600;
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
        session::write_once(&cfg).await
    } else {
        let notifier = notify::spawn_notifier(cfg.cmd.clone(), cfg.signal.clone());
        session::keep(cfg, notifier).await
    }
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

    write_atomic(
        &dir.join(BUNDLE_FILE),
        pem_certs(&bundle).as_bytes(),
        FILE_MODE,
    )?;
    write_atomic(&dir.join(KEY_FILE), key_pem.as_bytes(), FILE_MODE)?;
    write_atomic(
        &dir.join(SVID_FILE),
        pem_certs(&chain).as_bytes(),
        FILE_MODE,
    )?;
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
