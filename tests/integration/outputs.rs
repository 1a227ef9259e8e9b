//! The agent's syslog output against a real rsyslogd of the test's own,
//! listening on 127.0.0.1 (UDP, TCP) and a socket in a tempdir: the RFC 5424
//! header, the JSON intact, ECS fields, the size cap, and reconnecting after
//! rsyslogd restarts. The events are a recorded tick's
//! (tests/golden/agent-tick.ndjson).

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minerwatch::agent::output::{
    Event, Fields, JournaldSink, Severity, Sink, SyslogSink, SyslogTransport, to_ecs,
};
use serde_json::{Value, json};

/// The alert of the recorded tick, as the agent built it.
fn alert() -> Event {
    let text = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/agent-tick.ndjson"
    ))
    .expect("tests/golden/agent-tick.ndjson");
    let mut body: Value = text
        .lines()
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("the recorded alert");
    // Non-ASCII must arrive intact too.
    if let Some(argv) = body["process"]["cmdline"].as_array_mut() {
        argv.push(json!("--pass=ü"));
    }
    Event {
        kind: "alert".into(),
        severity: Severity::Alert,
        message: "miner: the recorded alert".into(),
        body,
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

fn find_rsyslogd() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec!["/usr/sbin".into(), "/sbin".into()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join("rsyslogd"))
        .find(|p| p.is_file())
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
    let bin = find_rsyslogd().expect(
        "rsyslogd is missing: run the test command from the README, which installs rsyslog",
    );
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
    let mut s = SyslogSink::connect(SyslogTransport::Udp(udp_addr), Fields::Native).expect("udp");
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
    assert_eq!(r.host, "fixture");
    assert_eq!(r.json, alert().body, "JSON intact (incl. non-ASCII)");

    // A huge event still arrives as valid, shrunk JSON within 8 KiB.
    let mut big = alert();
    big.body["process"]["cmdline"] = json!(vec!["B".repeat(500); 100]);
    big.body["seq"] = json!("big");
    s.send(&big).expect("udp big");
    let r = wait_for(&out, |r| r.json["seq"] == "big");
    assert_eq!(r.json["truncated"], true);
    assert_eq!(r.json["pid"], alert().body["pid"]);

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
