//! Where the always-on agent's events go: NDJSON files, stdout, syslog
//! (RFC 5424 over UDP/TCP, or the local socket) and journald.
//!
//! Every sink takes an already-built [`Event`] and writes it in one of two
//! shapes ([`Fields`]): minerwatch's native JSON (the event body as is), or
//! Elastic Common Schema field names ([`to_ecs`]). Sinks never panic and never
//! block forever: every socket has a connect and write timeout, and every
//! failure is returned as an [`io::Error`] whose message names the sink, so
//! the agent can log it and carry on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

/// How urgent an event is (the RFC 5424 severities minerwatch uses).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// 1: a miner was found; act now.
    Alert,
    /// 3: something in minerwatch itself failed (e.g. rules failed to load).
    Error,
    /// 4: a suspicious process.
    Warning,
    /// 5: worth knowing, not alarming.
    Notice,
    /// 6: a finding resolved, a heartbeat.
    Info,
}

impl Severity {
    /// The RFC 5424 / syslog(3) severity number (also journald's PRIORITY).
    pub fn code(self) -> u8 {
        match self {
            Severity::Alert => 1,
            Severity::Error => 3,
            Severity::Warning => 4,
            Severity::Notice => 5,
            Severity::Info => 6,
        }
    }

    /// The lowercase name, as serialized ("alert", "error", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Alert => "alert",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, already built by the agent.
#[derive(Debug, Clone)]
pub struct Event {
    /// "alert", "resolved", "heartbeat", "rules_error", "dropped".
    pub kind: String,
    pub severity: Severity,
    /// One line for humans, e.g. "miner: pid 4242 kdevtmpfsi (/dev/shm/x (deleted)) score 100: rx.rounding_modes, rx.memory_layout".
    pub message: String,
    /// The full event as minerwatch's native JSON (at least "type", "time"
    /// (RFC 3339), "host" (hostname); alerts also "level", "pid", "process"
    /// {name, exe, cmdline [..], user, cpu_percent, container, ancestry, ...},
    /// "score", "signals" [{id, weight, evidence}]).
    pub body: Value,
}

/// Field names: minerwatch's own, or Elastic Common Schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fields {
    #[default]
    Native,
    Ecs,
}

/// The ECS version [`to_ecs`] follows.
pub const ECS_VERSION: &str = "8.11.0";

/// Syslog facility used for every message: daemon (3).
pub const SYSLOG_FACILITY: u8 = 3;

/// Largest syslog message (header + JSON) sent on any transport: 8 KiB, the
/// default `maxMessageSize` of rsyslog and a safe UDP datagram size.
pub const MAX_SYSLOG_MESSAGE: usize = 8 * 1024;

/// Largest `MINERWATCH_JSON` value sent to journald (keeps the datagram well
/// under the default unix socket send buffer).
pub const MAX_JOURNAL_JSON: usize = 64 * 1024;

/// The systemd-journald native protocol socket.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

const APP_NAME: &str = "minerwatch";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The event as a JSON value in the asked shape: the native body, or [`to_ecs`].
pub fn render(event: &Event, fields: Fields) -> Value {
    match fields {
        Fields::Native => event.body.clone(),
        Fields::Ecs => to_ecs(event),
    }
}

/// The event as one compact JSON line, without the trailing newline. Compact
/// JSON escapes control characters, so the line never contains a newline
/// whatever a process calls itself.
pub fn render_line(event: &Event, fields: Fields) -> String {
    match fields {
        Fields::Native => event.body.to_string(),
        Fields::Ecs => to_ecs(event).to_string(),
    }
}

