//! Real-process fixtures for minerwatch's integration tests: a RandomX worker
//! (librandomx, JIT on) launched plain or disguised, an XMRig-like Stratum
//! client with a fake pool on 127.0.0.1, a regtest `monerod` that mines, and
//! benign load. Every process is wrapped in a guard that SIGKILLs and reaps
//! it on drop, also when the test panics.
//!
//! The quiet miner (a CPU quota, a pool over TLS through SOCKS5, binary and
//! config deleted) is in [`quiet`].
//!
//! Include from a test crate with `mod support;`.
#![allow(dead_code)]

pub mod corpus;
pub mod pidns;
pub mod quiet;
pub mod rsyslogd;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A mainnet address that `monerod --regtest` accepts for `start_mining`.
pub const WALLET: &str = "4ApM6hUHyYx16547k5sn3zRND22RhkaWd4JdemFQyTKQ36ixnHzMV4LRzyFP6XEdkjMTZqHsQA5DhDZWLchXHcKf4dKqcj7";

const RANDOMX_HEADER: &str = "/usr/include/randomx.h";
const SSL_HEADER: &str = "/usr/include/openssl/ssl.h";
const MONEROD: &str = "/usr/bin/monerod";

/// Panics unless the Debian packages the real-process tests need are there
/// (librandomx-dev, libssl-dev, monero, microsocks, socat, openssl). The
/// README's test command installs them.
pub fn ensure_packages() {
    for (path, package) in [
        (RANDOMX_HEADER, "librandomx-dev"),
        (SSL_HEADER, "libssl-dev"),
        (MONEROD, "monero"),
        ("/usr/bin/microsocks", "microsocks"),
        ("/usr/bin/socat", "socat"),
        ("/usr/bin/openssl", "openssl"),
    ] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing (Debian package {package}): run the test command from \
             the README, which installs what the tests need"
        );
    }
}

/// Serialises CPU-heavy tests within one test binary (the machine may have
/// two cores). Survives a panicked holder.
pub fn heavy_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

static HOST_STATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held by a test that changes what every scan sees on this host (a mount
/// over /proc/PID is a host finding in any scan running meanwhile).
pub fn host_state_change() -> std::sync::RwLockWriteGuard<'static, ()> {
    HOST_STATE.write().unwrap_or_else(|p| p.into_inner())
}

/// Held by a test that expects a clean verdict or exit code 0, so that no
/// concurrent [`host_state_change`] shows up in its report.
pub fn host_state_stable() -> std::sync::RwLockReadGuard<'static, ()> {
    HOST_STATE.read().unwrap_or_else(|p| p.into_inner())
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Compiles tests/support/rxworker.c once per test process (`cc -O2 -Wall
/// … -lrandomx -lpthread -lssl -lcrypto`) and returns the binary's path.
pub fn rxworker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        ensure_packages();
        compile_c("rxworker", &["-lrandomx", "-lpthread", "-lssl", "-lcrypto"])
    })
    .clone()
}

/// Compiles tests/support/hostile.c (the processes a hostile host throws
/// at a scanner) once per test process and returns the binary's path.
pub fn hostile_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| compile_c("hostile", &["-lpthread"]))
        .clone()
}

