//! The loopback TCP work the capture benchmark times: a connect, accept,
//! close loop; one bulk stream; and many connections held open.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// Destination ports a holder spreads its open connections over: each has
/// the ephemeral port range (about 28,000 ports) to itself.
const OPEN_PORTS: usize = 4;
/// Bytes per write of the bulk stream.
pub const BULK_BUFFER: usize = 64 * 1024;

/// Listeners on 127.0.0.1 that accept connections and close them at once,
/// each on a thread of its own, until dropped.
pub struct Acceptors {
    pub addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Acceptors {
    /// `n` listeners on ephemeral ports.
    pub fn start(n: usize) -> Result<Acceptors> {
        let listeners = (0..n)
            .map(|_| {
                TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                    .context("binding a listener on 127.0.0.1")
            })
            .collect::<Result<Vec<_>>>()?;
        Acceptors::serve(listeners)
    }

    /// Accepts and closes on each of `listeners`, a thread each.
    pub fn serve(listeners: Vec<TcpListener>) -> Result<Acceptors> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut acceptors = Acceptors {
            addrs: Vec::with_capacity(listeners.len()),
            stop: stop.clone(),
            threads: Vec::with_capacity(listeners.len()),
        };
        for listener in listeners {
            let addr = listener.local_addr()?;
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("bench-accept-{}", addr.port()))
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        // Accepted and closed: the server side closes first.
                        drop(conn);
                    }
                })
                .context("starting an accept thread")?;
            // Registered only once its thread runs: Drop wakes each one.
            acceptors.addrs.push(addr);
            acceptors.threads.push(thread);
        }
        Ok(acceptors)
    }
}

impl Drop for Acceptors {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // One connection each wakes the blocked accept calls.
        for a in &self.addrs {
            let _ = TcpStream::connect_timeout(a, Duration::from_secs(1));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connections completed and failed in one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnCount {
    pub completed: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

/// `clients` threads connect to the listeners in turn for `duration`; each
/// connection is complete when the client has read the server's close.
pub fn connection_round(addrs: &[SocketAddr], clients: usize, duration: Duration) -> ConnCount {
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    std::thread::scope(|s| {
        for c in 0..clients {
            let (completed, failed) = (completed.clone(), failed.clone());
            s.spawn(move || {
                let mut byte = [0u8; 1];
                let mut i = c;
                let (mut ok, mut bad) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let addr = addrs[i % addrs.len()];
                    i += 1;
                    match TcpStream::connect(addr) {
                        Ok(mut stream) => match stream.read(&mut byte) {
                            Ok(0) => ok += 1,
                            // A reset is still a closed connection.
                            Err(e) if e.kind() == ErrorKind::ConnectionReset => ok += 1,
                            Ok(_) | Err(_) => bad += 1,
                        },
                        Err(_) => bad += 1,
                    }
                }
                completed.fetch_add(ok, Ordering::Relaxed);
                failed.fetch_add(bad, Ordering::Relaxed);
            });
        }
    });
    ConnCount {
        completed: completed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    }
}

/// One client connecting at `per_sec` connections a second for `duration`
/// (catching up when it falls behind), each as in [`connection_round`].
pub fn paced_round(addrs: &[SocketAddr], per_sec: f64, duration: Duration) -> ConnCount {
    let interval = Duration::from_secs_f64(1.0 / per_sec.max(1.0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut next = start;
    let mut byte = [0u8; 1];
    let (mut ok, mut bad, mut i) = (0u64, 0u64, 0usize);
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if next > now {
            std::thread::sleep(next - now);
        }
        next += interval;
        let addr = addrs[i % addrs.len()];
        i += 1;
        match TcpStream::connect(addr).and_then(|mut s| s.read(&mut byte)) {
            Ok(0) => ok += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => ok += 1,
            Ok(_) | Err(_) => bad += 1,
        }
    }
    ConnCount {
        completed: ok,
        failed: bad,
        elapsed: start.elapsed(),
    }
}

/// One loopback stream: a writer of 64 KiB buffers for `duration`, a
/// reader to the end; bytes read and the reader's elapsed time.
pub fn bulk_round(duration: Duration) -> Result<(u64, Duration)> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the bulk listener")?;
    let addr = listener.local_addr()?;
    let writer = std::thread::Builder::new()
        .name("bench-bulk-writer".into())
        .spawn(move || -> std::io::Result<()> {
            let mut stream = TcpStream::connect(addr)?;
            let buf = vec![0x5au8; BULK_BUFFER];
            let deadline = Instant::now() + duration;
            while Instant::now() < deadline {
                stream.write_all(&buf)?;
            }
            stream.shutdown(Shutdown::Write)
        })
        .context("starting the bulk writer")?;
    let (mut stream, _) = listener.accept().context("accepting the bulk stream")?;
    let start = Instant::now();
    let mut buf = vec![0u8; BULK_BUFFER];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the bulk stream"),
        }
    }
    let elapsed = start.elapsed();
    writer
        .join()
        .map_err(|_| anyhow!("the bulk writer panicked"))?
        .context("writing the bulk stream")?;
    Ok((total, elapsed))
}