/// Maps a native event to Elastic Common Schema 8.x (nested objects, fields
/// absent from the native body are omitted):
///
/// | ECS field | from |
/// |---|---|
/// | `@timestamp` | `time` (now if missing) |
/// | `message` | [`Event::message`] |
/// | `ecs.version` | [`ECS_VERSION`] |
/// | `event.kind` | `"alert"` for kind `alert`, else `"event"` |
/// | `event.category` | `["malware"]` for alerts, else `["host"]` |
/// | `event.type` | alert, heartbeat, dropped: `["info"]`; resolved: `["end"]`; rules_error: `["error"]` |
/// | `event.action` | [`Event::kind`] |
/// | `event.severity` | the RFC 5424 severity number ([`Severity::code`]; 1 = alert, 6 = info) |
/// | `event.risk_score` | `score` |
/// | `event.module` / `event.dataset` / `event.provider` | `"minerwatch"` / `"minerwatch.events"` / `"minerwatch"` |
/// | `log.level`, `log.syslog.severity.{code,name}`, `log.syslog.facility.{code,name}` | the severity; facility daemon (3) |
/// | `host.hostname`, `host.name` | `host` (a string, or an object's `hostname`) |
/// | `process.pid` | `pid` (or `process.pid`) |
/// | `process.name` / `process.executable` | `process.name` / `process.exe` |
/// | `process.args`, `process.args_count` | `process.cmdline` |
/// | `process.command_line` | `process.cmdline` joined with single spaces |
/// | `process.parent.pid`, `process.parent.name` | the first entry of `process.ancestry` |
/// | `user.name` (or `user.id` if numeric) | `process.user` |
/// | `container.id` (and `name`, `runtime`, `image.name` when given as an object) | `process.container` |
/// | `rule.name` (array), `rule.ruleset` | the `id` of each of `signals`; `"minerwatch"` |
/// | `minerwatch.*` | every other top-level native field (`type`, `level`, `score`, `signals` with weight and evidence, ...) |
/// | `minerwatch.process.*` | the other `process` fields (`cpu_percent`, `threads`, `ancestry`, raw `container`, ...) |
pub fn to_ecs(event: &Event) -> Value {
    let body = event.body.as_object().cloned().unwrap_or_default();
    let mut rest = body.clone();
    let is_alert = event.kind == "alert";

    let timestamp = match rest.remove("time") {
        Some(Value::String(s)) => s,
        _ => jiff::Timestamp::now().to_string(),
    };

    let mut ev = Map::new();
    ev.insert(
        "kind".into(),
        json!(if is_alert { "alert" } else { "event" }),
    );
    ev.insert(
        "category".into(),
        json!([if is_alert { "malware" } else { "host" }]),
    );
    let ty = match event.kind.as_str() {
        "resolved" => "end",
        "rules_error" => "error",
        _ => "info",
    };
    ev.insert("type".into(), json!([ty]));
    ev.insert("action".into(), json!(event.kind));
    ev.insert("severity".into(), json!(event.severity.code()));
    if let Some(score) = body.get("score").and_then(Value::as_f64) {
        ev.insert("risk_score".into(), json!(score));
    }
    ev.insert("module".into(), json!("minerwatch"));
    ev.insert("dataset".into(), json!("minerwatch.events"));
    ev.insert("provider".into(), json!("minerwatch"));

    let mut out = Map::new();
    out.insert("@timestamp".into(), json!(timestamp));
    out.insert("message".into(), json!(event.message));
    out.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    out.insert("event".into(), Value::Object(ev));
    out.insert(
        "log".into(),
        json!({
            "level": event.severity.as_str(),
            "syslog": {
                "severity": {"code": event.severity.code(), "name": event.severity.as_str()},
                "facility": {"code": SYSLOG_FACILITY, "name": "daemon"},
            },
        }),
    );

    let hostname = match rest.remove("host") {
        Some(Value::String(s)) => Some(s),
        Some(Value::Object(h)) => h.get("hostname").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    if let Some(h) = hostname {
        out.insert("host".into(), json!({ "hostname": h, "name": h }));
    }

    let mut process = Map::new();
    let mut process_rest = match rest.remove("process") {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    let pid = rest
        .remove("pid")
        .filter(|p| !p.is_null())
        .or_else(|| process_rest.remove("pid").filter(|p| !p.is_null()));
    if let Some(pid) = pid {
        process.insert("pid".into(), pid);
    }
    if let Some(name) = process_rest.remove("name").filter(|v| !v.is_null()) {
        process.insert("name".into(), name);
    }
    if let Some(exe) = process_rest.remove("exe").filter(|v| !v.is_null()) {
        process.insert("executable".into(), exe);
    }
    if let Some(Value::Array(args)) = process_rest.remove("cmdline") {
        let line = args
            .iter()
            .map(|a| match a {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        process.insert("command_line".into(), json!(line));
        process.insert("args_count".into(), json!(args.len()));
        process.insert("args".into(), Value::Array(args));
    }
    if let Some(Value::Array(ancestry)) = process_rest.get("ancestry")
        && let Some(Value::Object(parent)) = ancestry.first()
    {
        let mut p = Map::new();
        for key in ["pid", "name"] {
            if let Some(v) = parent.get(key).filter(|v| !v.is_null()) {
                p.insert(key.into(), v.clone());
            }
        }
        if !p.is_empty() {
            process.insert("parent".into(), Value::Object(p));
        }
    }
    match process_rest.remove("user") {
        Some(Value::String(u)) => {
            out.insert("user".into(), json!({ "name": u }));
        }
        Some(Value::Number(uid)) => {
            out.insert("user".into(), json!({ "id": uid.to_string() }));
        }
        Some(Value::Object(u)) => {
            out.insert("user".into(), Value::Object(u));
        }
        _ => {}
    }
    match process_rest.get("container") {
        Some(Value::String(id)) => {
            out.insert("container".into(), json!({ "id": id }));
        }
        Some(Value::Object(c)) => {
            let mut m = Map::new();
            for key in ["id", "name", "runtime"] {
                if let Some(v) = c.get(key).filter(|v| !v.is_null()) {
                    m.insert(key.into(), v.clone());
                }
            }
            if let Some(image) = c.get("image").filter(|v| !v.is_null()) {
                m.insert("image".into(), json!({ "name": image }));
            }
            if !m.is_empty() {
                out.insert("container".into(), Value::Object(m));
            }
        }
        _ => {}
    }
    if !process.is_empty() {
        out.insert("process".into(), Value::Object(process));
    }

    if let Some(Value::Array(signals)) = body.get("signals") {
        let ids: Vec<Value> = signals
            .iter()
            .filter_map(|s| s.get("id").cloned())
            .collect();
        if !ids.is_empty() {
            out.insert(
                "rule".into(),
                json!({ "name": ids, "ruleset": "minerwatch" }),
            );
        }
    }

    if !process_rest.is_empty() {
        rest.insert("process".into(), Value::Object(process_rest));
    }
    if !rest.is_empty() {
        out.insert("minerwatch".into(), Value::Object(rest));
    }
    Value::Object(out)
}

/// A destination for events.
pub trait Sink: Send {
    /// A short name for diagnostics, e.g. "file /var/log/minerwatch/events.ndjson".
    fn name(&self) -> String;
    /// Writes one event. Errors name the sink; the agent logs them and goes on.
    fn send(&mut self, event: &Event) -> io::Result<()>;
}

fn with_context(e: io::Error, context: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

// ---------------------------------------------------------------- file

/// NDJSON to a file, one event per line, with size-based rotation.
///
/// - When writing a line would take the file past `max_bytes`, the file is
///   renamed to `PATH.1` (`PATH.1` → `PATH.2` … up to `PATH.<keep>`, the
///   oldest deleted) and a new file is started. `max_bytes == 0` disables
///   rotation; `keep == 0` discards the old file. A single line longer than
///   `max_bytes` is still written, alone in its file.
/// - Files are created with mode 0600 (an existing file keeps its mode) and
///   opened with `O_NOFOLLOW | O_CLOEXEC | O_APPEND | O_NONBLOCK`: a symlink,
///   FIFO, device, directory or a file with more than one hard link at PATH is
///   refused with an error naming the path, and opening never blocks.
/// - If someone else moves or deletes PATH (logrotate), the next event goes
///   to a fresh PATH; the size is read from the open file on every write, so
///   `copytruncate` is also handled.
pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    fields: Fields,
    file: File,
}

impl FileSink {
    pub fn open(path: &Path, max_bytes: u64, keep: u32, fields: Fields) -> io::Result<Self> {
        let file = open_log_file(path)?;
        Ok(FileSink {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            fields,
            file,
        })
    }

    /// The path of the `n`th rotated file (`PATH.n`).
    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let ctx = |e: io::Error, what: &Path| {
            with_context(e, format_args!("rotating {}", what.display()))
        };
        if self.keep == 0 {
            remove_if_exists(&self.path).map_err(|e| ctx(e, &self.path))?;
        } else {
            let oldest = self.rotated(self.keep);
            remove_if_exists(&oldest).map_err(|e| ctx(e, &oldest))?;
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                match fs::rename(&from, self.rotated(n + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ctx(e, &from)),
                }
            }
            fs::rename(&self.path, self.rotated(1)).map_err(|e| ctx(e, &self.path))?;
        }
        self.file = open_log_file(&self.path)?;
        Ok(())
    }

    /// Reopens PATH if the file we hold is no longer the one at PATH.
    fn reopen_if_moved(&mut self) -> io::Result<()> {
        let ours = self.file.metadata()?;
        let moved = match fs::symlink_metadata(&self.path) {
            Ok(m) => m.dev() != ours.dev() || m.ino() != ours.ino(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(with_context(e, self.path.display())),
        };
        if moved {
            self.file = open_log_file(&self.path)?;
        }
        Ok(())
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn kind_of(ft: fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "a symlink"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

fn refuse(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "refusing to write events to {}: {why} (expected a regular file)",
            path.display()
        ),
    )
}

fn open_log_file(path: &Path) -> io::Result<File> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "cannot write events to {}: {} is not a directory",
                    path.display(),
                    parent.display()
                ),
            ));
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot write events to {}: directory {} does not exist or is not accessible ({e})",
                    path.display(),
                    parent.display()
                ),
            ));
        }
    }
    // Early, friendly refusal; O_NOFOLLOW and the fstat below close the race.
    if let Ok(m) = fs::symlink_metadata(path)
        && !m.file_type().is_file()
    {
        return Err(refuse(
            path,
            format_args!("it is {}", kind_of(m.file_type())),
        ));
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse(path, "it is a symlink"),
            Some(libc::ENXIO) => refuse(path, "it is a FIFO or socket"),
            _ => with_context(e, format_args!("opening {}", path.display())),
        })?;
    let m = file.metadata()?;
    if !m.file_type().is_file() {
        return Err(refuse(
            path,
            format_args!("it is {}", kind_of(m.file_type())),
        ));
    }
    if m.nlink() > 1 {
        return Err(refuse(
            path,
            format_args!("it has {} hard links", m.nlink()),
        ));
    }
    Ok(file)
}

impl Sink for FileSink {
    fn name(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn send(&mut self, event: &Event) -> io::Result<()> {
        let mut line = render_line(event, self.fields);
        line.push('\n');
        self.reopen_if_moved()?;
        let size = self.file.metadata()?.len();
        if self.max_bytes > 0 && size > 0 && size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| with_context(e, format_args!("writing {}", self.path.display())))
    }
}

