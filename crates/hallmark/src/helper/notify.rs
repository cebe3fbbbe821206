//! Telling the workload its files changed: `--cmd` and `--signal`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::Notify;
use tracing::{info, warn};

/// The process `--signal` goes to.
#[derive(Clone, Debug)]
pub(super) enum SignalTarget {
    Pid(i32),
    PidFile(PathBuf),
}

/// `--signal` accepts `SIGHUP`, `HUP` or `hup`.
pub(super) fn parse_signal(s: &str) -> Result<Signal, String> {
    let upper = s.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("`{s}` is not a signal name (e.g. SIGHUP, HUP, SIGUSR1)"))
}

/// Starts the task that runs `--cmd` and sends `--signal` after a change.
/// `Notify` holds at most one pending permit, so changes that arrive while a
/// command runs collapse into one more run, and two runs never overlap.
pub(super) fn spawn_notifier(
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
}