/// Connection pairs held open: both ends of each.
pub struct OpenPairs {
    pub pairs: Vec<(TcpStream, TcpStream)>,
    _listeners: Vec<TcpListener>,
    /// Why fewer pairs than asked for are open, if they are.
    pub short_because: Option<String>,
}

/// Opens up to `n` connection pairs to `ports` listeners on 127.0.0.1
/// (the ephemeral port range serves each destination port separately).
pub fn open_pairs(n: usize, ports: usize) -> Result<OpenPairs> {
    let mut listeners = Vec::with_capacity(ports);
    let mut addrs = Vec::with_capacity(ports);
    for _ in 0..ports.max(1) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a listener")?;
        addrs.push(l.local_addr()?);
        listeners.push(l);
    }
    let mut pairs = Vec::with_capacity(n);
    let mut short_because = None;
    for i in 0..n {
        let k = i % listeners.len();
        let client = match TcpStream::connect(addrs[k]) {
            Ok(c) => c,
            Err(e) => {
                short_because = Some(format!("connection {} of {n}: connect: {e}", i + 1));
                break;
            }
        };
        let server = match listeners[k].accept() {
            Ok((s, _)) => s,
            Err(e) => {
                short_because = Some(format!("connection {} of {n}: accept: {e}", i + 1));
                break;
            }
        };
        pairs.push((client, server));
    }
    Ok(OpenPairs {
        pairs,
        _listeners: listeners,
        short_because,
    })
}

/// Connection pairs held open by child processes (`capture-hold`), so that
/// more connections are open than one process's open-file limit allows.
/// Dropping it closes the children's stdin: they close everything and exit.
pub struct Holders {
    children: Vec<std::process::Child>,
    /// Pairs the children report open.
    pub open: usize,
    /// Why a child opened fewer than it was asked to, if one did.
    pub short_because: Option<String>,
}

/// Starts children holding `pairs` pairs in all, at most `per_child` each.
pub fn spawn_holders(pairs: usize, per_child: usize) -> Result<Holders> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut holders = Holders {
        children: Vec::new(),
        open: 0,
        short_because: None,
    };
    let mut left = pairs;
    while left > 0 {
        let n = left.min(per_child.max(1));
        left -= n;
        let mut child = Command::new(&exe)
            .args(["capture-hold", "--pairs", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} capture-hold", exe.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("capture-hold has no stdout"))?;
        holders.children.push(child);
        let line = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("open "))
            .ok_or_else(|| anyhow!("capture-hold exited before reporting its connections"))?;
        let (open, short) = parse_hold_line(&line)
            .ok_or_else(|| anyhow!("capture-hold reported `{line}`, not `open N`"))?;
        holders.open += open;
        if let Some(why) = short {
            holders.short_because.get_or_insert(why);
            break;
        }
    }
    Ok(holders)
}

/// `open N` or `open N short: WHY`.
pub fn parse_hold_line(line: &str) -> Option<(usize, Option<String>)> {
    let rest = line.strip_prefix("open ")?;
    let (n, why) = match rest.split_once(" short: ") {
        Some((n, why)) => (n, Some(why.to_string())),
        None => (rest, None),
    };
    Some((n.trim().parse().ok()?, why))
}

impl Drop for Holders {
    fn drop(&mut self) {
        for c in &mut self.children {
            drop(c.stdin.take());
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// The child side: opens `pairs` pairs, reports `open N`, holds them until
/// stdin closes.
pub fn hold(pairs: usize) -> Result<()> {
    let open = open_pairs(pairs, OPEN_PORTS)?;
    let short = open
        .short_because
        .as_deref()
        .map(|w| format!(" short: {w}"))
        .unwrap_or_default();
    println!("open {}{short}", open.pairs.len());
    std::io::stdout().flush().context("writing to stdout")?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}
