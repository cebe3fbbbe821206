//! A headless Chromium driven over the DevTools protocol, for tests that
//! load the console in a real browser.
//!
//! One [`Browser`] is one `chromium` process with a fresh profile directory
//! and a WebSocket to its single page. Everything is blocking (call it from
//! plain test code or `spawn_blocking`) and every call has a deadline; an
//! error names the call that failed or timed out.
//!
//! Console messages, uncaught exceptions and error log entries (CSP
//! violations, failed loads) are recorded as they arrive, also while a call
//! waits for its reply, and are read back with [`Browser::console`] and
//! [`Browser::errors`].
//!
//! Chromium comes from `scripts/setup.d/50-chromium.sh`.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tungstenite::{HandshakeError, Message, WebSocket};

/// Deadline for starting Chromium and for one DevTools call or page load.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(20);
/// Interval between two evaluations in [`Browser::wait_for`].
const POLL: Duration = Duration::from_millis(50);

/// One recorded console message, exception or log entry.
#[derive(Debug, Clone)]
struct Entry {
    text: String,
    error: bool,
}

/// A running headless Chromium with one page; dropping it kills the
/// process and its helpers and removes its profile.
pub struct Browser {
    child: Child,
    /// Holds `profile/` (the `--user-data-dir`) and `stderr.log`.
    dir: PathBuf,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    entries: Vec<Entry>,
    /// Set by `Page.loadEventFired`; cleared before each navigation.
    loaded: bool,
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile, connects to its page
    /// and enables the Runtime, Page, Log and Network domains. The error
    /// carries chromium's stderr when it does not come up.
    pub fn launch() -> Result<Browser, String> {
        let dir = fresh_dir()?;
        let profile = dir.join("profile");
        fs::create_dir(&profile)
            .map_err(|e| format!("creating profile dir {}: {e}", profile.display()))?;
        let stderr_path = dir.join("stderr.log");
        let stderr = File::create(&stderr_path)
            .map_err(|e| format!("creating {}: {e}", stderr_path.display()))?;

        let mut command = Command::new("chromium");
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1400,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            // Everything chromium writes outside the profile (crashpad's
            // database, the NSS db, dconf) goes under the temp dir too.
            .env("HOME", dir.join("home"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("CHROME_CONFIG_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group, so that Drop can kill the helpers too.
            .process_group(0);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(format!(
                    "starting chromium: {e} (run scripts/setup.d/50-chromium.sh)"
                ));
            }
        };

        let mut starting = Starting {
            child: Some(child),
            dir: Some(dir),
        };
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        let ws_url = match starting.page_ws_url(&profile, deadline) {
            Ok(url) => url,
            Err(e) => return Err(starting.fail(&e)),
        };
        let ws = match connect(&ws_url, deadline) {
            Ok(ws) => ws,
            Err(e) => return Err(starting.fail(&e)),
        };
        let (Some(child), Some(dir)) = (starting.child.take(), starting.dir.take()) else {
            return Err("launching chromium: lost track of the process".to_string());
        };
        let mut browser = Browser {
            child,
            dir,
            ws,
            next_id: 0,
            entries: Vec::new(),
            loaded: false,
        };
        for domain in ["Runtime", "Page", "Log", "Network"] {
            browser.call(&format!("{domain}.enable"), json!({}))?;
        }
        Ok(browser)
    }

    /// Navigates to `url` and waits for its load event. A navigation that
    /// fails (refused connection, bad URL) is an error with chromium's
    /// reason; one within the same document (only the fragment changes)
    /// has no load event and returns at once.
    pub fn goto(&mut self, url: &str) -> Result<(), String> {
        self.loaded = false;
        let result = self
            .call("Page.navigate", json!({ "url": url }))
            .map_err(|e| format!("goto {url}: {e}"))?;
        if let Some(error) = result.get("errorText").and_then(Value::as_str) {
            return Err(format!("goto {url}: {error}"));
        }
        if result.get("loaderId").is_none() {
            return Ok(());
        }
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        let what = format!(
            "goto {url}: waiting {} s for the load event",
            BROWSER_TIMEOUT.as_secs()
        );
        while !self.loaded {
            self.read_message(deadline, &what)?;
        }
        Ok(())
    }

    /// Evaluates `js` in the page, awaiting a promise, and returns the
    /// result as JSON (`null` for `undefined`). A thrown exception or a
    /// rejected promise is the error, with its description.
    pub fn eval(&mut self, js: &str) -> Result<Value, String> {
        self.eval_within(js, BROWSER_TIMEOUT)
    }

    /// Evaluates the expression `js` every 50 ms until it is truthy and
    /// returns that value. An evaluation that throws counts as not yet
    /// (the page may still be loading). On timeout the error names `what`,
    /// the last value and the time waited.
    pub fn wait_for(&mut self, what: &str, js: &str, timeout: Duration) -> Result<Value, String> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut last;
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            match self.eval_within(js, left) {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => last = value.to_string(),
                Err(e) => last = format!("error: {e}"),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "timed out waiting for {what} after {:.1} s: `{}` was last {last}",
                    start.elapsed().as_secs_f64(),
                    abbreviate(js)
                ));
            }
            thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    /// Writes a PNG screenshot of the viewport to `path`, creating its
    /// parent directories.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), String> {
        let result = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = result
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("Page.captureScreenshot: no data in {result}"))?;
        let png = base64_decode(data).map_err(|e| format!("Page.captureScreenshot: {e}"))?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        fs::write(path, png).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Every console message (`"level: text"`), uncaught exception and error
    /// log entry seen so far, in order of arrival.
    pub fn console(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.text.clone()).collect()
    }

    /// The errors among [`Browser::console`]: `console.error`, failed
    /// `console.assert`, uncaught exceptions and error log entries, except
    /// a failed load of `/favicon.ico` (which the browser, not the page,
    /// asks for).
    pub fn errors(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.error)
            .map(|e| e.text.clone())
            .collect()
    }

    /// All cookies of the browser, each as an object with `name`, `value`,
    /// `domain`, `path`, `httpOnly`, `secure` and `sameSite` (`null` when
    /// the cookie sets none).
    pub fn cookies(&mut self) -> Result<Vec<Value>, String> {
        let result = match self.call("Network.getAllCookies", json!({})) {
            Ok(result) => result,
            Err(_) => self.call("Storage.getCookies", json!({}))?,
        };
        let cookies = result
            .get("cookies")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("cookies: no cookie list in {result}"))?;
        Ok(cookies
            .iter()
            .map(|c| {
                json!({
                    "name": c.get("name").cloned().unwrap_or(Value::Null),
                    "value": c.get("value").cloned().unwrap_or(Value::Null),
                    "domain": c.get("domain").cloned().unwrap_or(Value::Null),
                    "path": c.get("path").cloned().unwrap_or(Value::Null),
                    "httpOnly": c.get("httpOnly").cloned().unwrap_or(Value::Bool(false)),
                    "secure": c.get("secure").cloned().unwrap_or(Value::Bool(false)),
                    "sameSite": c.get("sameSite").cloned().unwrap_or(Value::Null),
                })
            })
            .collect())
    }

    /// The page's current URL (`location.href`).
    pub fn url(&mut self) -> Result<String, String> {
        match self.eval("location.href")? {
            Value::String(url) => Ok(url),
            other => Err(format!("location.href is not a string: {other}")),
        }
    }

    /// The pid of the browser process, which also leads its process group.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `--user-data-dir` of this browser (removed on drop).
    pub fn profile_dir(&self) -> PathBuf {
        self.dir.join("profile")
    }

    /// Sends one DevTools command and waits for its reply (by id), recording
    /// the events that arrive meanwhile. Returns the reply's `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.call_within(method, params, BROWSER_TIMEOUT)
    }

    fn call_within(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let deadline = Instant::now() + timeout;
        let what = format!("{method} (within {:.1} s)", timeout.as_secs_f64());
        let request = json!({ "id": id, "method": method, "params": params });
        self.set_timeouts(deadline, &what)?;
        self.ws
            .send(Message::text(request.to_string()))
            .map_err(|e| format!("{what}: sending: {e}"))?;
        loop {
            let message = self.read_message(deadline, &what)?;
            if message.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = message.get("error") {
                let text = error
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| error.to_string(), str::to_string);
                return Err(format!("{method}: {text}"));
            }
            return Ok(message.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    fn eval_within(&mut self, js: &str, timeout: Duration) -> Result<Value, String> {
        let params = json!({
            "expression": js,
            "awaitPromise": true,
            "returnByValue": true,
        });
        let result = self
            .call_within("Runtime.evaluate", params, timeout)
            .map_err(|e| format!("eval `{}`: {e}", abbreviate(js)))?;
        if let Some(details) = result.get("exceptionDetails") {
            return Err(exception_text(details));
        }
        Ok(result
            .get("result")
            .and_then(|r| r.get("value"))
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Reads one message before `deadline`, records it if it is an event,
    /// and returns it. `what` names the call in a timeout error.
    fn read_message(&mut self, deadline: Instant, what: &str) -> Result<Value, String> {
        loop {
            self.set_timeouts(deadline, what)?;
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let message: Value = serde_json::from_str(text.as_str())
                        .map_err(|e| format!("{what}: bad DevTools message: {e}: {text}"))?;
                    self.record(&message);
                    return Ok(message);
                }
                Ok(Message::Close(frame)) => {
                    return Err(format!(
                        "{what}: the browser closed the connection ({frame:?})"
                    ));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    if Instant::now() >= deadline {
                        return Err(format!("{what}: timed out"));
                    }
                }
                Err(e) => return Err(format!("{what}: reading from the browser: {e}")),
            }
        }
    }

    /// Bounds the next socket read and write by `deadline`.
    fn set_timeouts(&mut self, deadline: Instant, what: &str) -> Result<(), String> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let stream = self.ws.get_mut();
        stream
            .set_read_timeout(Some(left))
            .and_then(|()| stream.set_write_timeout(Some(left.max(Duration::from_secs(1)))))
            .map_err(|e| format!("{what}: setting socket timeouts: {e}"))
    }

    /// Records the console, exception and log events; notes page loads.
    fn record(&mut self, message: &Value) {
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            return;
        };
        let params = message.get("params").unwrap_or(&Value::Null);
        match method {
            "Page.loadEventFired" => self.loaded = true,
            "Runtime.consoleAPICalled" => {
                let level = params.get("type").and_then(Value::as_str).unwrap_or("log");
                let args = params.get("args").and_then(Value::as_array);
                let text = args
                    .map(|args| {
                        args.iter()
                            .map(remote_object_text)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                self.entries.push(Entry {
                    text: format!("{level}: {text}"),
                    error: matches!(level, "error" | "assert"),
                });
            }
            "Runtime.exceptionThrown" => {
                let details = params.get("exceptionDetails").unwrap_or(&Value::Null);
                let mut text = format!("exception: {}", exception_text(details));
                if let Some(at) = exception_location(details) {
                    text.push_str(&format!(" ({at})"));
                }
                self.entries.push(Entry { text, error: true });
            }
            "Log.entryAdded" => {
                let entry = params.get("entry").unwrap_or(&Value::Null);
                let level = entry.get("level").and_then(Value::as_str).unwrap_or("");
                if level != "error" {
                    return;
                }
                let source = entry
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or("other");
                let body = entry.get("text").and_then(Value::as_str).unwrap_or("");
                let url = entry.get("url").and_then(Value::as_str);
                // The browser asks for /favicon.ico by itself; a site without
                // one is not a page error.
                let favicon = source == "network"
                    && url.is_some_and(|u| {
                        u.split(['?', '#'])
                            .next()
                            .is_some_and(|p| p.ends_with("/favicon.ico"))
                    });
                let mut text = format!("error: {source}: {body}");
                if let Some(url) = url {
                    match entry.get("lineNumber").and_then(Value::as_u64) {
                        Some(line) => text.push_str(&format!(" ({url}:{})", line + 1)),
                        None => text.push_str(&format!(" ({url})")),
                    }
                }
                self.entries.push(Entry {
                    text,
                    error: !favicon,
                });
            }
            _ => {}
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        stop(&mut self.child, &self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A chromium that has not been connected to yet. Dropped on a failed
/// launch, it kills the process group and removes the directory; on
/// success both are taken out of it into the [`Browser`].
struct Starting {
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl Starting {
    /// Waits for `DevToolsActivePort` in the profile, then for the page
    /// target, and returns the page's WebSocket URL.
    fn page_ws_url(&mut self, profile: &Path, deadline: Instant) -> Result<String, String> {
        let port_file = profile.join("DevToolsActivePort");
        let port = loop {
            // The first line is the port; the file is complete once the
            // second (the browser target's path) is there too.
            if let Ok(text) = fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    if !path.is_empty() {
                        break port.trim().parse::<u16>().map_err(|e| {
                            format!("bad port {port:?} in {}: {e}", port_file.display())
                        })?;
                    }
                }
            }
            self.check_running()?;
            if Instant::now() >= deadline {
                return Err(format!(
                    "chromium wrote no {} within {} s",
                    port_file.display(),
                    BROWSER_TIMEOUT.as_secs()
                ));
            }
            thread::sleep(POLL);
        };
        loop {
            let body = http_get(port, "/json/list", deadline)?;
            let targets: Value = serde_json::from_str(&body)
                .map_err(|e| format!("GET /json/list: bad JSON: {e}: {body}"))?;
            let page = targets.as_array().and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t.get("type").and_then(Value::as_str) == Some("page"))
            });
            if let Some(url) = page
                .and_then(|p| p.get("webSocketDebuggerUrl"))
                .and_then(Value::as_str)
            {
                return Ok(url.to_string());
            }
            self.check_running()?;
            if Instant::now() >= deadline {
                return Err(format!(
                    "chromium has no page target: GET /json/list gave {body}"
                ));
            }
            thread::sleep(POLL);
        }
    }

    fn check_running(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Err(format!("chromium exited early ({status})")),
            Some(Err(e)) => Err(format!("waiting for chromium: {e}")),
            _ => Ok(()),
        }
    }

    /// The launch error: `reason` followed by chromium's stderr so far.
    fn fail(&mut self, reason: &str) -> String {
        if let (Some(mut child), Some(dir)) = (self.child.take(), self.dir.as_ref()) {
            stop(&mut child, dir);
        }
        let stderr = self
            .dir
            .as_ref()
            .and_then(|dir| fs::read_to_string(dir.join("stderr.log")).ok())
            .unwrap_or_default();
        format!("launching chromium: {reason}\n--- chromium stderr ---\n{stderr}")
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let (Some(mut child), Some(dir)) = (self.child.take(), self.dir.as_ref()) {
            stop(&mut child, dir);
        }
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A new, empty directory under the system temp dir.
fn fresh_dir() -> Result<PathBuf, String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "hallmark-browser-{}-{n}-{nanos:09}",
        std::process::id()
    ));
    fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A plain HTTP/1.1 GET to the DevTools endpoint on 127.0.0.1:`port`;