// ---------------------------------------------------------------- stdout

/// NDJSON on stdout, flushed after each event. When stdout is closed (the
/// reader went away), `send` returns an error of kind
/// [`io::ErrorKind::BrokenPipe`] that the caller can ignore (Rust programs
/// ignore SIGPIPE, so the process is not killed).
pub struct StdoutSink {
    fields: Fields,
}

impl StdoutSink {
    pub fn new(fields: Fields) -> Self {
        StdoutSink { fields }
    }
}

fn write_ndjson(w: &mut impl Write, event: &Event, fields: Fields) -> io::Result<()> {
    let mut line = render_line(event, fields);
    line.push('\n');
    w.write_all(line.as_bytes())?;
    w.flush()
}

impl Sink for StdoutSink {
    fn name(&self) -> String {
        "stdout".into()
    }

    fn send(&mut self, event: &Event) -> io::Result<()> {
        write_ndjson(&mut io::stdout().lock(), event, self.fields)
    }
}

// ---------------------------------------------------------------- JSON size cap

fn clip(v: &mut Value, max_str: usize, max_arr: usize) {
    match v {
        Value::String(s) if s.len() > max_str => {
            let mut end = max_str;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push('…');
        }
        Value::Array(a) => {
            a.truncate(max_arr);
            for x in a {
                clip(x, max_str, max_arr);
            }
        }
        Value::Object(m) => {
            for x in m.values_mut() {
                clip(x, max_str, max_arr);
            }
        }
        _ => {}
    }
}

fn mark_truncated(v: &mut Value) {
    if let Value::Object(m) = v {
        match m.get_mut("minerwatch") {
            Some(Value::Object(mw)) => {
                mw.insert("truncated".into(), Value::Bool(true));
            }
            _ => {
                m.insert("truncated".into(), Value::Bool(true));
            }
        }
    }
}

/// Serializes `value` in at most `budget` bytes while keeping it valid JSON:
/// long strings are cut (ending in "…"), long arrays shortened, and
/// `"truncated": true` added (under `minerwatch` for ECS documents).
fn fit_json(value: &Value, budget: usize) -> String {
    let full = value.to_string();
    if full.len() <= budget {
        return full;
    }
    for (max_str, max_arr) in [(1024, 64), (256, 32), (64, 8), (16, 2)] {
        let mut v = value.clone();
        clip(&mut v, max_str, max_arr);
        mark_truncated(&mut v);
        let s = v.to_string();
        if s.len() <= budget {
            return s;
        }
    }
    // Keep only the top-level scalars.
    let mut m = Map::new();
    if let Value::Object(o) = value {
        for (k, v) in o {
            if !(v.is_object() || v.is_array()) {
                let mut v = v.clone();
                clip(&mut v, 64, 0);
                m.insert(k.clone(), v);
            }
        }
    }
    m.insert("truncated".into(), Value::Bool(true));
    let s = Value::Object(m).to_string();
    if s.len() <= budget {
        return s;
    }
    r#"{"truncated":true}"#.to_string()
}

// ---------------------------------------------------------------- syslog

/// Where syslog messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTransport {
    /// One datagram per event.
    Udp(SocketAddr),
    /// Octet-counting framing (RFC 6587 §3.4.1): "LEN SP MSG".
    Tcp(SocketAddr),
    /// The local syslog socket (e.g. /dev/log): a datagram socket, or a stream
    /// socket (newline-terminated messages) if the path is one.
    Unix(PathBuf),
}

impl std::fmt::Display for SyslogTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogTransport::Udp(a) => write!(f, "udp {a}"),
            SyslogTransport::Tcp(a) => write!(f, "tcp {a}"),
            SyslogTransport::Unix(p) => write!(f, "unix {}", p.display()),
        }
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    UnixDgram(UnixDatagram),
    UnixStream(UnixStream),
}

