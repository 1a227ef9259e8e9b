//! The corpus, in report order: each program with its class, packages and
//! the script that makes it busy on one core.

use super::setup::*;
use super::*;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The corpus, in report order.
pub fn entries() -> Vec<Entry> {
    use Class::*;
    vec![
        // ------------------------------------------------------ JIT runtimes
        Entry {
            name: "java-256m",
            class: Jit,
            debs: &["openjdk-17-jdk-headless"],
            needs: &["java", "javac"],
            busy: "`java -Xms256m -Xmx256m` (default GC: Serial on one core), double-precision sqrt/sin loop over an array plus allocation churn",
            warmup: ms(1500),
            prepare: |c| java(c, &["-Xms256m", "-Xmx256m"]),
        },
        Entry {
            name: "java-256m-g1",
            class: Jit,
            debs: &["openjdk-17-jdk-headless"],
            needs: &["java", "javac"],
            busy: "`java -Xms256m -Xmx256m -XX:+UseG1GC` (the server default on 2+ cores), same float loop",
            warmup: ms(1500),
            prepare: |c| java(c, &["-Xms256m", "-Xmx256m", "-XX:+UseG1GC"]),
        },
        Entry {
            name: "java-256m-parallelgc",
            class: Jit,
            debs: &["openjdk-17-jdk-headless"],
            needs: &["java", "javac"],
            busy: "`java -Xms256m -Xmx256m -XX:+UseParallelGC`, same float loop",
            warmup: ms(1500),
            prepare: |c| java(c, &["-Xms256m", "-Xmx256m", "-XX:+UseParallelGC"]),
        },
        Entry {
            name: "java-256m-serialgc",
            class: Jit,
            debs: &["openjdk-17-jdk-headless"],
            needs: &["java", "javac"],
            busy: "`java -Xms256m -Xmx256m -XX:+UseSerialGC`, same float loop",
            warmup: ms(1500),
            prepare: |c| java(c, &["-Xms256m", "-Xmx256m", "-XX:+UseSerialGC"]),
        },
        Entry {
            name: "java-264m",
            class: Jit,
            debs: &["openjdk-17-jdk-headless"],
            needs: &["java", "javac"],
            busy: "`java -Xmx264m` (RandomX cache plus a little), same float loop",
            warmup: ms(1500),
            prepare: |c| java(c, &["-Xmx264m"]),
        },
        Entry {
            name: "java-1g",
            class: Jit,
            debs: &["openjdk-17-jdk-headless"],
            needs: &["java", "javac"],
            busy: "`java -Xms1g -Xmx1g`, same float loop",
            warmup: ms(1500),
            prepare: |c| java(c, &["-Xms1g", "-Xmx1g"]),
        },
        Entry {
            name: "java-2g-pretouch",
            class: Jit,
            debs: &["openjdk-17-jdk-headless"],
            needs: &["java", "javac"],
            busy: "`java -Xms2g -Xmx2g -XX:+AlwaysPreTouch` (a 2 GiB heap, all touched at start), same float loop",
            warmup: ms(3000),
            prepare: |c| java(c, &["-Xms2g", "-Xmx2g", "-XX:+AlwaysPreTouch"]),
        },
        Entry {
            name: "node-jit-float",
            class: Jit,
            debs: &["nodejs"],
            needs: &["node"],
            busy: "`node -e` sqrt float loop (V8 TurboFan)",
            warmup: ms(800),
            prepare: |_| {
                Prepared::script(
                    "exec node -e 'let x = 0.1; for (;;) { x = Math.sqrt(x * 1.0000001 + 0.5) * 1.5; }'\n"
                        .into(),
                )
            },
        },
        Entry {
            name: "node-2g-heap",
            class: Jit,
            debs: &["nodejs"],
            needs: &["node"],
            busy: "`node --max-old-space-size=2048` holding ~1 GiB (128 arrays of 1 Mi doubles and 1 Mi small objects) while computing over them",
            warmup: ms(1000),
            prepare: node_big_heap,
        },
        Entry {
            name: "node-wasm",
            class: Jit,
            debs: &["nodejs"],
            needs: &["node"],
            busy: "node running a hand-assembled WebAssembly module (256 MiB linear memory, f64 sqrt loop over it; Liftoff then TurboFan)",
            warmup: ms(1000),
            prepare: node_wasm,
        },
        Entry {
            name: "pypy3",
            class: Jit,
            debs: &["pypy3"],
            needs: &["pypy3"],
            busy: "`pypy3` float loop with list updates (PyPy's tracing JIT)",
            warmup: ms(1000),
            prepare: |c| {
                let py = c.write("loop.py", PY_FLOAT)?;
                Prepared::script(format!("exec pypy3 {py}\n"))
            },
        },
        Entry {
            name: "luajit",
            class: Jit,
            debs: &["luajit"],
            needs: &["luajit"],
            busy: "`luajit -e` sqrt float loop",
            warmup: ms(800),
            prepare: |_| {
                Prepared::script(
                    "exec luajit -e 'local x = 0.1 while true do x = math.sqrt(x * 1.0000001 + 0.5) * 1.5 end'\n"
                        .into(),
                )
            },
        },
        Entry {
            name: "php-opcache-jit",
            class: Jit,
            debs: &["php8.2-cli", "php8.2-opcache"],
            needs: &["php"],
            busy: "PHP 8.2 CLI `-d opcache.enable_cli=1 -d opcache.jit=tracing -d opcache.jit_buffer_size=256M`, sqrt float loop",
            warmup: ms(800),
            prepare: |_| {
                Prepared::script(
                    "exec php -d opcache.enable_cli=1 -d opcache.jit=tracing -d opcache.jit_buffer_size=256M \
                     -r '$x = 0.1; while (true) { $x = sqrt($x * 1.0000001 + 0.5) * 1.5; }'\n"
                        .into(),
                )
            },
        },
        Entry {
            name: "erlang-jit",
            class: Jit,
            debs: &["erlang-base"],
            needs: &["erl", "erlc"],
            busy: "Erlang/OTP 25 (BEAM JIT) `erl -noshell +S 1:1`, a compiled module's float recursion",
            warmup: ms(1500),
            prepare: erlang,
        },
        Entry {
            name: "qemu-tcg-256m",
            class: Jit,
            debs: &["qemu-system-x86"],
            needs: &["qemu-system-x86_64"],
            busy: "`qemu-system-x86_64 -accel tcg -m 256 -nic none -display none` booting a generated boot sector that loops (TCG JIT)",
            warmup: ms(1500),
            prepare: |c| qemu(c, 256),
        },
        Entry {
            name: "qemu-tcg-2048m",
            class: Jit,
            debs: &["qemu-system-x86"],
            needs: &["qemu-system-x86_64"],
            busy: "the same with `-m 2048`",
            warmup: ms(1500),
            prepare: |c| qemu(c, 2048),
        },
        // ------------------------------------------------- big-memory engines
        Entry {
            name: "postgres-hugepages-jit",
            class: BigMemory,
            debs: &["postgresql-15", "postgresql-client-15"],
            needs: &[
                "/usr/lib/postgresql/15/bin/postgres",
                "/usr/lib/postgresql/15/bin/initdb",
                "/usr/lib/postgresql/15/bin/psql",
                "/usr/lib/postgresql/15/lib/llvmjit.so",
                "runuser",
            ],
            busy: "PostgreSQL 15 on 127.0.0.1, shared_buffers=256MB with huge_pages=on (2 MiB pages reserved for it), jit=on with jit_above_cost=0; one psql session runs sum(sqrt(i)*sin(i)) over generate_series(1, 5e6) again and again (one long-lived busy backend)",
            warmup: ms(1500),
            prepare: postgres,
        },
        Entry {
            name: "redis-2gb",
            class: BigMemory,
            debs: &["redis-server", "redis-tools"],
            needs: &["redis-server", "redis-cli", "redis-benchmark"],
            busy: "redis-server `--maxmemory 2gb` filled with 1.5 M keys of 1000 B (DEBUG POPULATE, ~1.5 GiB), redis-benchmark (1 thread, pipelined SET/GET) on the same core",
            warmup: ms(1000),
            prepare: redis,
        },
        Entry {
            name: "memcached-2048m",
            class: BigMemory,
            debs: &["memcached", "libmemcached-tools"],
            needs: &["memcached", "memcaslap"],
            busy: "`memcached -m 2048 -t 1` on 127.0.0.1 under memaslap (1 thread, 16 connections, 1 KiB values, 9:1 get/set) on the same core",
            warmup: ms(1500),
            prepare: memcached,
        },
        Entry {
            name: "sqlite-256m-cache",
            class: BigMemory,
            debs: &["sqlite3"],
            needs: &["sqlite3"],
            busy: "sqlite3 with `PRAGMA cache_size=-262144` (256 MiB) over a 2 M-row table, aggregate queries in a loop",
            warmup: ms(1000),
            prepare: sqlite,
        },
        Entry {
            name: "xz-9e",
            class: BigMemory,
            debs: &["xz-utils"],
            needs: &["xz", "base64"],
            busy: "`xz -9e -T1` of a base64 stream of /dev/urandom (674 MiB of match-finder memory)",
            warmup: ms(1000),
            prepare: |_| {
                Prepared::script("base64 /dev/urandom | exec xz -9e -T1 -c > /dev/null\n".into())
            },
        },
        Entry {
            name: "zstd-ultra-22",
            class: BigMemory,
            debs: &["zstd"],
            needs: &["zstd", "base64"],
            busy: "`zstd --ultra -22 -T1` of a base64 stream of /dev/urandom",
            warmup: ms(1000),
            prepare: |_| {
                Prepared::script(
                    "base64 /dev/urandom | exec zstd -q --ultra -22 -T1 -c > /dev/null\n".into(),
                )
            },
        },
        Entry {
            name: "zstd-19-long31",
            class: BigMemory,
            debs: &["zstd"],
            needs: &["zstd", "base64"],
            busy: "`zstd -19 --long=31 -T1` (a 2 GiB window) of a base64 stream of /dev/urandom",
            warmup: ms(1000),
            prepare: |_| {
                Prepared::script(
                    "base64 /dev/urandom | exec zstd -q -19 --long=31 -T1 -c > /dev/null\n".into(),
                )
            },
        },
        // -------------------------------------------- hash and crypto crunchers
        Entry {
            name: "hashcat-cpu",
            class: Crypto,
            debs: &["hashcat", "pocl-opencl-icd"],
            needs: &["hashcat", "/etc/OpenCL/vendors/pocl.icd"],
            busy: "`hashcat -b -m 1400 -D 1 --force` (SHA-256 benchmark on the CPU through pocl, POCL_CPU_MAX_CU_COUNT=1) in a loop",
            warmup: ms(1500),
            prepare: |c| {
                Prepared::script(format!(
                    "export POCL_CPU_MAX_CU_COUNT=1 HOME={d}\n\
                     while :; do hashcat -b -m 1400 -D 1 --force --quiet >/dev/null 2>&1 || sleep 0.2; done\n",
                    d = c.path("")
                ))
            },
        },
        Entry {
            name: "john-test",
            class: Crypto,
            debs: &["john"],
            needs: &["john"],
            busy: "`john --test` (every format's benchmark) in a loop, OMP_NUM_THREADS=1",
            warmup: ms(800),
            prepare: |c| {
                Prepared::script(format!(
                    "export OMP_NUM_THREADS=1 HOME={d}\nwhile :; do john --test >/dev/null 2>&1 || sleep 0.2; done\n",
                    d = c.path("")
                ))
            },
        },
        Entry {
            name: "argon2-256m",
            class: Crypto,
            debs: &["argon2"],
            needs: &["argon2"],
            busy: "`argon2 SALT -id -t 3 -m 18 -p 1` (256 MiB, Argon2 like RandomX's cache) hashing a password in a loop",
            warmup: ms(800),
            prepare: |_| {
                Prepared::script(
                    "while :; do echo correct-horse | argon2 mw-corpus-salt -id -t 3 -m 18 -p 1 > /dev/null || sleep 0.2; done\n"
                        .into(),
                )
            },
        },
        Entry {
            name: "openssl-speed",
            class: Crypto,
            debs: &["openssl"],
            needs: &["openssl"],
            busy: "`openssl speed -seconds 10 aes-128-cbc sha256 rsa2048` in a loop",
            warmup: ms(800),
            prepare: |_| {
                Prepared::script(
                    "while :; do openssl speed -seconds 10 aes-128-cbc sha256 rsa2048 >/dev/null 2>&1 || sleep 0.2; done\n"
                        .into(),
                )
            },
        },
        Entry {
            name: "sha256sum",
            class: Crypto,
            debs: &["coreutils"],
            needs: &["sha256sum"],
            busy: "`sha256sum /dev/zero` (an endless stream)",
            warmup: ms(500),
            prepare: |_| Prepared::script("exec sha256sum /dev/zero\n".into()),
        },
        // ---------------------------------------------------------- encoders
        Entry {
            name: "ffmpeg-x264",
            class: Encoder,
            debs: &["ffmpeg"],
            needs: &["ffmpeg"],
            busy: "`ffmpeg -f lavfi -i testsrc2=1280x720:30 -c:v libx264 -preset medium -threads 1 -f null -`",
            warmup: ms(1500),
            prepare: |_| {
                Prepared::script(
                    "exec ffmpeg -nostdin -hide_banner -loglevel error -filter_threads 1 \
                     -f lavfi -i testsrc2=size=1280x720:rate=30 -c:v libx264 -preset medium -threads 1 -f null -\n"
                        .into(),
                )
            },
        },
        Entry {
            name: "ffmpeg-x265",
            class: Encoder,
            debs: &["ffmpeg"],
            needs: &["ffmpeg"],
            busy: "`ffmpeg -f lavfi -i testsrc2=640x360:30 -c:v libx265 -preset medium -x265-params pools=1:frame-threads=1 -threads 1 -f null -`",
            warmup: ms(2000),
            prepare: |_| {
                Prepared::script(
                    "exec ffmpeg -nostdin -hide_banner -loglevel error -filter_threads 1 \
                     -f lavfi -i testsrc2=size=640x360:rate=30 -c:v libx265 -preset medium \
                     -x265-params pools=1:frame-threads=1:log-level=error -threads 1 -f null -\n"
                        .into(),
                )
            },
        },
        Entry {
            name: "lame",
            class: Encoder,
            debs: &["lame"],
            needs: &["lame"],
            busy: "`lame -r -V 0 -q 0` of raw 44.1 kHz stereo PCM from /dev/urandom",
            warmup: ms(800),
            prepare: |_| {
                Prepared::script(
                    "exec lame --quiet -r -s 44.1 --bitwidth 16 --signed --little-endian -m j -V 0 -q 0 - /dev/null < /dev/urandom\n"
                        .into(),
                )
            },
        },
        Entry {
            name: "flac",
            class: Encoder,
            debs: &["flac"],
            needs: &["flac"],
            busy: "`flac -8` of raw 44.1 kHz stereo PCM from /dev/urandom",
            warmup: ms(800),
            prepare: |_| {
                Prepared::script(
                    "exec flac --silent --force-raw-format --endian=little --sign=signed --channels=2 --bps=16 \
                     --sample-rate=44100 -8 -c - < /dev/urandom > /dev/null\n"
                        .into(),
                )
            },
        },
        // --------------------------------------------------------- compilers
        Entry {
            name: "gcc-O2",
            class: Compiler,
            debs: &["gcc"],
            needs: &["gcc"],
            busy: "`gcc -O2 -c` of a generated 3000-function C file, in a loop",
            warmup: ms(800),
            prepare: |c| {
                let src = c.write("big.c", big_c())?;
                Prepared::script(format!(
                    "while :; do gcc -O2 -c -o /dev/null {src} || sleep 0.2; done\n"
                ))
            },
        },
        Entry {
            name: "clang-O2",
            class: Compiler,
            debs: &["clang"],
            needs: &["clang"],
            busy: "`clang -O2 -c` of the same generated C file, in a loop",
            warmup: ms(800),
            prepare: |c| {
                let src = c.write("big.c", big_c())?;
                Prepared::script(format!(
                    "while :; do clang -O2 -c -o /dev/null {src} || sleep 0.2; done\n"
                ))
            },
        },
        Entry {
            name: "rustc",
            class: Compiler,
            debs: &["rustc"],
            needs: &["rustc"],
            busy: "`rustc -C opt-level=2 -C codegen-units=1` of a generated 800-generic-function crate, in a loop",
            warmup: ms(800),
            prepare: |c| {
                let src = c.write("lib.rs", big_rust())?;
                Prepared::script(format!(
                    "while :; do rustc --edition 2021 --crate-type lib -C opt-level=2 -C codegen-units=1 \
                     --out-dir {d} {src} || sleep 0.2; done\n",
                    d = c.path("")
                ))
            },
        },
        // ----------------------------------------------------------- numeric
        Entry {
            name: "numpy-openblas",
            class: Numeric,
            debs: &["python3-numpy", "libopenblas0-pthread"],
            needs: &["/usr/bin/python3", "/usr/lib/python3/dist-packages/numpy"],
            busy: "numpy (Debian's python3) 6000×6000 float64 matrix multiply in a loop with OpenBLAS, OPENBLAS_NUM_THREADS=1 (3 × 275 MiB matrices)",
            warmup: ms(800),
            prepare: |c| {
                let py = c.write(
                    "matmul.py",
                    "import numpy as np\n\
                     n = 6000\n\
                     a = np.random.rand(n, n)\n\
                     b = np.random.rand(n, n)\n\
                     print('mw-ready', flush=True)\n\
                     while True:\n    c = a @ b\n    a[0, 0] = c[0, 0] * 1e-9\n",
                )?;
                Prepared::ready(
                    format!(
                        "export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1\nexec /usr/bin/python3 {py}\n"
                    ),
                    60,
                )
            },
        },
        // ------------------------------------------------------------ others
        Entry {
            name: "stockfish-256m-hash",
            class: Other,
            debs: &["stockfish"],
            needs: &["/usr/games/stockfish"],
            busy: "`stockfish bench 256 1 22 default depth` (Hash=256: a 256 MiB transposition table, 1 thread) in a loop",
            warmup: ms(800),
            prepare: |_| {
                Prepared::script(
                    "while :; do /usr/games/stockfish bench 256 1 22 default depth >/dev/null 2>&1 < /dev/null || sleep 0.2; done\n"
                        .into(),
                )
            },
        },
        Entry {
            name: "stress-ng-cpu",
            class: Other,
            debs: &["stress-ng"],
            needs: &["stress-ng"],
            busy: "`stress-ng --cpu 1 --cpu-method all`",
            warmup: ms(800),
            prepare: |_| {
                Prepared::script(
                    "exec stress-ng --cpu 1 --cpu-method all --timeout 600s --quiet\n".into(),
                )
            },
        },
        Entry {
            name: "python3-float",
            class: Other,
            debs: &["python3"],
            needs: &["python3"],
            busy: "CPython float loop with list updates",
            warmup: ms(800),
            prepare: |c| {
                let py = c.write("loop.py", PY_FLOAT)?;
                Prepared::script(format!("exec python3 {py}\n"))
            },
        },
        Entry {
            name: "7z-bench",
            class: Other,
            debs: &["p7zip-full"],
            needs: &["7z"],
            busy: "`7z b -mmt1` (LZMA benchmark, 1 thread) in a loop",
            warmup: ms(1000),
            prepare: |_| {
                Prepared::script(
                    "while :; do 7z b -mmt1 >/dev/null 2>&1 || sleep 0.2; done\n".into(),
                )
            },
        },
        Entry {
            name: "sysbench-cpu",
            class: Other,
            debs: &["sysbench"],
            needs: &["sysbench"],
            busy: "`sysbench cpu --threads=1 --time=3600 run` (prime search)",
            warmup: ms(800),
            prepare: |_| {
                Prepared::script(
                    "exec sysbench cpu --threads=1 --time=3600 run > /dev/null\n".into(),
                )
            },
        },
        Entry {
            name: "yes",
            class: Other,
            debs: &["coreutils"],
            needs: &["yes"],
            busy: "`yes > /dev/null`",
            warmup: ms(500),
            prepare: |_| Prepared::script("exec yes > /dev/null\n".into()),
        },
        Entry {
            name: "monerod-node",
            class: Other,
            debs: &["monero"],
            needs: &["monerod", "python3"],
            busy: "`monerod --regtest --offline` on 127.0.0.1 (not mining), kept busy like a public node serving wallets: a Python RPC client on the same core loops over get_info, get_block_template, get_last_block_header, get_block_count, get_fee_estimate, /get_height and /get_transaction_pool over keep-alive HTTP",
            warmup: ms(1500),
            prepare: monerod,
        },
    ]
}
