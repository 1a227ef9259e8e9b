//! The systemd-journald native protocol.
//!
//! Written here rather than taken from a crate: `libsystemd`'s
//! `journal_send` and `tracing-journald` write only to the fixed
//! `/run/systemd/journal/socket`, while the agent's journald output takes its
//! socket from the config (a container given the host's journal socket at
//! another path; the tests' own socket). The protocol is a few lines of safe
//! code over `UnixDatagram`.

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::event::samples::*;

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
}