impl Conn {
    fn open(transport: &SyslogTransport) -> io::Result<Conn> {
        match transport {
            SyslogTransport::Udp(addr) => {
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let s = UdpSocket::bind(local)?;
                s.connect(addr)?;
                s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                Ok(Conn::Udp(s))
            }
            SyslogTransport::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)?;
                s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
            SyslogTransport::Unix(path) => {
                let s = UnixDatagram::unbound()?;
                match s.connect(path) {
                    Ok(()) => {
                        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                        Ok(Conn::UnixDgram(s))
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                        let s = UnixStream::connect(path)?;
                        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                        Ok(Conn::UnixStream(s))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// True if a stream's peer has closed or reset the connection. Syslog
    /// servers never send, so anything readable (EOF, an error) means the
    /// connection is dead; writing to it would "succeed" into the void.
    fn peer_closed(&self) -> bool {
        fn probe(
            set_nb: impl Fn(bool) -> io::Result<()>,
            peek: impl Fn(&mut [u8]) -> io::Result<usize>,
        ) -> bool {
            if set_nb(true).is_err() {
                return true;
            }
            let mut b = [0u8; 1];
            let closed = match peek(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            };
            set_nb(false).is_err() || closed
        }
        match self {
            Conn::Tcp(s) => probe(|nb| s.set_nonblocking(nb), |b| s.peek(b)),
            Conn::UnixStream(s) => probe(
                |nb| s.set_nonblocking(nb),
                // UnixStream has no stable peek: a 1-byte MSG_PEEK recv.
                |b| {
                    use std::os::fd::AsRawFd;
                    // SAFETY: recv into a valid 1-byte buffer on an fd we own.
                    let n = unsafe {
                        libc::recv(
                            s.as_raw_fd(),
                            b.as_mut_ptr().cast(),
                            b.len(),
                            libc::MSG_PEEK,
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                },
            ),
            _ => false,
        }
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match self {
            Conn::Udp(s) => s.send(msg).map(drop),
            Conn::UnixDgram(s) => s.send(msg).map(drop),
            Conn::Tcp(s) => {
                let mut frame = format!("{} ", msg.len()).into_bytes();
                frame.extend_from_slice(msg);
                s.write_all(&frame)
            }
            Conn::UnixStream(s) => {
                let mut frame = msg.to_vec();
                frame.push(b'\n');
                s.write_all(&frame)
            }
        }
    }
}

/// RFC 5424 syslog, facility daemon (3), `PRI = 3*8 + severity`:
///
/// `<PRI>1 TIMESTAMP HOSTNAME minerwatch PID - - MSG`
///
/// where TIMESTAMP is the event's `time` (UTC, microseconds), HOSTNAME its
/// `host` (printable ASCII; the local hostname if missing) and MSG the JSON
/// line (native or ECS). The whole message is kept within
/// [`MAX_SYSLOG_MESSAGE`] bytes; a longer event is shrunk (long strings and
/// arrays cut, `"truncated": true` added) so the JSON stays valid.
///
/// On [`SyslogTransport::Unix`] the local socket format of syslog(3) is used
/// instead, because that is what rsyslog's imuxsock, syslog-ng and journald
/// parse there: `<PRI>Mmm dd hh:mm:ss minerwatch[PID]: MSG` (local time).
///
/// Connections: `connect` fails if the destination cannot be reached. A TCP
/// connection closed by the server is noticed before writing and reopened;
/// any send error drops the connection, reconnects once and resends once; if
/// that fails the error is returned and the next `send` tries to connect
/// again. Connect timeout 2 s, write timeout 5 s.
pub struct SyslogSink {
    transport: SyslogTransport,
    fields: Fields,
    conn: Option<Conn>,
    pid: u32,
    local_hostname: String,
}

impl SyslogSink {
    pub fn connect(transport: SyslogTransport, fields: Fields) -> io::Result<Self> {
        let conn = Conn::open(&transport)
            .map_err(|e| with_context(e, format_args!("syslog {transport}")))?;
        Ok(Self::with(transport, fields, Some(conn)))
    }

    /// Like [`SyslogSink::connect`], but a destination that cannot be
    /// reached yet (a collector that starts after us) is only warned about:
    /// every `send` tries to connect until one succeeds.
    pub fn lazy(transport: SyslogTransport, fields: Fields) -> Self {
        let conn = Conn::open(&transport)
            .map_err(|e| {
                tracing::warn!("syslog {transport}: {e}; will retry on every event");
            })
            .ok();
        Self::with(transport, fields, conn)
    }

    fn with(transport: SyslogTransport, fields: Fields, conn: Option<Conn>) -> Self {
        SyslogSink {
            transport,
            fields,
            conn,
            pid: std::process::id(),
            local_hostname: local_hostname(),
        }
    }

    fn format(&self, event: &Event) -> Vec<u8> {
        let pri = SYSLOG_FACILITY * 8 + event.severity.code();
        let time = event_time(event);
        let header = match self.transport {
            SyslogTransport::Unix(_) => {
                let local = time.to_zoned(jiff::tz::TimeZone::system());
                format!(
                    "<{pri}>{} {APP_NAME}[{}]: ",
                    local.strftime("%b %e %H:%M:%S"),
                    self.pid
                )
            }
            _ => {
                let host = event
                    .body
                    .get("host")
                    .and_then(|h| h.as_str().or_else(|| h.get("hostname")?.as_str()))
                    .unwrap_or(&self.local_hostname);
                format!(
                    "<{pri}>1 {} {} {APP_NAME} {} - - ",
                    rfc5424_time(time),
                    rfc5424_hostname(host),
                    self.pid
                )
            }
        };
        let json = render(event, self.fields);
        let budget = MAX_SYSLOG_MESSAGE.saturating_sub(header.len());
        let mut msg = header.into_bytes();
        msg.extend_from_slice(fit_json(&json, budget).as_bytes());
        msg
    }
}

fn event_time(event: &Event) -> jiff::Timestamp {
    event
        .body
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(jiff::Timestamp::now)
}

/// RFC 5424 TIMESTAMP: UTC, at most 6 fractional digits.
fn rfc5424_time(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Microsecond).unwrap_or(t).to_string()
}

/// RFC 5424 HOSTNAME: 1..255 printable US-ASCII characters, or "-".
fn rfc5424_hostname(h: &str) -> String {
    let s: String = h
        .chars()
        .take(255)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    if s.is_empty() { "-".into() } else { s }
}

fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "-".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Sink for SyslogSink {
    fn name(&self) -> String {
        format!("syslog {}", self.transport)
    }

    fn send(&mut self, event: &Event) -> io::Result<()> {
        let msg = self.format(event);
        if self.conn.as_ref().is_some_and(Conn::peer_closed) {
            self.conn = None;
        }
        let first = match self.conn.as_mut() {
            Some(c) => c.send(&msg),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "not connected")),
        };
        let Err(first) = first else {
            return Ok(());
        };
        self.conn = None;
        let mut conn = Conn::open(&self.transport).map_err(|e| {
            with_context(
                e,
                format_args!("{}: send failed ({first}); reconnect failed", self.name()),
            )
        })?;
        conn.send(&msg).map_err(|e| {
            with_context(
                e,
                format_args!("{}: send failed after reconnect", self.name()),
            )
        })?;
        self.conn = Some(conn);
        Ok(())
    }
}

// ---------------------------------------------------------------- journald

/// systemd-journald's native protocol: one datagram per event to
/// [`JOURNALD_SOCKET`] (or any path, for tests) holding these fields:
///
/// | field | value |
/// |---|---|
/// | `MESSAGE` | [`Event::message`] |
/// | `PRIORITY` | [`Severity::code`] |
/// | `SYSLOG_IDENTIFIER` | `minerwatch` |
/// | `SYSLOG_FACILITY` | `3` (daemon) |
/// | `MINERWATCH_EVENT` | [`Event::kind`] |
/// | `MINERWATCH_LEVEL` | `level`, when the body has one |
/// | `MINERWATCH_PID` | `pid`, when the body has one |
/// | `MINERWATCH_SCORE` | `score`, when the body has one |
/// | `MINERWATCH_JSON` | the native JSON, at most [`MAX_JOURNAL_JSON`] bytes (shrunk as for syslog) |
///
/// A value containing a newline is sent in the protocol's binary form
/// (`KEY\n`, 64-bit little-endian length, value, `\n`). A failed send
/// reconnects once (journald restarted) and resends. Events are small, so
/// the memfd path for huge entries is not implemented.
pub struct JournaldSink {
    path: PathBuf,
    /// `None` until journald's socket could be reached.
    sock: Option<UnixDatagram>,
}

impl JournaldSink {
    pub fn connect(socket: &Path) -> io::Result<Self> {
        Ok(JournaldSink {
            path: socket.to_path_buf(),
            sock: Some(Self::open(socket)?),
        })
    }

    /// Like [`JournaldSink::connect`], but a socket that is not there yet is
    /// only warned about: every `send` tries again.
    pub fn lazy(socket: &Path) -> Self {
        JournaldSink {
            path: socket.to_path_buf(),
            sock: Self::open(socket)
                .map_err(|e| tracing::warn!("{e}; will retry on every event"))
                .ok(),
        }
    }

    /// Whether `socket` exists and is a socket (journald is running).
    pub fn available(socket: &Path) -> bool {
        fs::metadata(socket).is_ok_and(|m| m.file_type().is_socket())
    }

    fn open(socket: &Path) -> io::Result<UnixDatagram> {
        let s = UnixDatagram::unbound()?;
        s.connect(socket)
            .map_err(|e| with_context(e, format_args!("journald {}", socket.display())))?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(s)
    }
}

fn journal_field(buf: &mut Vec<u8>, key: &str, value: &str) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn journal_datagram(event: &Event) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1024);
    journal_field(&mut buf, "MESSAGE", &event.message);
    journal_field(&mut buf, "PRIORITY", &event.severity.code().to_string());
    journal_field(&mut buf, "SYSLOG_IDENTIFIER", APP_NAME);
    journal_field(&mut buf, "SYSLOG_FACILITY", &SYSLOG_FACILITY.to_string());
    journal_field(&mut buf, "MINERWATCH_EVENT", &event.kind);
    for (key, field) in [
        ("level", "MINERWATCH_LEVEL"),
        ("pid", "MINERWATCH_PID"),
        ("score", "MINERWATCH_SCORE"),
    ] {
        if let Some(v) = event.body.get(key).and_then(scalar_text) {
            journal_field(&mut buf, field, &v);
        }
    }
    journal_field(
        &mut buf,
        "MINERWATCH_JSON",
        &fit_json(&event.body, MAX_JOURNAL_JSON),
    );
    buf
}

impl Sink for JournaldSink {
    fn name(&self) -> String {
        format!("journald {}", self.path.display())
    }

