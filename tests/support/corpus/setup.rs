//! What the corpus programs need before they start: compiled sources,
//! generated inputs, a wasm module, a boot sector, database clusters, huge
//! pages reserved for PostgreSQL (and given back), load generators.

use super::*;

pub(super) const PY_FLOAT: &str = "x = 0.0\nv = [0.5] * 4096\nwhile True:\n    for i in range(4096):\n        x = x * 1.0000001 + v[i]\n        v[i] = x * 1e-9 + 0.5\n";

pub(super) const JAVA_SRC: &str = r#"public class FloatMath {
    public static void main(String[] args) {
        double[] v = new double[1 << 16];
        for (int i = 0; i < v.length; i++) v[i] = i * 0.5 + 1.0;
        java.util.ArrayList<double[]> keep = new java.util.ArrayList<>();
        double x = 0.1;
        long rounds = 0;
        while (true) {
            for (int i = 0; i < v.length; i++) {
                x = Math.sqrt(x * 1.0000001 + v[i]) * 1.5;
                v[i] = x * 0.25 + Math.sin(i);
            }
            keep.add(new double[4096]);
            if (keep.size() > 1500) keep.clear();
            if (++rounds % 100000 == 0) System.out.println(x);
        }
    }
}
"#;

pub(super) fn java(c: &Ctx, flags: &[&str]) -> Result<Prepared, String> {
    let src = c.write("FloatMath.java", JAVA_SRC)?;
    run_ok(Command::new("javac").arg("-d").arg(&c.dir).arg(&src))?;
    Prepared::script(format!(
        "exec java {} -cp {} FloatMath\n",
        flags.join(" "),
        c.path("")
    ))
}

pub(super) fn node_big_heap(c: &Ctx) -> Result<Prepared, String> {
    let js = c.write(
        "heap.js",
        r#"const arrays = [];
for (let i = 0; i < 128; i++) {
  const a = new Array(1 << 20);
  for (let j = 0; j < a.length; j++) a[j] = j * 0.5 + i;
  arrays.push(a);
}
const objects = [];
for (let i = 0; i < (1 << 20); i++) objects.push({ id: i, score: i * 0.25, tag: "t" + (i % 97) });
console.log("mw-ready");
let x = 0.1;
for (;;) {
  for (const a of arrays) {
    for (let j = 0; j < a.length; j += 16) { x = Math.sqrt(x * 1.0000001 + a[j]) * 1.5; a[j] = x; }
  }
  for (let i = 0; i < objects.length; i += 8) objects[i].score = objects[i].score * 0.5 + x;
}
"#,
    )?;
    Prepared::ready(format!("exec node --max-old-space-size=2048 {js}\n"), 90)
}

/// A WebAssembly module, assembled by hand: one 256 MiB memory (exported as
/// `mem`) and `run(n: i32) -> f64`, an f64 sqrt loop that reads and writes
/// the memory 8 bytes at a time.
pub fn wasm_module() -> Vec<u8> {
    fn section(id: u8, body: &[u8]) -> Vec<u8> {
        let mut s = vec![id];
        s.extend(leb128(body.len() as u64));
        s.extend_from_slice(body);
        s
    }
    fn f64c(v: f64) -> Vec<u8> {
        let mut b = vec![0x44];
        b.extend_from_slice(&v.to_le_bytes());
        b
    }
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // type 0: (i32) -> f64
    m.extend(section(1, &[0x01, 0x60, 0x01, 0x7f, 0x01, 0x7c]));
    // function 0 has type 0
    m.extend(section(3, &[0x01, 0x00]));
    // memory 0: min 4096 pages of 64 KiB = 256 MiB
    let mut mem = vec![0x01, 0x00];
    mem.extend(leb128(4096));
    m.extend(section(5, &mem));
    // exports: "run" = func 0, "mem" = memory 0
    m.extend(section(
        7,
        &[
            0x02, 0x03, b'r', b'u', b'n', 0x00, 0x00, 0x03, b'm', b'e', b'm', 0x02, 0x00,
        ],
    ));
    // locals: 0 n (param), 1 i, 2 addr (i32), 3 x (f64)
    let mut code = vec![0x02, 0x02, 0x7f, 0x01, 0x7c];
    code.extend(f64c(0.1));
    code.extend([0x21, 0x03]); // local.set x
    code.extend([0x03, 0x40]); // loop
    // addr = (i & 0x1ffffff) << 3
    code.extend([
        0x20, 0x01, 0x41, 0xff, 0xff, 0xff, 0x0f, 0x71, 0x41, 0x03, 0x74, 0x21, 0x02,
    ]);
    code.extend([0x20, 0x02]); // addr, for the store
    code.extend([0x20, 0x03]); // x
    code.extend(f64c(1.0000001));
    code.push(0xa2); // f64.mul
    code.extend([0x20, 0x02, 0x2b, 0x03, 0x00]); // f64.load [addr]
    code.push(0xa0); // f64.add
    code.push(0x9f); // f64.sqrt
    code.extend(f64c(1.5));
    code.push(0xa2); // f64.mul
    code.extend([0x22, 0x03]); // local.tee x
    code.extend([0x39, 0x03, 0x00]); // f64.store
    // i += 1; br_if (i < n)
    code.extend([
        0x20, 0x01, 0x41, 0x01, 0x6a, 0x22, 0x01, 0x20, 0x00, 0x49, 0x0d, 0x00,
    ]);
    code.push(0x0b); // end loop
    code.extend([0x20, 0x03]); // x
    code.push(0x0b); // end function
    let mut body = leb128(code.len() as u64);
    body.extend(code);
    let mut codesec = vec![0x01];
    codesec.extend(body);
    m.extend(section(10, &codesec));
    m
}

