//! RFC 5424 syslog over UDP, TCP or the local socket.

use super::*;

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

/// The send buffer asked for a TCP connection (the kernel doubles it):
/// room for dozens of events, never the megabytes autotuning would grow.
const TCP_SEND_BUFFER: usize = 32 * 1024;

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
                // A fixed send buffer: what sits in it when a collector dies
                // is lost unseen (syslog has no acknowledgement), and a
                // collector that stops reading blocks us at once, while
                // our queue holds the rest for the next connection.
                rustix::net::sockopt::set_socket_send_buffer_size(&s, TCP_SEND_BUFFER)?;
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
                    rustix::net::recv(s, b, rustix::net::RecvFlags::PEEK)
                        .map(|(n, _)| n)
                        .map_err(io::Error::from)
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
/// again. Connect timeout 2 s, write timeout 5 s, TCP send buffer
/// [`TCP_SEND_BUFFER`].
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
    let uname = rustix::system::uname();
    let name = String::from_utf8_lossy(uname.nodename().to_bytes()).into_owned();
    if name.is_empty() { "-".into() } else { name }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::event::samples::*;
    use serde_json::json;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;
    use std::time::Instant;

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
}