/// returns the body of a 200 response.
fn http_get(port: u16, path: &str, deadline: Instant) -> Result<String, String> {
    let what = format!("GET http://127.0.0.1:{port}{path}");
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, left).map_err(|e| format!("{what}: connecting: {e}"))?;
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|e| format!("{what}: setting socket timeouts: {e}"))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{what}: sending: {e}"))?;
    // Read the head, then the body by Content-Length (or to the end).
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let mut body_len: Option<(usize, usize)> = None;
    loop {
        if let Some((start, len)) = body_len {
            if raw.len() >= start + len {
                break;
            }
        }
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("{what}: reading: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if body_len.is_none() {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                body_len = len.map(|len| (end + 4, len));
            }
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{what}: incomplete response: {text:?}"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{what}: {status}: {body}"));
    }
    Ok(body.to_string())
}

/// Opens the WebSocket at `url` (`ws://127.0.0.1:PORT/...`) before `deadline`.
fn connect(url: &str, deadline: Instant) -> Result<WebSocket<TcpStream>, String> {
    let what = format!("connecting to {url}");
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("{what}: not a ws:// URL"))?;
    let addr: std::net::SocketAddr = authority
        .parse()
        .map_err(|e| format!("{what}: bad address {authority:?}: {e}"))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let stream = TcpStream::connect_timeout(&addr, left).map_err(|e| format!("{what}: {e}"))?;
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("{what}: setting socket options: {e}"))?;
    let mut attempt = tungstenite::client(url, stream);
    loop {
        match attempt {
            Ok((ws, _response)) => return Ok(ws),
            Err(HandshakeError::Interrupted(mid)) => {
                if Instant::now() >= deadline {
                    return Err(format!("{what}: handshake timed out"));
                }
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(e)) => return Err(format!("{what}: {e}")),
        }
    }
}

