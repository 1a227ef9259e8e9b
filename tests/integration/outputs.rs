//! The agent's syslog output against a real rsyslogd of the test's own,
//! listening on 127.0.0.1 (UDP, TCP) and a socket in a tempdir: the RFC 5424
//! header, the JSON intact, ECS fields, the size cap, and reconnecting after
//! rsyslogd restarts. The events are a recorded tick's
//! (tests/golden/agent-tick.ndjson).

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use minerwatch::agent::output::{
    Event, Fields, Severity, Sink, SyslogSink, SyslogTransport, to_ecs,
};
use serde_json::{Value, json};

use crate::support::rsyslogd::{self, Received, Rsyslogd, find_rsyslogd, free_udp_port, received};

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
    let out = dir.path().join("out.log");
    let sock = dir.path().join("log.sock");
    let (udp, tcp) = (free_udp_port(), crate::support::free_port());
    rsyslogd::write_conf(dir.path(), udp, tcp, &sock, &out);
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
