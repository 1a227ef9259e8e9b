//! A *quiet* miner and the real parts it is made of:
//!
//! - [`CpuQuota`]: a cgroup of our own with a CPU quota (cgroup v2 `cpu.max`
//!   or v1 `cpu.cfs_quota_us`), removed on drop;
//! - [`TlsFront`]: the [`FakePool`] behind `socat openssl-listen` (TLS, a
//!   self-signed certificate), and [`ProxiedPool`]: that plus `microsocks`
//!   (SOCKS5), so a miner reaches the pool as worker → SOCKS5 → TLS → pool,
//!   all on 127.0.0.1, each on a free port;
//! - [`QuietFiles`]: the worker binary copied under an innocent name with its
//!   XMRig-style config (pool over TLS through the SOCKS5 proxy), and the
//!   `sh` command line that joins the cgroup and execs it;
//! - [`QuietMiner`]: all of it started: the RandomX worker hashing inside the
//!   quota, its binary, config and directory deleted, its pool session
//!   kept alive through the proxy chain.
//!
//! ```ignore
//! let miner = support::quiet::QuietMiner::start(25);
//! let report = scan_pids(&[miner.pid()], &[]);
//! ```
//!
//! Every child is a [`Child`] guard (killed and reaped on drop, also on
//! panic); a struct's fields drop processes before the cgroup they ran in.

use std::fs;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{Child, FakePool, WALLET, free_port, rxworker_bin};

/// The name the quiet worker runs under.
pub const QUIET_NAME: &str = "php-fpm";

/// How long each part may take to come up (a quota-limited worker needs a
/// few seconds for its RandomX cache).
const START: Duration = Duration::from_secs(60);

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Single-quotes `text` for `sh`.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

// ------------------------------------------------------------------ CpuQuota

/// A cgroup made for the test, `mw-test-<pid>-<n>`, whose members together
/// get at most `percent` % of one core (period 100 ms). On drop, members
/// still in it are moved back to the parent and the cgroup is removed; no
/// other cgroup is touched (on cgroup v2, `+cpu` may be added to the
/// parent's `cgroup.subtree_control` and is left there).
#[derive(Debug)]
pub struct CpuQuota {
    dir: PathBuf,
    parent: PathBuf,
}

#[derive(Debug)]
struct Mounts {
    v2: Option<PathBuf>,
    v1_cpu: Option<PathBuf>,
}

/// The cgroup mounts from /proc/self/mountinfo: the v2 hierarchy and the v1
/// hierarchy that has the cpu controller.
fn cgroup_mounts() -> io::Result<Mounts> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    let mut m = Mounts {
        v2: None,
        v1_cpu: None,
    };
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let (fstype, _source, opts) = (r.next(), r.next(), r.next().unwrap_or(""));
        match fstype {
            Some("cgroup2") if m.v2.is_none() => m.v2 = Some(PathBuf::from(point)),
            Some("cgroup") if m.v1_cpu.is_none() && opts.split(',').any(|o| o == "cpu") => {
                m.v1_cpu = Some(PathBuf::from(point));
            }
            _ => {}
        }
    }
    Ok(m)
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("writing {text:?} to {}: {e}", path.display()))
}

impl CpuQuota {
    /// Makes the cgroup (v2 when its hierarchy has the cpu controller, else
    /// v1's cpu hierarchy). The error names what is missing.
    pub fn new(percent: u32) -> Result<CpuQuota, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        assert!((1..=100).contains(&percent), "quota {percent} %");
        let name = format!(
            "mw-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let quota = percent * 1000; // µs per 100 000 µs period
        let mounts = cgroup_mounts().map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let mut why = Vec::new();
        match &mounts.v2 {
            Some(root) => match Self::new_v2(root, &name, quota) {
                Ok(q) => return Ok(q),
                Err(e) => why.push(format!("cgroup v2: {e}")),
            },
            None => why.push("cgroup v2: no cgroup2 hierarchy mounted".into()),
        }
        match &mounts.v1_cpu {
            Some(root) => match Self::new_v1(root, &name, quota) {
                Ok(q) => return Ok(q),
                Err(e) => why.push(format!("cgroup v1: {e}")),
            },
            None => why.push("cgroup v1: no hierarchy with the cpu controller mounted".into()),
        }
        Err(format!(
            "cannot make a CPU-quota cgroup (needs root and the cpu controller): {}",
            why.join("; ")
        ))
    }