    fn send(&mut self, event: &Event) -> io::Result<()> {
        let dgram = journal_datagram(event);
        let first = match &self.sock {
            Some(sock) => sock.send(&dgram).map(|_| ()),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "not connected")),
        };
        if let Err(first) = first {
            self.sock = None;
            let sock = Self::open(&self.path).map_err(|e| {
                with_context(
                    e,
                    format_args!("{}: send failed ({first}); reconnect failed", self.name()),
                )
            })?;
            sock.send(&dgram)
                .map_err(|e| with_context(e, self.name()))?;
            self.sock = Some(sock);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    fn alert() -> Event {
        Event {
            kind: "alert".into(),
            severity: Severity::Alert,
            message: "miner: pid 4242 kdevtmpfsi (/dev/shm/x (deleted)) score 100: rx.rounding_modes, rx.memory_layout".into(),
            body: json!({
                "type": "alert",
                "time": "2024-05-01T12:00:00.123456789Z",
                "host": "web-01",
                "level": "miner",
                "pid": 4242,
                "start_time": 123456,
                "process": {
                    "name": "kdevtmpfsi",
                    "exe": "/dev/shm/x (deleted)",
                    "cmdline": ["kdevtmpfsi", "-o", "pool.example:3333", "--pass=ü"],
                    "user": "www-data",
                    "cpu_percent": 196.5,
                    "threads": 3,
                    "container": "3f2a9c",
                    "ancestry": [{"pid": 1200, "name": "php-fpm"}, {"pid": 1, "name": "systemd"}]
                },
                "score": 100,
                "signals": [
                    {"id": "rx.rounding_modes", "weight": 60, "evidence": "3 FPU rounding modes seen across 5 samples"},
                    {"id": "rx.memory_layout", "weight": 50, "evidence": "anonymous rw mapping of 2080 MiB at 7f00; RandomX dataset size"}
                ]
            }),
        }
    }

    fn heartbeat(n: u64) -> Event {
        Event {
            kind: "heartbeat".into(),
            severity: Severity::Info,
            message: format!("heartbeat {n}"),
            body: json!({"type": "heartbeat", "time": "2024-05-01T12:00:00Z", "host": "web-01", "seq": n}),
        }
    }

    // ---------------- ECS / stdout

    #[test]
    fn ecs_mapping_of_an_alert() {
        let e = to_ecs(&alert());
        assert_eq!(e["@timestamp"], "2024-05-01T12:00:00.123456789Z");
        assert_eq!(e["message"], alert().message);
        assert_eq!(e["ecs"]["version"], ECS_VERSION);
        assert_eq!(e["event"]["kind"], "alert");
        assert_eq!(e["event"]["category"], json!(["malware"]));
        assert_eq!(e["event"]["type"], json!(["info"]));
        assert_eq!(e["event"]["severity"], 1);
        assert_eq!(e["event"]["action"], "alert");
        assert_eq!(e["event"]["module"], "minerwatch");
        assert_eq!(e["event"]["dataset"], "minerwatch.events");
        assert_eq!(e["event"]["risk_score"], 100.0);
        assert_eq!(e["log"]["level"], "alert");
        assert_eq!(e["log"]["syslog"]["facility"]["code"], 3);
        assert_eq!(e["host"]["hostname"], "web-01");
        assert_eq!(e["process"]["pid"], 4242);
        assert_eq!(e["process"]["name"], "kdevtmpfsi");
        assert_eq!(e["process"]["executable"], "/dev/shm/x (deleted)");
        assert_eq!(
            e["process"]["command_line"],
            "kdevtmpfsi -o pool.example:3333 --pass=ü"
        );
        assert_eq!(e["process"]["args"][2], "pool.example:3333");
        assert_eq!(e["process"]["args_count"], 4);
        assert_eq!(e["process"]["parent"]["pid"], 1200);
        assert_eq!(e["process"]["parent"]["name"], "php-fpm");
        assert_eq!(e["user"]["name"], "www-data");
        assert_eq!(e["container"]["id"], "3f2a9c");
        assert_eq!(
            e["rule"]["name"],
            json!(["rx.rounding_modes", "rx.memory_layout"])
        );
        let mw = &e["minerwatch"];
        assert_eq!(mw["level"], "miner");
        assert_eq!(mw["score"], 100);
        assert_eq!(mw["type"], "alert");
        assert_eq!(mw["start_time"], 123456);
        assert_eq!(
            mw["signals"][1]["evidence"],
            alert().body["signals"][1]["evidence"]
        );
        assert_eq!(mw["process"]["cpu_percent"], 196.5);
        assert_eq!(mw["process"]["threads"], 3);
        // Mapped fields are not duplicated under minerwatch.*.
        for k in ["time", "host", "pid"] {
            assert!(mw.get(k).is_none(), "minerwatch.{k} should be mapped away");
        }
        for k in ["name", "exe", "cmdline", "user"] {
            assert!(mw["process"].get(k).is_none(), "minerwatch.process.{k}");
        }
    }

    #[test]
    fn ecs_mapping_of_other_kinds() {
        let e = to_ecs(&heartbeat(7));
        assert_eq!(e["event"]["kind"], "event");
        assert_eq!(e["event"]["category"], json!(["host"]));
        assert_eq!(e["event"]["type"], json!(["info"]));
        assert_eq!(e["event"]["severity"], 6);
        assert_eq!(e["event"]["action"], "heartbeat");
        assert_eq!(e["minerwatch"]["seq"], 7);
        assert!(e.get("process").is_none() && e.get("rule").is_none());

        let resolved = Event {
            kind: "resolved".into(),
            severity: Severity::Info,
            message: "resolved: pid 4242".into(),
            body: json!({"type": "resolved", "time": "2024-05-01T12:00:00Z", "host": {"hostname": "h"},
                         "pid": 4242, "process": {"name": "x", "user": 33, "container": {"id": "c1", "runtime": "docker"}}}),
        };
        let e = to_ecs(&resolved);
        assert_eq!(e["event"]["type"], json!(["end"]));
        assert_eq!(e["host"]["hostname"], "h");
        assert_eq!(e["user"]["id"], "33");
        assert_eq!(e["container"], json!({"id": "c1", "runtime": "docker"}));
        assert_eq!(e["process"]["pid"], 4242);

        let rules = Event {
            kind: "rules_error".into(),
            severity: Severity::Error,
            message: "rules: bad.yar line 3".into(),
            body: json!({"type": "rules_error"}),
        };
        let e = to_ecs(&rules);
        assert_eq!(e["event"]["type"], json!(["error"]));
        assert_eq!(e["event"]["severity"], 3);
        assert!(
            e["@timestamp"]
                .as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok())
        );
    }

    #[test]
    fn ndjson_native_and_ecs_lines() {
        let mut out = Vec::new();
        write_ndjson(&mut out, &alert(), Fields::Native).expect("write");
        write_ndjson(&mut out, &alert(), Fields::Ecs).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(text.ends_with('\n'));
        let native: Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(native, alert().body);
        let ecs: Value = serde_json::from_str(lines[1]).expect("json");
        assert_eq!(ecs, to_ecs(&alert()));
    }