/// `cc -O2 -Wall -o TARGET_TMPDIR/NAME tests/support/NAME.c LIBS`.
fn compile_c(name: &str, libs: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/support/{name}.c"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    // Build under a private name, then rename: no half-written binary.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let res = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&src)
        .args(libs)
        .output()
        .expect("run cc");
    assert!(
        res.status.success(),
        "compiling {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("install {name}: {e}"));
    out
}

// ---------------------------------------------------------------- Child guard

#[derive(Default)]
struct Captured {
    stdout: String,
    stderr: String,
    stdout_eof: bool,
    stderr_eof: bool,
}

/// A child process that is SIGKILLed and reaped on drop. Its stdout and
/// stderr are drained on background threads so the pipes never fill.
pub struct Child {
    inner: std::process::Child,
    captured: Arc<(Mutex<Captured>, Condvar)>,
}

impl Child {
    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr captured,
    /// as the leader of a new process group (so that its own children,
    /// e.g. stress-ng workers, are killed with it).
    pub fn spawn(mut cmd: Command) -> io::Result<Child> {
        cmd.process_group(0);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut inner = spawn_retrying(&mut cmd)?;
        let captured = Arc::new((Mutex::new(Captured::default()), Condvar::new()));
        if let Some(out) = inner.stdout.take() {
            drain(out, captured.clone(), true);
        }
        if let Some(err) = inner.stderr.take() {
            drain(err, captured.clone(), false);
        }
        Ok(Child { inner, captured })
    }

    pub fn pid(&self) -> i32 {
        self.inner.id() as i32
    }

    /// Waits until a line of stdout contains `needle`. False on timeout or
    /// when stdout closed without it.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.captured;
        let mut cap = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if cap.stdout.lines().any(|line| line.contains(needle)) {
                return true;
            }
            let now = Instant::now();
            if cap.stdout_eof || now >= deadline {
                return false;
            }
            cap = cvar
                .wait_timeout(cap, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn stdout_so_far(&self) -> String {
        lock(&self.captured.0).stdout.clone()
    }

    pub fn stderr_so_far(&self) -> String {
        lock(&self.captured.0).stderr.clone()
    }

    /// Waits up to `timeout` for the process to exit, then for its stdout
    /// and stderr to be drained; `None` (still running) on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.inner.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        };
        let (lock, cvar) = &*self.captured;
        let mut cap = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !(cap.stdout_eof && cap.stderr_eof)
            && Instant::now() < deadline + Duration::from_secs(5)
        {
            cap = cvar
                .wait_timeout(cap, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Some(status)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.inner.try_wait(), Ok(None))
    }

    /// SIGKILL the process group and reap the child now (drop does the same).
    pub fn kill(&mut self) {
        if matches!(self.inner.try_wait(), Ok(None)) {
            // SAFETY: plain syscall. The group is the one this guard created
            // (pgid = the unreaped child's pid, so it cannot be reused yet).
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        }
        let _ = self.inner.kill();
        let _ = self.inner.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

fn drain(
    mut pipe: impl Read + Send + 'static,
    cap: Arc<(Mutex<Captured>, Condvar)>,
    is_stdout: bool,
) {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            let n = pipe.read(&mut buf).unwrap_or(0);
            let (lock, cvar) = &*cap;
            let mut c = lock.lock().unwrap_or_else(|p| p.into_inner());
            if n == 0 {
                if is_stdout {
                    c.stdout_eof = true;
                } else {
                    c.stderr_eof = true;
                }
                cvar.notify_all();
                return;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            let sink = if is_stdout {
                &mut c.stdout
            } else {
                &mut c.stderr
            };
            // Keep memory bounded for chatty children (monerod).
            if sink.len() > (4 << 20) {
                sink.clear();
            }
            sink.push_str(&text);
            cvar.notify_all();
        }
    });
}

/// `spawn`, retrying ETXTBSY: a binary we just wrote can still be open for
/// writing in a child that another test thread forked meanwhile.
fn spawn_retrying(cmd: &mut Command) -> io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

// ------------------------------------------------------------ RandomX worker

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// 256 MiB cache only; hashing within a second or two.
    #[default]
    Light,
    /// 2080 MiB dataset (+256 MiB cache); ~10-60 s of dataset init first.
    Fast,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Disguise {
    /// Run from CARGO_TARGET_TMPDIR as `rxworker`.
    #[default]
    Plain,
    /// Copy to a fresh hidden directory in /dev/shm under this name (which
    /// becomes comm), start it, delete file and directory:
    /// /proc/PID/exe reads `/dev/shm/.mw-test-…/NAME (deleted)`.
    ShmCampaign(String),
    /// argv[0] replaced, e.g. `[kworker/0:1]` (comm stays `rxworker`).
    Argv0(String),
    /// Loaded into a memfd with this name and executed from it:
    /// /proc/PID/exe reads `/memfd:NAME (deleted)`.
    Memfd(String),
}

#[derive(Clone, Debug, Default)]
pub struct WorkerOpts {
    pub mode: Mode,
    /// One hashing thread busy about this % of wall time.
    pub throttle: Option<u32>,
    pub disguise: Disguise,
    /// Placed before the worker's own options; a `--seconds N` here changes
    /// the worker's self-timeout (default 120 s), and decoys are ignored.
    pub extra_args: Vec<String>,
}

impl WorkerOpts {
    pub fn light() -> Self {
        WorkerOpts::default()
    }

    pub fn fast() -> Self {
        WorkerOpts {
            mode: Mode::Fast,
            ..WorkerOpts::default()
        }
    }
}

/// Starts the RandomX worker. Wait for it with
/// `child.wait_for_line("hashing", ..)`.
pub fn spawn_worker(opts: &WorkerOpts) -> Child {
    let bin = rxworker_bin();
    let mut args: Vec<String> = opts.extra_args.clone();
    args.push("--mode".into());
    args.push(match opts.mode {
        Mode::Light => "light".into(),
        Mode::Fast => "fast".into(),
    });
    if let Some(pct) = opts.throttle {
        args.push("--throttle".into());
        args.push(pct.to_string());
    }
    let started = match &opts.disguise {
        Disguise::Plain => {
            let mut cmd = Command::new(&bin);
            cmd.args(&args);
            Child::spawn(cmd)
        }
        Disguise::Argv0(argv0) => {
            let mut cmd = Command::new(&bin);
            cmd.arg0(argv0).args(&args);
            Child::spawn(cmd)
        }
        Disguise::ShmCampaign(name) => spawn_from_shm(&bin, name, &args),
        Disguise::Memfd(name) => spawn_from_memfd(&bin, name, &args),
    };
    started.unwrap_or_else(|e| panic!("starting rxworker ({:?}): {e}", opts.disguise))
}

fn spawn_from_shm(bin: &Path, name: &str, args: &[String]) -> io::Result<Child> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(format!(
        "/dev/shm/.mw-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir_all(&dir)?;
    let exe = dir.join(name);
    let started = fs::copy(bin, &exe)
        .and_then(|_| fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)))
        .and_then(|()| {
            let mut cmd = Command::new(&exe);
            cmd.args(args);
            // spawn() returns once exec succeeded, so deleting is safe now.
            Child::spawn(cmd)
        });
    let _ = fs::remove_file(&exe);
    let _ = fs::remove_dir(&dir);
    started
}

fn spawn_from_memfd(bin: &Path, name: &str, args: &[String]) -> io::Result<Child> {
    let image = fs::read(bin)?;
    let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: valid NUL-terminated name; the fd is owned by `file` below.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut file = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.write_all(&image)?;
    // Exec through our own fd table: the fd is CLOEXEC, so it leaks nowhere.
    let mut cmd = Command::new(format!("/proc/{}/fd/{fd}", std::process::id()));
    cmd.arg0(name).args(args);
    let child = Child::spawn(cmd);
    drop(file);
    child
}

/// An XMRig look-alike: argv `xmrig -o stratum+tcp://ADDR -u WALLET -p x
/// --donate-level 1 -t 1 --stratum ADDR`; connects to `pool_addr`, sends an
/// XMRig login and idles connected. Prints `connected` once connected.
pub fn spawn_stratum_client(pool_addr: SocketAddr, wallet: &str) -> Child {
    let addr = pool_addr.to_string();
    let mut cmd = Command::new(rxworker_bin());
    cmd.arg0("xmrig")
        .args([
            "-o",
            &format!("stratum+tcp://{addr}"),
            "-u",
            wallet,
            "-p",
            "x",
        ])
        .args(["--donate-level", "1", "-t", "1", "--stratum", &addr]);
    Child::spawn(cmd).unwrap_or_else(|e| panic!("starting stratum client: {e}"))
}

/// Benign load, e.g. `spawn_benign("stress-ng", &["--cpu", "1", "--timeout", "20s"])`.
pub fn spawn_benign(cmd: &str, args: &[&str]) -> Child {
    let mut c = Command::new(cmd);
    c.args(args);
    Child::spawn(c).unwrap_or_else(|e| panic!("starting {cmd}: {e}"))
}

// ------------------------------------------------------------------ FakePool

/// A minimal Stratum pool on 127.0.0.1: answers `login` with a job, other
/// requests with OK, keeps connections open, records the login lines.
pub struct FakePool {
    addr: SocketAddr,
    logins: Arc<Mutex<Vec<String>>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

const POOL_JOB: &str = r#"{"blob":"1010f4b5c0a506e5b0b1e0e1b1b1b5b4e1e1e5b1b4b2b1e1e1b5b4b1b2b2e5b5b4b1b1e1e000000000bb3bfb95e2f3c5a5b6b3c1b4a5c1e3b5b2a1c4b3b2b1c2e3b4a5b6c1d2e3f4a5b6c7d8e9f001","job_id":"1","target":"b88d0600","algo":"rx/0","height":1,"seed_hash":"0000000000000000000000000000000000000000000000000000000000000001"}"#;

impl FakePool {
    pub fn start() -> FakePool {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake pool");
        let addr = listener.local_addr().expect("fake pool addr");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let logins = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (logins, conns, stop) = (logins.clone(), conns.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            if let Ok(copy) = stream.try_clone() {
                                lock(&conns).push(copy);
                            }
                            let logins = logins.clone();
                            thread::spawn(move || serve_miner(stream, logins));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        FakePool {
            addr,
            logins,
            conns,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The raw `login` request lines received so far.
    pub fn logins(&self) -> Vec<String> {
        lock(&self.logins).clone()
    }

    /// Waits until at least one login arrived.
    pub fn wait_login(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !lock(&self.logins).is_empty() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        !lock(&self.logins).is_empty()
    }
}

impl Drop for FakePool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for conn in lock(&self.conns).drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
        if let Some(handle) = self.acceptor.take() {
            let _ = handle.join();
        }
    }
}

fn serve_miner(stream: TcpStream, logins: Arc<Mutex<Vec<String>>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let id = json_id(&line);
        let reply = if line.contains(r#""login""#) {
            lock(&logins).push(line.clone());
            format!(
                r#"{{"id":{id},"jsonrpc":"2.0","error":null,"result":{{"id":"1","job":{POOL_JOB},"extensions":["algo","keepalive"],"status":"OK"}}}}"#
            )
        } else {
            format!(r#"{{"id":{id},"jsonrpc":"2.0","error":null,"result":{{"status":"OK"}}}}"#)
        };
        if writer.write_all(format!("{reply}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// The numeric `"id"` of a JSON-RPC request line (1 if absent).
fn json_id(line: &str) -> u64 {
    line.find(r#""id":"#)
        .map(|i| &line[i + 5..])
        .map(|rest| {
            rest.trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(1)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------- monerod

/// `monerod --regtest --offline` bound to 127.0.0.1 with a temporary data
/// dir. Killed (SIGKILL) and its data dir removed on drop.
pub struct Monerod {
    child: Child,
    rpc_port: u16,
    p2p_port: u16,
    data_dir: tempfile::TempDir,
}

impl Monerod {
    pub fn start() -> Monerod {
        ensure_packages();
        let data_dir = tempfile::Builder::new()
            .prefix("mw-monerod-")
            .tempdir()
            .expect("monerod data dir");
        let (p2p_port, rpc_port) = (free_port(), free_port());
        let mut cmd = Command::new(MONEROD);
        cmd.args([
            "--regtest",
            "--offline",
            "--fixed-difficulty",
            "1",
            "--data-dir",
        ])
        .arg(data_dir.path())
        .args([
            "--p2p-bind-ip",
            "127.0.0.1",
            "--p2p-bind-port",
            &p2p_port.to_string(),
        ])
        .args([
            "--rpc-bind-ip",
            "127.0.0.1",
            "--rpc-bind-port",
            &rpc_port.to_string(),
        ])
        .args([
            "--non-interactive",
            "--no-igd",
            "--no-zmq",
            "--disable-dns-checkpoints",
        ])
        .args(["--check-updates", "disabled", "--log-level", "0"]);
        let child = Child::spawn(cmd).unwrap_or_else(|e| panic!("starting monerod: {e}"));
        Monerod {
            child,
            rpc_port,
            p2p_port,
            data_dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    pub fn p2p_port(&self) -> u16 {
        self.p2p_port
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The process guard (stdout/stderr capture, is_running).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Polls `get_info` until the RPC server answers OK.
    pub fn wait_rpc(&mut self, timeout: Duration) -> bool {
        let body = r#"{"jsonrpc":"2.0","id":"0","method":"get_info"}"#;
        poll(timeout, || {
            matches!(http_post(self.rpc_port, "/json_rpc", body),
                     Ok((200, resp)) if compact(&resp).contains(r#""status":"OK""#))
        })
    }

    /// POST /start_mining; Err carries the response when it is not OK.
    pub fn start_mining(&self, address: &str, threads: u32) -> Result<(), String> {
        let body = format!(
            r#"{{"do_background_mining":false,"ignore_battery":true,"miner_address":"{address}","threads_count":{threads}}}"#
        );
        match http_post(self.rpc_port, "/start_mining", &body) {
            Ok((200, resp)) if compact(&resp).contains(r#""status":"OK""#) => Ok(()),
            Ok((code, resp)) => Err(format!("start_mining: HTTP {code}: {resp}")),
            Err(e) => Err(format!("start_mining: {e}")),
        }
    }

    /// The `speed` (H/s) reported by /mining_status, if it answered.
    pub fn mining_speed(&self) -> Option<u64> {
        let (_, resp) = http_post(self.rpc_port, "/mining_status", "{}").ok()?;
        let resp = compact(&resp);
        let at = resp.find(r#""speed":"#)? + 8;
        resp[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    }

    /// Polls /mining_status until speed > 0 (RandomX dataset init comes first).
    pub fn wait_hashing(&mut self, timeout: Duration) -> bool {
        poll(timeout, || self.mining_speed().is_some_and(|s| s > 0))
    }
}

impl Drop for Monerod {
    fn drop(&mut self) {
        self.child.kill();
        // data_dir (TempDir) is removed when the fields drop.
    }
}

fn poll(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

fn compact(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// A minimal HTTP/1.1 POST to 127.0.0.1:`port`; returns (status, body).
pub fn http_post(port: u16, path: &str, body: &str) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut length = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut bytes = Vec::new();
    match length {
        Some(n) => {
            bytes.resize(n, 0);
            reader.read_exact(&mut bytes)?;
        }
        None => {
            reader.read_to_end(&mut bytes)?;
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