    fn new_v2(root: &Path, name: &str, quota: u32) -> Result<CpuQuota, String> {
        let controllers = fs::read_to_string(root.join("cgroup.controllers"))
            .map_err(|e| format!("{}/cgroup.controllers: {e}", root.display()))?;
        if !controllers.split_whitespace().any(|c| c == "cpu") {
            return Err(format!(
                "no cpu controller at {} (cgroup.controllers: {:?})",
                root.display(),
                controllers.trim()
            ));
        }
        let subtree = root.join("cgroup.subtree_control");
        let enabled =
            fs::read_to_string(&subtree).map_err(|e| format!("{}: {e}", subtree.display()))?;
        if !enabled.split_whitespace().any(|c| c == "cpu") {
            write_file(&subtree, "+cpu")?;
        }
        let q = Self::make(root, name)?;
        write_file(&q.dir.join("cpu.max"), &format!("{quota} 100000"))?;
        Ok(q)
    }

    fn new_v1(root: &Path, name: &str, quota: u32) -> Result<CpuQuota, String> {
        let q = Self::make(root, name)?;
        write_file(&q.dir.join("cpu.cfs_period_us"), "100000")?;
        write_file(&q.dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        Ok(q)
    }

    /// mkdir; from here on Drop removes it, also when setting it up fails.
    fn make(root: &Path, name: &str) -> Result<CpuQuota, String> {
        let dir = root.join(name);
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        Ok(CpuQuota {
            dir,
            parent: root.to_path_buf(),
        })
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its `cgroup.procs`: write a pid (`echo $$ > …`) to move a process in.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> io::Result<()> {
        fs::write(self.procs_file(), pid.to_string())
    }

    /// The pids in it now (as this process's PID namespace sees them).
    pub fn members(&self) -> Vec<i32> {
        fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for pid in self.members() {
                let _ = fs::write(self.parent.join("cgroup.procs"), pid.to_string());
            }
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if Instant::now() >= deadline => {
                    eprintln!("could not remove cgroup {}: {e}", self.dir.display());
                    return;
                }
                // EBUSY while a killed member is still exiting.
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

// ------------------------------------------------------ TLS front and SOCKS5

/// Waits until `addr` accepts a TCP connection, while `child` runs.
fn wait_accepting(addr: SocketAddr, child: &mut Child, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if !child.is_running() {
            return Err(format!("{what} exited: {}", child.stderr_so_far()));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} does not accept on {addr}: {}",
                child.stderr_so_far()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The [`FakePool`] (plain Stratum) behind a TLS front:
/// `socat openssl-listen:PORT,bind=127.0.0.1,…,cert=PEM,verify=0
/// tcp:127.0.0.1:POOLPORT` with a fresh self-signed certificate.
pub struct TlsFront {
    socat: Child,
    pool: FakePool,
    addr: SocketAddr,
    _certs: tempfile::TempDir,
}

impl TlsFront {
    /// Starts pool and front; returns once the front accepts.
    pub fn start() -> TlsFront {
        let pool = FakePool::start();
        let certs = tempfile::Builder::new()
            .prefix("mw-tls-")
            .tempdir()
            .expect("certificate dir");
        let (key, cert) = (certs.path().join("key.pem"), certs.path().join("cert.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", "/CN=localhost", "-days", "1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap_or_else(|e| panic!("running openssl req (apt-get install openssl): {e}"));
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = certs.path().join("front.pem");
        // socat's cert= takes certificate and key in one file.
        let joined = fs::read(&cert).and_then(|mut both| {
            both.extend(fs::read(&key)?);
            fs::write(&pem, both)
        });
        if let Err(e) = joined {
            panic!("writing {}: {e}", pem.display());
        }
        let addr = localhost(free_port());
        let mut cmd = Command::new("socat");
        cmd.arg(format!(
            "openssl-listen:{},bind=127.0.0.1,reuseaddr,fork,cert={},verify=0",
            addr.port(),
            pem.display()
        ))
        .arg(format!("tcp:{}", pool.addr()));
        let mut socat = Child::spawn(cmd)
            .unwrap_or_else(|e| panic!("starting socat (apt-get install socat): {e}"));
        if let Err(e) = wait_accepting(addr, &mut socat, "socat TLS front") {
            panic!("{e}");
        }
        TlsFront {
            socat,
            pool,
            addr,
            _certs: certs,
        }
    }

    /// Where the TLS front listens (the pool URL a miner names).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The plain Stratum pool behind it.
    pub fn pool(&self) -> &FakePool {
        &self.pool
    }

    /// The socat process.
    pub fn socat(&mut self) -> &mut Child {
        &mut self.socat
    }
}

/// `microsocks -i 127.0.0.1 -p PORT` (SOCKS5, no auth), started; returns
/// once it accepts.
pub fn start_socks5(port: u16) -> Child {
    let mut cmd = Command::new("microsocks");
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    let mut socks = Child::spawn(cmd)
        .unwrap_or_else(|e| panic!("starting microsocks (apt-get install microsocks): {e}"));
    if let Err(e) = wait_accepting(localhost(port), &mut socks, "microsocks") {
        panic!("{e}");
    }
    socks
}

/// A pool reached as SOCKS5 (microsocks) → TLS (socat) → [`FakePool`], each
/// on a free port of 127.0.0.1.
pub struct ProxiedPool {
    socks: Child,
    socks_addr: SocketAddr,
    front: TlsFront,
}

impl ProxiedPool {
    /// Starts the chain; returns once every port accepts.
    pub fn start() -> ProxiedPool {
        let front = TlsFront::start();
        let port = free_port();
        let socks = start_socks5(port);
        ProxiedPool {
            socks,
            socks_addr: localhost(port),
            front,
        }
    }

    /// The SOCKS5 proxy's address: the only peer a miner using it has.
    pub fn socks_addr(&self) -> SocketAddr {
        self.socks_addr
    }

    /// The TLS front's address: the pool URL in the miner's config.
    pub fn front_addr(&self) -> SocketAddr {
        self.front.addr()
    }

    /// The plain Stratum pool's address, behind the front.
    pub fn pool_addr(&self) -> SocketAddr {
        self.front.pool().addr()
    }

    /// The login lines the pool received.
    pub fn logins(&self) -> Vec<String> {
        self.front.pool().logins()
    }

    /// The microsocks process.
    pub fn socks(&mut self) -> &mut Child {
        &mut self.socks
    }
}

// ------------------------------------------------------- the quiet miner

/// The quiet worker's files in a fresh directory under the cargo target's
/// tmp dir (`target/tmp/mw-quiet-…`: not a staging directory, not hidden,
/// unless `CARGO_TARGET_DIR` points into /tmp): the worker binary as
/// [`QUIET_NAME`] and `config.json`, an XMRig-style config naming the pool
/// `pool` (a TLS front) reached through the SOCKS5 proxy `socks5`, made by
/// `rxworker --print-config` (so no XMRig text is in our sources). Removed
/// on drop if still there.
pub struct QuietFiles {
    dir: tempfile::TempDir,
    exe: PathBuf,
    config: PathBuf,
}

impl QuietFiles {
    pub fn write(pool: SocketAddr, socks5: SocketAddr, wallet: &str) -> io::Result<QuietFiles> {
        let bin = rxworker_bin();
        let dir = tempfile::Builder::new()
            .prefix("mw-quiet-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        let out = Command::new(&bin)
            .arg("--print-config")
            .arg(pool.to_string())
            .arg(socks5.to_string())
            .arg(wallet)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "rxworker --print-config: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let config = dir.path().join("config.json");
        fs::File::create(&config)?.write_all(&out.stdout)?;
        let exe = dir.path().join(QUIET_NAME);
        fs::copy(&bin, &exe)?;
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
        Ok(QuietFiles { dir, exe, config })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn exe(&self) -> &Path {
        &self.exe
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    /// A `sh -c` script that moves itself into `quota`'s cgroup and then
    /// execs the worker (`-c config.json --mode light --seconds SECS`), so
    /// the worker is limited from its first instruction and keeps the pid.
    pub fn shell_command(&self, quota: &CpuQuota, seconds: u32) -> String {
        format!(
            "echo $$ > {procs} && exec {exe} -c {cfg} --mode light --seconds {seconds}",
            procs = sh_quote(&quota.procs_file().to_string_lossy()),
            exe = sh_quote(&self.exe.to_string_lossy()),
            cfg = sh_quote(&self.config.to_string_lossy()),
        )
    }

    /// Deletes binary, config and directory (once the worker has read them).
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_file(&self.exe)?;
        fs::remove_file(&self.config)?;
        fs::remove_dir(self.dir.path())
    }
}

/// The quiet RandomX worker (light mode, JIT, the main thread hashing):
/// limited by a [`CpuQuota`], named [`QUIET_NAME`], its binary, config and
/// directory deleted, mining on a [`ProxiedPool`] over TLS through SOCKS5,
/// with the XMRig login and config text on its heap.
pub struct QuietMiner {
    // Drop order: the worker dies before its pool and its cgroup go.
    worker: Child,
    pool: ProxiedPool,
    files: QuietFiles,
    quota: CpuQuota,
}

impl QuietMiner {
    /// Starts it at `percent` % of one core; returns once the pool got its
    /// login, the files are gone and it hashes. Panics with the worker's
    /// stderr when a step fails.
    pub fn start(percent: u32) -> QuietMiner {
        let quota = CpuQuota::new(percent).unwrap_or_else(|e| panic!("{e}"));
        let pool = ProxiedPool::start();
        let files = QuietFiles::write(pool.front_addr(), pool.socks_addr(), WALLET)
            .unwrap_or_else(|e| panic!("writing the quiet worker's files: {e}"));
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(files.shell_command(&quota, 300));
        let mut worker = Child::spawn(cmd).unwrap_or_else(|e| panic!("starting sh: {e}"));
        assert!(
            worker.wait_for_line("pool-ok", START),
            "quiet worker never logged in through the proxy chain: {}",
            worker.stderr_so_far()
        );
        files
            .remove()
            .unwrap_or_else(|e| panic!("deleting the quiet worker's files: {e}"));
        assert!(
            worker.wait_for_line("hashing", START),
            "quiet worker never hashed: {}",
            worker.stderr_so_far()
        );
        assert!(
            quota.members().contains(&worker.pid()),
            "worker {} is not in {}",
            worker.pid(),
            quota.dir().display()
        );
        QuietMiner {
            worker,
            pool,
            files,
            quota,
        }
    }

    pub fn pid(&self) -> i32 {
        self.worker.pid()
    }

    /// The proxy chain (its addresses and the pool's logins).
    pub fn pool(&self) -> &ProxiedPool {
        &self.pool
    }

    /// The login lines the pool received from it.
    pub fn logins(&self) -> Vec<String> {
        self.pool.logins()
    }

    /// Where its (deleted) binary was.
    pub fn exe_path(&self) -> &Path {
        self.files.exe()
    }

    /// Where its (deleted) config was.
    pub fn config_path(&self) -> &Path {
        self.files.config()
    }

    pub fn quota(&self) -> &CpuQuota {
        &self.quota
    }

    /// The worker's process guard (stdout/stderr, is_running).
    pub fn worker(&mut self) -> &mut Child {
        &mut self.worker
    }
}

// ----------------------------------------------------------- verification

/// The peers of `pid`'s established TCP connections: the rows of
/// /proc/PID/net/tcp{,6} whose socket inode is one of its fds.
pub fn established_peers(pid: i32) -> io::Result<Vec<SocketAddr>> {
    let mut inodes = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let link = fs::read_link(fd?.path()).unwrap_or_default();
        let link = link.to_string_lossy();
        if let Some(ino) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            inodes.push(ino.to_string());
        }
    }
    let mut peers = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for row in text.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "01" || !inodes.iter().any(|i| i == f[9]) {
                continue;
            }
            if let Some(peer) = parse_proc_addr(f[2]) {
                peers.push(peer);
            }
        }
    }
    Ok(peers)
}

/// "0100007F:1F90" (or the 32-hex-digit IPv6 form) as a socket address.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    // Each 32-bit word is in host (little-endian) order.
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// utime + stime of `pid` in clock ticks (USER_HZ, 100 on x86-64).
pub fn cpu_ticks(pid: i32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised comm: state is field 3; utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other(format!("odd /proc/{pid}/stat: {stat}")))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    match (field(14), field(15)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(io::Error::other(format!("odd /proc/{pid}/stat: {stat}"))),
    }
}

/// The share of one core `pid` used over `over` (1.0 = a whole core).
pub fn cpu_share(pid: i32, over: Duration) -> io::Result<f64> {
    let t0 = Instant::now();
    let a = cpu_ticks(pid)?;
    thread::sleep(over);
    let b = cpu_ticks(pid)?;
    Ok((b - a) as f64 / 100.0 / t0.elapsed().as_secs_f64())
}