    #[test]
    fn newline_in_a_process_name_stays_on_one_line() {
        let mut e = alert();
        e.body["process"]["name"] = json!("x\n{\"type\":\"fake\"}");
        for f in [Fields::Native, Fields::Ecs] {
            let line = render_line(&e, f);
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn closed_stdout_is_broken_pipe() {
        let mut fds = [0i32; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: we own both fds; close the read end, wrap the write end.
        unsafe { libc::close(fds[0]) };
        let mut w = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        let err = write_ndjson(&mut w, &alert(), Fields::Native).expect_err("EPIPE");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(StdoutSink::new(Fields::Ecs).name(), "stdout");
    }

    // ---------------- file

    fn read_lines(p: &Path) -> Vec<Value> {
        fs::read_to_string(p)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("valid JSON line"))
            .collect()
    }

    #[test]
    fn file_lines_are_json_and_mode_is_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.ndjson");
        let mut sink = FileSink::open(&path, 0, 3, Fields::Native).expect("open");
        assert_eq!(sink.name(), format!("file {}", path.display()));
        sink.send(&alert()).expect("send");
        sink.send(&heartbeat(1)).expect("send");
        let lines = read_lines(&path);
        assert_eq!(lines, vec![alert().body, heartbeat(1).body]);
        let mode = fs::metadata(&path).expect("meta").mode() & 0o7777;
        assert_eq!(mode, 0o600);

        let mut ecs = FileSink::open(&path, 0, 3, Fields::Ecs).expect("reopen");
        ecs.send(&alert()).expect("send");
        assert_eq!(read_lines(&path)[2]["event"]["kind"], "alert");
    }

    #[test]
    fn file_rotation_keeps_order_and_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ev.ndjson");
        let line_len = render_line(&heartbeat(10), Fields::Native).len() as u64 + 1;
        // Room for exactly 3 lines (seq 10..=99 all have the same length).
        let max = line_len * 3;
        let mut sink = FileSink::open(&path, max, 2, Fields::Native).expect("open");
        for n in 10..=20 {
            sink.send(&heartbeat(n)).expect("send");
        }
        let seqs = |p: &Path| -> Vec<u64> {
            read_lines(p)
                .iter()
                .map(|v| v["seq"].as_u64().expect("seq"))
                .collect()
        };
        // 11 events, 3 per file: [10 11 12] [13 14 15] [16 17 18] [19 20]
        assert_eq!(seqs(&path), vec![19, 20]);
        assert_eq!(seqs(&sink.rotated(1)), vec![16, 17, 18]);
        assert_eq!(seqs(&sink.rotated(2)), vec![13, 14, 15]);
        assert!(!sink.rotated(3).exists(), "only `keep` old files are kept");
        for p in [path.clone(), sink.rotated(1), sink.rotated(2)] {
            assert!(fs::metadata(&p).expect("meta").len() <= max);
            assert_eq!(fs::metadata(&p).expect("meta").mode() & 0o777, 0o600);
        }

        // keep = 0: the old file is simply discarded.
        let p0 = dir.path().join("zero.ndjson");
        let mut sink0 = FileSink::open(&p0, max, 0, Fields::Native).expect("open");
        for n in 10..=14 {
            sink0.send(&heartbeat(n)).expect("send");
        }
        assert_eq!(seqs(&p0), vec![13, 14]);
        assert!(!sink0.rotated(1).exists());
    }