pub(super) fn leb128(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

pub(super) fn node_wasm(c: &Ctx) -> Result<Prepared, String> {
    let wasm = c.write("loop.wasm", wasm_module())?;
    let js = c.write(
        "wasm.js",
        format!(
            "const fs = require('fs');\n\
             const m = new WebAssembly.Module(fs.readFileSync('{wasm}'));\n\
             const inst = new WebAssembly.Instance(m, {{}});\n\
             let x = 0;\n\
             for (;;) x += inst.exports.run(50000000);\n"
        ),
    )?;
    Prepared::script(format!("exec node {js}\n"))
}

pub(super) fn erlang(c: &Ctx) -> Result<Prepared, String> {
    let src = c.write(
        "loop.erl",
        "-module(loop).\n-export([start/0]).\n\
         start() -> run(0.1).\n\
         run(X) -> run(step(X, 1000000)).\n\
         step(X, 0) -> X;\n\
         step(X, N) -> step(math:sqrt(X * 1.0000001 + 0.5) * 1.5, N - 1).\n",
    )?;
    run_ok(Command::new("erlc").arg("-o").arg(&c.dir).arg(&src))?;
    Prepared::script(format!(
        "exec erl -noshell +S 1:1 +SDcpu 1:1 +SDio 1 +A 1 -pa {} -s loop start\n",
        c.path("")
    ))
}

/// A boot sector that loops forever adding registers (`cli; xor ax,ax; mov
/// bx,1; l: add ax,bx; inc bx; jmp l`).
pub fn boot_sector() -> Vec<u8> {
    let mut s = vec![
        0xfa, 0x31, 0xc0, 0xbb, 0x01, 0x00, 0x01, 0xd8, 0x43, 0xeb, 0xfb,
    ];
    s.resize(510, 0);
    s.extend([0x55, 0xaa]);
    s
}

pub(super) fn qemu(c: &Ctx, mib: u32) -> Result<Prepared, String> {
    let img = c.write("boot.img", boot_sector())?;
    Prepared::script(format!(
        "exec qemu-system-x86_64 -accel tcg,thread=single -smp 1 -m {mib} -nic none -display none \
         -vga none -monitor none -serial none -parallel none -no-reboot \
         -drive file={img},format=raw,if=ide\n"
    ))
}

/// `vm.nr_hugepages` raised by a number of pages; the old value is written
/// back on drop.
pub struct HugePages {
    old: u64,
}

pub(super) const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

pub(super) fn read_nr_hugepages() -> Result<u64, String> {
    fs::read_to_string(NR_HUGEPAGES)
        .map_err(|e| format!("reading {NR_HUGEPAGES}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("{NR_HUGEPAGES}: {e}"))
}

impl HugePages {
    pub fn reserve(pages: u64) -> Result<HugePages, String> {
        let old = read_nr_hugepages()?;
        let want = old + pages;
        fs::write(NR_HUGEPAGES, want.to_string())
            .map_err(|e| format!("writing {want} to {NR_HUGEPAGES} (needs root): {e}"))?;
        let guard = HugePages { old };
        let got = read_nr_hugepages()?;
        if got < want {
            return Err(format!(
                "asked for {want} huge pages in {NR_HUGEPAGES}, the kernel gave {got} (memory too fragmented?)"
            ));
        }
        Ok(guard)
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        if let Err(e) = fs::write(NR_HUGEPAGES, self.old.to_string()) {
            eprintln!("could not restore {NR_HUGEPAGES} to {}: {e}", self.old);
        }
    }
}

pub(super) const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub(super) fn postgres(c: &Ctx) -> Result<Prepared, String> {
    // The server runs as the postgres user: it must reach its data dir.
    fs::set_permissions(&c.dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", c.dir.display()))?;
    let data = c.dir.join("pg");
    fs::create_dir(&data).map_err(|e| format!("mkdir {}: {e}", data.display()))?;
    run_ok(Command::new("chown").arg("postgres:postgres").arg(&data))?;
    run_ok(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data),
    )?;
    let port = free_port();
    let conf = format!(
        "\n# minerwatch corpus\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
         unix_socket_directories = '{d}'\nshared_buffers = 256MB\nhuge_pages = on\n\
         jit = on\njit_above_cost = 0\njit_inline_above_cost = 0\njit_optimize_above_cost = 0\n\
         max_parallel_workers_per_gather = 0\nmax_worker_processes = 2\nfsync = off\n",
        d = data.display()
    );
    let conf_path = data.join("postgresql.conf");
    fs::OpenOptions::new()
        .append(true)
        .open(&conf_path)
        .and_then(|mut f| io::Write::write_all(&mut f, conf.as_bytes()))
        .map_err(|e| format!("appending to {}: {e}", conf_path.display()))?;
    // PostgreSQL 15 says how many 2 MiB pages its shared memory takes.
    let out = run_ok(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-C", "shared_memory_size_in_huge_pages"]),
    )?;
    let pages: u64 = out
        .trim()
        .parse()
        .map_err(|e| format!("shared_memory_size_in_huge_pages {out:?}: {e}"))?;
    let guard = HugePages::reserve(pages)?;
    // One session runs the query over and over: one long-lived busy backend.
    let query =
        "select sum(sqrt(i::float8) * sin(i::float8)) from generate_series(1, 5000000) as i;\n";
    let sql = c.write("queries.sql", query.repeat(2000))?;
    let script = format!(
        "runuser -u postgres -- {PG_BIN}/postgres -D {data} &\n\
         for i in $(seq 300); do {PG_BIN}/pg_isready -q -h 127.0.0.1 -p {port} && break; sleep 0.1; done\n\
         echo {READY}\n\
         while :; do {PG_BIN}/psql -X -q -A -t -h 127.0.0.1 -p {port} -U postgres -d postgres -f {sql} > /dev/null || sleep 0.2; done\n",
        data = data.display()
    );
    Ok(Prepared {
        script,
        ready: Some(Duration::from_secs(60)),
        guard: Some(Box::new(guard)),
    })
}

pub(super) fn redis(c: &Ctx) -> Result<Prepared, String> {
    let port = free_port();
    Prepared::ready(
        format!(
            "redis-server --port {port} --bind 127.0.0.1 --maxmemory 2gb --maxmemory-policy allkeys-lru \
             --save '' --appendonly no --enable-debug-command yes --io-threads 1 --dir {d} --logfile '' > /dev/null &\n\
             for i in $(seq 300); do redis-cli -p {port} ping > /dev/null 2>&1 && break; sleep 0.1; done\n\
             redis-cli -p {port} debug populate 1500000 key 1000 > /dev/null\n\
             echo {READY}\n\
             while :; do redis-benchmark -p {port} --threads 1 -c 8 -P 16 -n 5000000 -r 1500000 -d 1000 -t set,get -q > /dev/null 2>&1 || sleep 0.2; done\n",
            d = c.path("")
        ),
        120,
    )
}

pub(super) fn memcached(_c: &Ctx) -> Result<Prepared, String> {
    let port = free_port();
    Prepared::ready(
        format!(
            "memcached -u nobody -l 127.0.0.1 -p {port} -U 0 -m 2048 -t 1 -c 1024 &\n\
             for i in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1; done\n\
             echo {READY}\n\
             while :; do memcaslap -s 127.0.0.1:{port} -T 1 -c 16 -X 1024 -w 64k -t 600s > /dev/null 2>&1 || sleep 0.2; done\n"
        ),
        30,
    )
}

pub(super) fn sqlite(c: &Ctx) -> Result<Prepared, String> {
    let db = c.path("big.db");
    let load = c.write(
        "load.sql",
        "PRAGMA journal_mode=OFF;\nPRAGMA synchronous=OFF;\nPRAGMA cache_size=-262144;\n\
         CREATE TABLE t(id INTEGER PRIMARY KEY, a REAL, b TEXT);\n\
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000)\n\
         INSERT INTO t SELECT x, x * 0.5, hex(randomblob(40)) FROM c;\n\
         CREATE INDEX tb ON t(b);\n",
    )?;
    let mut queries = String::from("PRAGMA cache_size=-262144;\n");
    for i in 0..20000 {
        queries.push_str(&format!(
            "SELECT sum(a * 1.0001), count(DISTINCT substr(b, 1, 5)) FROM t WHERE id % 7 <> {};\n",
            i % 7
        ));
    }
    let queries = c.write("queries.sql", queries)?;
    Prepared::ready(
        format!(
            "sqlite3 {db} < {load} > /dev/null\necho {READY}\n\
             while :; do sqlite3 {db} < {queries} > /dev/null || sleep 0.2; done\n"
        ),
        90,
    )
}

/// A C file of 3000 functions with loops, arrays and arithmetic: several
/// seconds of `-O2`.
pub fn big_c() -> String {
    let mut s = String::from("#include <math.h>\n#include <string.h>\n");
    for i in 0..3000 {
        s.push_str(&format!(
            "double f{i}(const double *v, int n, double k) {{\n\
             double acc = {i}.0; double tmp[32]; memset(tmp, 0, sizeof tmp);\n\
             for (int j = 0; j < n; j++) {{ acc = acc * k + v[j] * (j % 7); tmp[j & 31] += acc / (1.0 + j); \
             if (acc > 1e9) acc = sqrt(acc); }}\n\
             for (int j = 0; j < 32; j++) acc += tmp[j] * tmp[(j * {m}) & 31];\n\
             return acc;\n}}\n",
            m = i % 13 + 1
        ));
    }
    s
}

/// Generic Rust that keeps rustc busy for seconds (the benign.rs crate).
pub fn big_rust() -> String {
    let mut src = String::from("use std::collections::HashMap;\n");
    for i in 0..800 {
        src.push_str(&format!(
            "pub fn f{i}<T: Clone + std::fmt::Debug>(v: &[T]) -> HashMap<String, Vec<T>> {{ \
             let mut m = HashMap::new(); for (j, x) in v.iter().enumerate() {{ \
             m.entry(format!(\"{{j}}{{:?}}\", x)).or_insert_with(Vec::new).push(x.clone()); }} m }}\n\
             pub fn g{i}() -> usize {{ f{i}(&[1u64, 2, 3]).len() + f{i}(&[\"a\", \"b\"]).len() }}\n"
        ));
    }
    src
}

pub(super) const MONERO_CLIENT: &str = r#"import http.client, json, sys, time
port, wallet = int(sys.argv[1]), "WALLET"
def conn():
    return http.client.HTTPConnection("127.0.0.1", port, timeout=10)
c = conn()
def call(method, params=None):
    body = {"jsonrpc": "2.0", "id": "0", "method": method}
    if params is not None:
        body["params"] = params
    c.request("POST", "/json_rpc", json.dumps(body), {"Content-Type": "application/json"})
    return json.loads(c.getresponse().read())
def other(path):
    c.request("POST", path, "{}", {"Content-Type": "application/json"})
    return c.getresponse().read()
for i in range(600):
    try:
        if call("get_info").get("result", {}).get("status") == "OK":
            break
    except Exception:
        c = conn()
    time.sleep(0.1)
print("mw-ready", flush=True)
while True:
    try:
        call("get_info")
        call("get_block_template", {"wallet_address": wallet, "reserve_size": 60})
        call("get_last_block_header")
        call("get_block_count")
        call("get_fee_estimate")
        other("/get_height")
        other("/get_transaction_pool")
    except Exception:
        c = conn()
"#;

pub(super) fn monerod(c: &Ctx) -> Result<Prepared, String> {
    // The address is in the client's source, not on its command line: a
    // node's clients are wallets elsewhere, not processes on this host.
    let source = MONERO_CLIENT.replace("\"WALLET\"", &format!("\"{WALLET}\""));
    let client = c.write("rpc_client.py", source)?;
    let (p2p, rpc) = (free_port(), free_port());
    Prepared::ready(
        format!(
            "monerod --regtest --offline --fixed-difficulty 1 --data-dir {d} \
             --p2p-bind-ip 127.0.0.1 --p2p-bind-port {p2p} --rpc-bind-ip 127.0.0.1 --rpc-bind-port {rpc} \
             --non-interactive --no-igd --no-zmq --disable-dns-checkpoints --check-updates disabled \
             --log-level 0 > /dev/null 2>&1 &\n\
             exec python3 {client} {rpc}\n",
            d = c.path("monero")
        ),
        90,
    )
}

/// Runs `cmd`; its stdout, or an error with its stderr.
pub(super) fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
