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

use serde_json::{Map, Value};

/// Largest syslog message (header + JSON) sent on any transport: 8 KiB, the
/// default `maxMessageSize` of rsyslog and a safe UDP datagram size.
pub const MAX_SYSLOG_MESSAGE: usize = 8 * 1024;

/// Largest `MINERWATCH_JSON` value sent to journald (keeps the datagram well
/// under the default unix socket send buffer).
pub const MAX_JOURNAL_JSON: usize = 64 * 1024;

/// Largest NDJSON line the file and stdout outputs write: 32 KiB, within
/// the usual line limits of log shippers (Fluent Bit's default tail buffer
/// is 32 KiB, and it stops following a file at a longer line; Vector's file
/// source takes 100 KiB). Events are a few KiB; one above this carries a
/// process's own inflated strings (a 2 MiB command line) and is shrunk as
/// for syslog, so an intruder cannot make its alert the line a collector
/// drops. The snapshot and the bundle keep everything whole.
pub const MAX_EVENT_LINE: usize = 32 * 1024;

/// The systemd-journald native protocol socket.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

mod file;
mod journald;
mod stdout;
mod syslog;

pub use crate::report::event::{
    ECS_VERSION, Event, Fields, SYSLOG_FACILITY, Severity, render, render_line, to_ecs,
};
pub use file::FileSink;
pub use journald::JournaldSink;
pub use stdout::StdoutSink;
pub use syslog::{SyslogSink, SyslogTransport};

const APP_NAME: &str = "minerwatch";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// An event as one NDJSON line (no newline) of at most [`MAX_EVENT_LINE`]
/// bytes: as [`render_line`] writes it, shrunk by [`fit_json`] when longer.
fn event_line(event: &Event, fields: Fields) -> String {
    let line = render_line(event, fields);
    if line.len() <= MAX_EVENT_LINE {
        return line;
    }
    fit_json(&render(event, fields), MAX_EVENT_LINE)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::event::samples::*;
    use serde_json::json;

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
}