    #[test]
    fn file_reopens_after_external_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ev.ndjson");
        let mut sink = FileSink::open(&path, 0, 1, Fields::Native).expect("open");
        sink.send(&heartbeat(1)).expect("send");
        fs::rename(&path, dir.path().join("moved")).expect("mv");
        sink.send(&heartbeat(2)).expect("send");
        assert_eq!(read_lines(&path), vec![heartbeat(2).body]);
    }

    #[test]
    fn file_refuses_symlink_and_leaves_target_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        fs::write(&target, "keep me\n").expect("write");
        let path = dir.path().join("events.ndjson");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let err = FileSink::open(&path, 0, 1, Fields::Native)
            .err()
            .expect("symlink must be refused");
        let msg = err.to_string();
        assert!(msg.contains("symlink"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(fs::read_to_string(&target).expect("read"), "keep me\n");

        // A dangling symlink is refused too (and nothing is created).
        let dangling = dir.path().join("dangling");
        let missing = dir.path().join("missing");
        std::os::unix::fs::symlink(&missing, &dangling).expect("symlink");
        assert!(FileSink::open(&dangling, 0, 1, Fields::Native).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn file_refuses_fifo_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.ndjson");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("cstring");
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let r = FileSink::open(&p, 0, 1, Fields::Native).map(drop);
            let _ = tx.send(r);
        });
        let r = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("FileSink::open blocked on a FIFO");
        let msg = r.expect_err("FIFO must be refused").to_string();
        assert!(
            msg.contains("FIFO") && msg.contains(&path.display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn file_refuses_directory_hardlink_and_missing_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).expect("mkdir");
        let msg = FileSink::open(&sub, 0, 1, Fields::Native)
            .err()
            .expect("dir refused")
            .to_string();
        assert!(msg.contains("directory"), "{msg}");

        let a = dir.path().join("a");
        fs::write(&a, "").expect("write");
        let b = dir.path().join("b");
        fs::hard_link(&a, &b).expect("link");
        let msg = FileSink::open(&b, 0, 1, Fields::Native)
            .err()
            .expect("hard link refused")
            .to_string();
        assert!(msg.contains("hard links"), "{msg}");

        let nowhere = dir.path().join("no/such/dir/events.ndjson");
        let msg = FileSink::open(&nowhere, 0, 1, Fields::Native)
            .err()
            .expect("missing dir")
            .to_string();
        assert!(msg.contains("does not exist"), "{msg}");
    }

    // ---------------- size cap

    #[test]
    fn oversized_json_is_shrunk_but_valid() {
        let mut e = alert();
        e.body["process"]["cmdline"] = json!(vec!["A".repeat(300); 200]);
        e.body["signals"][0]["evidence"] = json!("é".repeat(5000));
        for v in [e.body.clone(), to_ecs(&e)] {
            let s = fit_json(&v, 4000);
            assert!(s.len() <= 4000, "{}", s.len());
            let back: Value = serde_json::from_str(&s).expect("still JSON");
            let flag = back
                .get("minerwatch")
                .and_then(|m| m.get("truncated"))
                .or_else(|| back.get("truncated"));
            assert_eq!(flag, Some(&json!(true)));
        }
        let small = fit_json(&e.body, 100);
        assert!(small.len() <= 100);
        let back: Value = serde_json::from_str(&small).expect("JSON");
        assert_eq!(back["truncated"], true);
        assert_eq!(fit_json(&alert().body, 1 << 20), alert().body.to_string());
    }

    // ---------------- syslog formatting

    #[test]
    fn rfc5424_header() {
        let sink = SyslogSink {
            transport: SyslogTransport::Udp(([127, 0, 0, 1], 9).into()),
            fields: Fields::Native,
            conn: None,
            pid: 321,
            local_hostname: "local".into(),
        };
        let msg = String::from_utf8(sink.format(&alert())).expect("utf8");
        let expected = format!(
            "<25>1 2024-05-01T12:00:00.123457Z web-01 minerwatch 321 - - {}",
            alert().body
        );
        assert_eq!(msg, expected);

        let mut odd = heartbeat(1);
        odd.body["host"] = json!("bad host\tname");
        odd.body["time"] = json!("2024-05-01T12:00:00+02:00");
        let msg = String::from_utf8(sink.format(&odd)).expect("utf8");
        assert!(
            msg.starts_with("<30>1 2024-05-01T10:00:00Z bad_host_name minerwatch 321 - - {"),
            "{msg}"
        );
        odd.body.as_object_mut().expect("obj").remove("host");
        let msg = String::from_utf8(sink.format(&odd)).expect("utf8");
        assert!(msg.contains(" local minerwatch 321 "), "{msg}");

        let local = SyslogSink {
            transport: SyslogTransport::Unix("/dev/null".into()),
            ..sink
        };
        let msg = String::from_utf8(local.format(&alert())).expect("utf8");
        assert!(msg.starts_with("<25>"), "{msg}");
        assert!(msg.contains(" minerwatch[321]: {"), "{msg}");
    }

    // ---------------- TCP reconnect (plain listener)

    fn read_frame(s: &mut TcpStream) -> io::Result<String> {
        let mut len = Vec::new();
        let mut b = [0u8; 1];
        loop {
            s.read_exact(&mut b)?;
            if b[0] == b' ' {
                break;
            }
            len.push(b[0]);
        }
        let n: usize = String::from_utf8_lossy(&len)
            .parse()
            .map_err(|_| io::Error::other("bad frame length"))?;
        let mut msg = vec![0u8; n];
        s.read_exact(&mut msg)?;
        String::from_utf8(msg).map_err(io::Error::other)
    }

    fn accept(l: &TcpListener) -> TcpStream {
        let (s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    }

    /// The listener is closed and restarted between two sends: the second
    /// send returns Ok and arrives on the new listener (the sink sees the
    /// server's close before writing and reconnects). While nothing listens,
    /// send returns an error; the next send after the server is back works.
    #[test]
    fn tcp_reconnects_after_listener_restart() {
        let l1 = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l1.local_addr().expect("addr");
        let mut sink =
            SyslogSink::connect(SyslogTransport::Tcp(addr), Fields::Native).expect("connect");
        sink.send(&heartbeat(1)).expect("first send");
        let mut c1 = accept(&l1);
        assert!(
            read_frame(&mut c1)
                .expect("frame")
                .ends_with(&heartbeat(1).body.to_string())
        );
        drop(c1);
        drop(l1);

        let l2 = TcpListener::bind(addr).expect("rebind");
        sink.send(&heartbeat(2)).expect("send after restart");
        let mut c2 = accept(&l2);
        let f = read_frame(&mut c2).expect("frame");
        assert!(f.starts_with("<30>1 "), "{f}");
        assert!(f.ends_with(&heartbeat(2).body.to_string()), "{f}");
        drop(c2);
        drop(l2);

        // Server down: an error, not a hang.
        let t = Instant::now();
        let err = sink.send(&heartbeat(3)).expect_err("nobody listening");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(err.to_string().contains("syslog tcp"), "{err}");
        // Server back: the next send reconnects.
        let l3 = TcpListener::bind(addr).expect("rebind");
        sink.send(&heartbeat(4)).expect("send after server is back");
        let mut c3 = accept(&l3);
        assert!(
            read_frame(&mut c3)
                .expect("frame")
                .ends_with(&heartbeat(4).body.to_string())
        );
    }

    #[test]
    fn connect_errors_name_the_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("nope.sock");
        let err = SyslogSink::connect(SyslogTransport::Unix(p.clone()), Fields::Native)
            .err()
            .expect("no socket");
        assert!(err.to_string().contains(&p.display().to_string()), "{err}");
        assert!(!JournaldSink::available(&p));
        assert!(JournaldSink::connect(&p).is_err());
    }

    #[test]
    fn unix_stream_socket_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("stream.sock");
        let l = std::os::unix::net::UnixListener::bind(&p).expect("bind");
        let mut sink =
            SyslogSink::connect(SyslogTransport::Unix(p), Fields::Native).expect("connect");
        sink.send(&alert()).expect("send");
        let (s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read");
        assert!(line.starts_with("<25>"), "{line}");
        assert!(line.ends_with(&format!("{}\n", alert().body)), "{line}");
    }

    // ---------------- journald

    fn parse_journal(mut d: &[u8]) -> Vec<(String, Vec<u8>, bool)> {
        let mut out = Vec::new();
        while !d.is_empty() {
            let nl = d.iter().position(|&b| b == b'\n').expect("line end");
            let line = &d[..nl];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).expect("key"),
                    line[eq + 1..].to_vec(),
                    false,
                ));
                d = &d[nl + 1..];
            } else {
                let key = String::from_utf8(line.to_vec()).expect("key");
                let rest = &d[nl + 1..];
                let len_bytes: [u8; 8] = rest[..8].try_into().expect("8 bytes");
                let len = u64::from_le_bytes(len_bytes) as usize;
                let value = rest[8..8 + len].to_vec();
                assert_eq!(rest[8 + len], b'\n', "binary field ends with a newline");
                out.push((key, value, true));
                d = &rest[8 + len + 1..];
            }
        }
        out
    }

    #[test]
    fn journald_native_protocol() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("journal.sock");
        let server = UnixDatagram::bind(&p).expect("bind");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(JournaldSink::available(&p));
        let mut sink = JournaldSink::connect(&p).expect("connect");
        assert_eq!(sink.name(), format!("journald {}", p.display()));

        let mut e = alert();
        e.message = "miner: pid 4242\nsecond line".into();
        sink.send(&e).expect("send");
        let mut buf = vec![0u8; 1 << 17];
        let n = server.recv(&mut buf).expect("recv");
        let fields = parse_journal(&buf[..n]);
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _, _)| key == k)
                .unwrap_or_else(|| panic!("field {k} missing"))
        };
        let (_, msg, binary) = get("MESSAGE");
        assert!(*binary, "a value with a newline uses the binary form");
        assert_eq!(msg, b"miner: pid 4242\nsecond line");
        let text = |k: &str| {
            let (_, v, bin) = get(k);
            assert!(!bin, "{k} should be KEY=VALUE");
            String::from_utf8(v.clone()).expect("utf8")
        };
        assert_eq!(text("PRIORITY"), "1");
        assert_eq!(text("SYSLOG_IDENTIFIER"), "minerwatch");
        assert_eq!(text("SYSLOG_FACILITY"), "3");
        assert_eq!(text("MINERWATCH_EVENT"), "alert");
        assert_eq!(text("MINERWATCH_LEVEL"), "miner");
        assert_eq!(text("MINERWATCH_PID"), "4242");
        assert_eq!(text("MINERWATCH_SCORE"), "100");
        let body: Value = serde_json::from_str(&text("MINERWATCH_JSON")).expect("json");
        assert_eq!(body, e.body);
        for (k, _, _) in &fields {
            assert!(
                !k.starts_with('_')
                    && k.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "bad journal field name {k}"
            );
        }

        // A heartbeat has no level/pid; journald restarts (socket recreated).
        drop(server);
        fs::remove_file(&p).expect("rm");
        let server = UnixDatagram::bind(&p).expect("rebind");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        sink.send(&heartbeat(5)).expect("send after restart");
        let n = server.recv(&mut buf).expect("recv");
        let fields = parse_journal(&buf[..n]);
        assert!(fields.iter().all(|(k, _, _)| k != "MINERWATCH_PID"));
        assert!(fields.iter().any(|(k, v, _)| k == "PRIORITY" && v == b"6"));
        assert!(
            fields
                .iter()
                .any(|(k, v, _)| k == "MESSAGE" && v == b"heartbeat 5")
        );
    }

    // ---------------- real rsyslogd

    fn find_rsyslogd() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = vec!["/usr/sbin".into(), "/sbin".into()];
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        dirs.into_iter()
            .map(|d| d.join("rsyslogd"))
            .find(|p| p.is_file())
    }

    /// rsyslogd, installing it with apt-get when missing (root only).
    fn ensure_rsyslogd() -> Result<PathBuf, String> {
        if let Some(p) = find_rsyslogd() {
            return Ok(p);
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("rsyslogd is not installed and we are not root to apt-get it".into());
        }
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !apt(&["install", "-y", "-q", "rsyslog"]) {
            apt(&["update", "-q"]);
            apt(&["install", "-y", "-q", "rsyslog"]);
        }
        find_rsyslogd()
            .ok_or_else(|| "`apt-get install -y rsyslog` did not provide rsyslogd".into())
    }

    fn free_udp_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("udp port")
            .port()
    }

    fn free_tcp_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("tcp port")
            .port()
    }

    /// An rsyslogd of our own, on loopback ports and a socket in a tempdir;
    /// SIGTERM (then SIGKILL) to exactly its pid on drop.
    struct Rsyslogd {
        child: Option<Child>,
    }

    impl Rsyslogd {
        fn start(bin: &Path, dir: &Path, tcp: u16, sock: &Path) -> Rsyslogd {
            let conf = dir.join("rsyslog.conf");
            let mut child = Command::new(bin)
                .arg("-n")
                .arg("-f")
                .arg(&conf)
                .arg("-i")
                .arg(dir.join("rsyslogd.pid"))
                .stdin(Stdio::null())
                .stdout(File::create(dir.join("rsyslogd.stdout")).expect("stdout file"))
                .stderr(File::create(dir.join("rsyslogd.stderr")).expect("stderr file"))
                .spawn()
                .expect("spawn rsyslogd");
            // Ready when the unix socket exists and TCP accepts.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "rsyslogd exited early ({status}): {}",
                        fs::read_to_string(dir.join("rsyslogd.stderr")).unwrap_or_default()
                    );
                }
                let tcp_ok = TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], tcp)),
                    Duration::from_millis(200),
                )
                .is_ok();
                if tcp_ok && JournaldSink::available(sock) {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("rsyslogd did not become ready");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Rsyslogd { child: Some(child) }
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                if let Ok(pid) = i32::try_from(child.id()) {
                    // SAFETY: signalling the pid of the child we spawned and
                    // have not yet reaped.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for Rsyslogd {
        fn drop(&mut self) {
            self.stop();
        }
    }

    #[derive(Debug)]
    struct Received {
        facility: u8,
        severity: u8,
        app: String,
        procid: String,
        host: String,
        input: String,
        json: Value,
    }

    fn received(out: &Path) -> Vec<Received> {
        let text = fs::read_to_string(out).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.splitn(7, ' ').collect();
                if f.len() < 7 || f[2] != "minerwatch" {
                    return None;
                }
                Some(Received {
                    facility: f[0].parse().ok()?,
                    severity: f[1].parse().ok()?,
                    app: f[2].into(),
                    procid: f[3].into(),
                    host: f[4].into(),
                    input: f[5].into(),
                    json: serde_json::from_str(f[6].trim_start())
                        .unwrap_or_else(|e| panic!("rsyslog received invalid JSON ({e}): {l}")),
                })
            })
            .collect()
    }

    fn wait_for(out: &Path, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = received(out).into_iter().find(&pred) {
                return r;
            }
            if Instant::now() > deadline {
                panic!(
                    "message never reached rsyslog; got:\n{}",
                    fs::read_to_string(out).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn syslog_against_real_rsyslogd() {
        let bin = match ensure_rsyslogd() {
            Ok(b) => b,
            Err(why) => {
                eprintln!("SKIPPED syslog_against_real_rsyslogd: {why}");
                return;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        fs::create_dir(&work).expect("workdir");
        let out = dir.path().join("out.log");
        let sock = dir.path().join("log.sock");
        let (udp, tcp) = (free_udp_port(), free_tcp_port());
        let conf = format!(
            r#"global(workDirectory="{work}")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
input(type="imudp" address="127.0.0.1" port="{udp}" name="in_udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" name="in_tcp")
input(type="imuxsock" socket="{sock}" createPath="off")
template(name="mw" type="string" string="%syslogfacility% %syslogseverity% %app-name% %procid% %hostname% %inputname% %msg%\n")
action(type="omfile" file="{out}" template="mw")
"#,
            work = work.display(),
            sock = sock.display(),
            out = out.display(),
        );
        fs::write(dir.path().join("rsyslog.conf"), conf).expect("conf");
        let mut rsyslogd = Rsyslogd::start(&bin, dir.path(), tcp, &sock);
        let pid = std::process::id().to_string();

        // UDP: probe until the input is up (datagrams sent earlier are lost).
        let udp_addr: SocketAddr = ([127, 0, 0, 1], udp).into();
        let mut s =
            SyslogSink::connect(SyslogTransport::Udp(udp_addr), Fields::Native).expect("udp");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            s.send(&heartbeat(0)).expect("udp probe");
            std::thread::sleep(Duration::from_millis(100));
            if received(&out).iter().any(|r| r.json["seq"] == 0) {
                break;
            }
            assert!(Instant::now() < deadline, "rsyslog imudp never answered");
        }
        s.send(&alert()).expect("udp alert");
        let r = wait_for(&out, |r| r.input == "in_udp" && r.json["type"] == "alert");
        assert_eq!((r.facility, r.severity), (3, 1));
        assert_eq!(r.app, "minerwatch");
        assert_eq!(r.procid, pid);
        assert_eq!(r.host, "web-01");
        assert_eq!(r.json, alert().body, "JSON intact (incl. non-ASCII)");

        // A huge event still arrives as valid, shrunk JSON within 8 KiB.
        let mut big = alert();
        big.body["process"]["cmdline"] = json!(vec!["B".repeat(500); 100]);
        big.body["seq"] = json!("big");
        s.send(&big).expect("udp big");
        let r = wait_for(&out, |r| r.json["seq"] == "big");
        assert_eq!(r.json["truncated"], true);
        assert_eq!(r.json["pid"], 4242);

        // TCP, ECS fields.
        let tcp_addr: SocketAddr = ([127, 0, 0, 1], tcp).into();
        let mut t = SyslogSink::connect(SyslogTransport::Tcp(tcp_addr), Fields::Ecs).expect("tcp");
        let mut warn = alert();
        warn.severity = Severity::Warning;
        t.send(&warn).expect("tcp send");
        let r = wait_for(&out, |r| {
            r.input == "in_tcp" && r.json["event"]["severity"] == 4
        });
        assert_eq!((r.facility, r.severity), (3, 4));
        assert_eq!(r.procid, pid);
        assert_eq!(r.json, to_ecs(&warn));

        // Unix socket (local syslog(3) format).
        let mut u =
            SyslogSink::connect(SyslogTransport::Unix(sock.clone()), Fields::Native).expect("unix");
        u.send(&heartbeat(42)).expect("unix send");
        let r = wait_for(&out, |r| r.input == "imuxsock" && r.json["seq"] == 42);
        assert_eq!((r.facility, r.severity), (3, 6));
        assert_eq!(r.app, "minerwatch");
        assert_eq!(r.procid, pid);
        assert_eq!(r.json, heartbeat(42).body);

        // Restart rsyslogd between two TCP sends: the second still arrives.
        t.send(&heartbeat(100)).expect("tcp before restart");
        wait_for(&out, |r| {
            r.input == "in_tcp" && r.json["minerwatch"]["seq"] == 100
        });
        rsyslogd.stop();
        let _rsyslogd = Rsyslogd::start(&bin, dir.path(), tcp, &sock);
        t.send(&heartbeat(101)).expect("tcp after restart");
        let r = wait_for(&out, |r| {
            r.input == "in_tcp" && r.json["minerwatch"]["seq"] == 101
        });
        assert_eq!((r.facility, r.severity), (3, 6));
        // The unix socket was recreated by the new rsyslogd: reconnect too.
        u.send(&heartbeat(102)).expect("unix after restart");
        wait_for(&out, |r| r.input == "imuxsock" && r.json["seq"] == 102);
    }
}
