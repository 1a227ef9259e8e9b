//! A real rsyslogd of a test's own: on free loopback ports (UDP from
//! [`free_udp_port`], TCP from `support::free_port`) and a unix socket in
//! the test's tempdir, writing what it receives to a file the test reads
//! ([`received`]). Stopped (SIGTERM, then SIGKILL) by its
//! pid alone, also on drop.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn find_rsyslogd() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec!["/usr/sbin".into(), "/sbin".into()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join("rsyslogd"))
        .find(|p| p.is_file())
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("udp port")
        .port()
}

/// Writes `DIR/rsyslog.conf`: inputs `in_udp` and `in_tcp` on 127.0.0.1 and
/// `imuxsock` on `sock`, every message to `out` as
/// "FACILITY SEVERITY APP PROCID HOST INPUT MSG".
pub fn write_conf(dir: &Path, udp: u16, tcp: u16, sock: &Path, out: &Path) {
    let work = dir.join("work");
    fs::create_dir_all(&work).expect("rsyslog workdir");
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
    fs::write(dir.join("rsyslog.conf"), conf).expect("rsyslog.conf");
}

/// An rsyslogd of our own, run with `DIR/rsyslog.conf`; SIGTERM (then
/// SIGKILL) to exactly its pid on [`Rsyslogd::stop`] and on drop.
pub struct Rsyslogd {
    child: Option<Child>,
}

impl Rsyslogd {
    /// Starts it; returns once TCP accepts and the unix socket takes
    /// datagrams.
    pub fn start(bin: &Path, dir: &Path, tcp: u16, sock: &Path) -> Rsyslogd {
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
            let unix_ok = UnixDatagram::unbound().is_ok_and(|s| s.connect(sock).is_ok());
            if tcp_ok && unix_ok {
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

    pub fn stop(&mut self) {
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

/// One message as [`write_conf`]'s template wrote it.
#[derive(Debug)]
pub struct Received {
    pub facility: u8,
    pub severity: u8,
    pub app: String,
    pub procid: String,
    pub host: String,
    pub input: String,
    pub json: Value,
}

/// What rsyslogd wrote to `out` so far from minerwatch; panics on a message
/// whose JSON is not valid.
pub fn received(out: &Path) -> Vec<Received> {
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