/// Stops chromium (`child`) and all its helpers, then returns once none of
/// them is left, not even as a zombie (bounded by a few seconds).
///
/// The zygote, renderers and utilities share the child's process group;
/// the crashpad handlers run in sessions of their own and are found by
/// `dir` (their database is under it). SIGTERM first lets chromium shut
/// down in order; SIGKILL then takes whatever is left.
fn stop(child: &mut Child, dir: &Path) {
    const SIGTERM: i32 = 15;
    const SIGKILL: i32 = 9;
    let Ok(pgid) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let strays = processes_mentioning(dir);
    signal(pgid, SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    signal(-pgid, SIGKILL);
    for &pid in &strays {
        // Only while it is still one of ours (a pid may be reused).
        if process_mentions(pid, dir) {
            signal(pid, SIGKILL);
        }
    }
    let _ = child.wait();
    // Helpers that outlived chromium were adopted by init; wait until it
    // has reaped them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (group_alive(pgid) || strays.iter().any(|&pid| process_exists(pid)))
        && Instant::now() < deadline
    {
        signal(-pgid, SIGKILL);
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to `pid` (a process group when negative).
fn signal(pid: i32, sig: i32) {
    let Ok(sig) = nix::sys::signal::Signal::try_from(sig) else {
        return;
    };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// The chromium processes (crashpad handlers included) whose command line
/// names a path under `dir`.
fn processes_mentioning(dir: &Path) -> Vec<i32> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| process_mentions(pid, dir))
        .collect()
}

/// Whether `pid` is a chromium process whose command line names a path
/// under `dir`.
fn process_mentions(pid: i32, dir: &Path) -> bool {
    let is_chromium =
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.starts_with("chrom"));
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    is_chromium
        && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            cmdline
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        })
}

fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether any process (a zombie included) of process group `pgid` remains.
fn group_alive(pgid: i32) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // After "pid (comm)": state, ppid, pgrp.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        rest.split_whitespace()
            .nth(2)
            .and_then(|p| p.parse::<i32>().ok())
            == Some(pgid)
    })
}

/// `js` cut to a length that fits in an error message.
fn abbreviate(js: &str) -> String {
    const MAX: usize = 200;
    match js.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &js[..end]),
        None => js.to_string(),
    }
}

/// JavaScript truthiness of a value returned by value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A console argument as text: strings as they are, other values as JSON,
/// objects by their description.
fn remote_object_text(object: &Value) -> String {
    match object.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(value) => value.to_string(),
        None => object
            .get("description")
            .or_else(|| object.get("unserializableValue"))
            .and_then(Value::as_str)
            .or_else(|| object.get("type").and_then(Value::as_str))
            .unwrap_or("")
            .to_string(),
    }
}

/// The description of a thrown value (an Error's message and stack), or the
/// exception's text when there is none.
fn exception_text(details: &Value) -> String {
    let exception = details.get("exception");
    let described = exception.and_then(|e| match e.get("description") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => e.get("value").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
    });
    described.unwrap_or_else(|| {
        details
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("exception")
            .to_string()
    })
}

/// `url:line` where an exception was thrown, if known.
fn exception_location(details: &Value) -> Option<String> {
    let frame = details
        .get("stackTrace")
        .and_then(|s| s.get("callFrames"))
        .and_then(Value::as_array)
        .and_then(|frames| frames.first());
    let url = details
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .or_else(|| frame.and_then(|f| f.get("url")).and_then(Value::as_str))
        .filter(|u| !u.is_empty())?;
    let line = details
        .get("lineNumber")
        .or_else(|| frame.and_then(|f| f.get("lineNumber")))
        .and_then(Value::as_u64)?;
    Some(format!("{url}:{}", line + 1))
}

/// Decodes standard base64 (as DevTools sends binary data).
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let data = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(&bytes);
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for (i, &c) in data.iter().enumerate() {
        let v = sextet(c).ok_or_else(|| format!("invalid base64 byte {c:#04x} at {i}"))?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
