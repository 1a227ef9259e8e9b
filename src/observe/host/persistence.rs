//! Persistence that may launch a miner: cron, systemd units, rc.local.

use super::*;

// ---------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Format {
    /// /etc/crontab, /etc/cron.d: five time fields (or @keyword), user, command.
    SystemCrontab,
    /// crontab -e files: no user field.
    UserCrontab,
    /// A shell script run as a whole (cron.daily/*, rc.local).
    Script,
    /// A systemd unit or drop-in: ExecStart*= lines.
    Unit,
}

pub(super) struct Source {
    pub(super) kind: &'static str,
    pub(super) format: Format,
    pub(super) rel: &'static str,
    /// None: a single file; Some(depth): a directory, listed this deep.
    pub(super) dir_depth: Option<usize>,
}

pub(super) const SOURCES: &[Source] = &[
    Source {
        kind: "cron",
        format: Format::SystemCrontab,
        rel: "etc/crontab",
        dir_depth: None,
    },
    Source {
        kind: "cron",
        format: Format::SystemCrontab,
        rel: "etc/cron.d",
        dir_depth: Some(0),
    },
    Source {
        kind: "cron",
        format: Format::UserCrontab,
        rel: "var/spool/cron/crontabs",
        dir_depth: Some(0),
    },
    // Red Hat keeps user crontabs directly here.
    Source {
        kind: "cron",
        format: Format::UserCrontab,
        rel: "var/spool/cron",
        dir_depth: Some(0),
    },
    Source {
        kind: "cron",
        format: Format::Script,
        rel: "etc/cron.hourly",
        dir_depth: Some(0),
    },
    Source {
        kind: "cron",
        format: Format::Script,
        rel: "etc/cron.daily",
        dir_depth: Some(0),
    },
    Source {
        kind: "cron",
        format: Format::Script,
        rel: "etc/cron.weekly",
        dir_depth: Some(0),
    },
    Source {
        kind: "cron",
        format: Format::Script,
        rel: "etc/cron.monthly",
        dir_depth: Some(0),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "etc/systemd/system",
        dir_depth: Some(MAX_DEPTH),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "lib/systemd/system",
        dir_depth: Some(1),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "usr/lib/systemd/system",
        dir_depth: Some(1),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "etc/systemd/user",
        dir_depth: Some(MAX_DEPTH),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "root/.config/systemd/user",
        dir_depth: Some(MAX_DEPTH),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "usr/lib/systemd/user",
        dir_depth: Some(1),
    },
    Source {
        kind: "rc.local",
        format: Format::Script,
        rel: "etc/rc.local",
        dir_depth: None,
    },
    Source {
        kind: "rc.local",
        format: Format::Script,
        rel: "etc/rc.d/rc.local",
        dir_depth: None,
    },
];

/// Symlink targets inside trees that are read anyway (package-managed units).
pub(super) const UNIT_COVERED: &[&str] = &["/etc/systemd/", "/lib/systemd/", "/usr/lib/systemd/"];

pub(super) fn scan_persistence(tree: &Tree, gaps: &mut Unread) -> Vec<PersistenceEntry> {
    /// (kind, format, the scanned directory, its files)
    type Found = (&'static str, Format, String, Vec<(String, Got)>);
    let mut found: Vec<Found> = Vec::new();
    for src in SOURCES {
        let files = match src.dir_depth {
            None => vec![(
                src.rel.to_string(),
                tree.read(gaps, src.rel, CONFIG_CAP, true),
            )],
            Some(depth) => tree.list(gaps, src.rel, depth, CONFIG_CAP, true),
        };
        found.push((src.kind, src.format, src.rel.to_string(), files));
    }
    // <root>/home/*/.config/systemd/user
    for home in tree.list_dirs(gaps, "home") {
        let rel = format!("{home}/.config/systemd/user");
        let files = tree.list(gaps, &rel, MAX_DEPTH, CONFIG_CAP, true);
        found.push(("systemd", Format::Unit, rel, files));
    }

    let mut out = Vec::new();
    for (kind, format, scanned, files) in found {
        for (rel, got) in files {
            match got {
                Got::File(f) => out.extend(analyze_file(kind, format, &tree.display(&rel), &f)),
                Got::Symlink(target) => {
                    let resolved = resolve_link(&rel, &target);
                    let covered = format == Format::Unit
                        && (resolved == "/dev/null"
                            || resolved.starts_with(&format!("/{scanned}/"))
                            || UNIT_COVERED.iter().any(|p| resolved.starts_with(p)));
                    if covered {
                        continue;
                    }
                    let path = tree.display(&rel);
                    gaps.add(path.clone(), format!("symlink to {target}: not followed"));
                    let mut reasons = file_name_reasons(format, basename(&rel));
                    for r in path_reasons(&resolved) {
                        push_unique(&mut reasons, r);
                    }
                    if !reasons.is_empty() {
                        out.push(PersistenceEntry {
                            kind: kind.to_string(),
                            path,
                            line: 0,
                            text: cap_text(&format!("symlink -> {target}")),
                            reasons,
                            immutable: false,
                            executable: None,
                        });
                    }
                }
                Got::Skip => {}
            }
        }
    }
    out
}

/// Reasons that come from a persistence file's name.
pub(super) fn file_name_reasons(format: Format, name: &str) -> Vec<String> {
    let mut reasons = Vec::new();
    let lower = name.to_ascii_lowercase();
    if format == Format::Unit && lower.contains("miner") && lower.contains(".service") {
        reasons.push(format!("unit named like a miner ({name})"));
    }
    for n in miner_names_in(name) {
        push_unique(&mut reasons, format!("file named like the miner {n}"));
    }
    reasons
}

pub(super) fn analyze_file(
    kind: &str,
    format: Format,
    path: &str,
    file: &FileRead,
) -> Vec<PersistenceEntry> {
    let mut file_reasons = file_name_reasons(format, basename(path));
    let is_elf = file.data.starts_with(b"\x7fELF");
    if is_elf && format == Format::Script {
        file_reasons.push("a compiled program, not a script".to_string());
    }
    if file.immutable {
        file_reasons.push("immutable (chattr +i)".to_string());
    }
    let text = String::from_utf8_lossy(&file.data);
    let entry = |line: u32, text: &str, reasons: Vec<String>, executable: Option<String>| {
        PersistenceEntry {
            kind: kind.to_string(),
            path: path.to_string(),
            line,
            text: cap_text(text.trim()),
            reasons,
            immutable: file.immutable,
            executable,
        }
    };
    let mut out = Vec::new();
    let mut first: Option<(u32, String, Option<String>)> = None;
    if !is_elf {
        for (line, logical) in logical_lines(&text, matches!(format, Format::Script | Format::Unit))
        {
            let Some(cmd) = command_of(format, &logical) else {
                continue;
            };
            let (mut reasons, executable) = analyze_command(cmd.text, cmd.program);
            if first.is_none() {
                first = Some((line, logical.clone(), executable.clone()));
            }
            if cmd.at_reboot && !reasons.is_empty() {
                reasons.push("runs at boot (@reboot)".to_string());
            }
            if !reasons.is_empty() {
                for r in &file_reasons {
                    push_unique(&mut reasons, r.clone());
                }
                out.push(entry(line, &logical, reasons, executable));
            }
        }
    }
    if out.is_empty() && !file_reasons.is_empty() {
        let (line, text, executable) = first.unwrap_or((0, String::new(), None));
        out.push(entry(line, &text, file_reasons, executable));
    }
    out
}

/// Lines with their 1-based number; with `continuation`, lines ending in a
/// backslash are joined to the next (numbered by the first).
pub(super) fn logical_lines(text: &str, continuation: bool) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(u32, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let (start, mut acc) = pending.take().unwrap_or((line_no(i), String::new()));
        let trimmed = line.trim_end();
        if continuation && trimmed.ends_with('\\') && !trimmed.trim_start().starts_with('#') {
            acc.push_str(&trimmed[..trimmed.len() - 1]);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(line);
            out.push((start, acc));
        }
    }
    if let Some(p) = pending {
        out.push(p);
    }
    out
}

pub(super) struct Command<'a> {
    /// Text the indicator patterns run on.
    pub(super) text: &'a str,
    /// Text the launched programs are parsed from (cron: without the user field).
    pub(super) program: &'a str,
    pub(super) at_reboot: bool,
}

pub(super) static ASSIGNMENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*\s*=").expect("static regex"));

/// The command part of a line, or None for comments, blanks and settings.
pub(super) fn command_of(format: Format, line: &str) -> Option<Command<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    match format {
        Format::Script => Some(Command {
            text: line,
            program: line,
            at_reboot: false,
        }),
        Format::Unit => {
            if line.starts_with(';') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            if !matches!(key.trim(), "ExecStart" | "ExecStartPre" | "ExecStartPost") {
                return None;
            }
            let value = value
                .trim()
                .trim_start_matches(['@', '-', ':', '+', '!', '|']);
            (!value.is_empty()).then_some(Command {
                text: value,
                program: value,
                at_reboot: false,
            })
        }
        Format::SystemCrontab | Format::UserCrontab => {
            if ASSIGNMENT.is_match(line) {
                return None;
            }
            let (fields, at_reboot) = if line.starts_with('@') {
                (1, line.split_whitespace().next() == Some("@reboot"))
            } else {
                (5, false)
            };
            let text = skip_words(line, fields)?;
            let mut program = text;
            if format == Format::SystemCrontab {
                // the user field, unless it is plainly a command (no user given)
                let user = text.split_whitespace().next().unwrap_or("");
                if !user.contains('/') {
                    program = skip_words(text, 1).unwrap_or("");
                }
            }
            (!text.is_empty()).then_some(Command {
                text,
                program,
                at_reboot,
            })
        }
    }
}

/// `s` without its first `n` whitespace-separated words.
pub(super) fn skip_words(s: &str, n: usize) -> Option<&str> {
    let mut rest = s.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    Some(rest)
}

pub(super) static PIPE_SHELL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:curl|wget|fetch|lwp-download|lwp-request|tftp)\b[^|;\n]*\|\s*(?:sudo\s+)?(?:\S*/)?(?:(?:ba|da|z|k|a)?sh|python[0-9.]*|perl)\b",
    )
    .expect("static regex")
});
pub(super) static SHELL_SUBST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(?:ba|da|z|k|a)?sh\s+(?:-c\s*["']?\$\(|<\s*\()\s*(?:curl|wget)\b"#)
        .expect("static regex")
});
pub(super) static B64_SHELL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\bbase64\s+(?:-[a-z]*d[a-z]*|--decode)\b[^|;\n]*\|\s*(?:sudo\s+)?(?:\S*/)?(?:ba|da|z|k|a)?sh\b")
        .expect("static regex")
});
pub(super) static STRATUM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)stratum2?\+(?:tcp|ssl|tls)://").expect("static regex"));
pub(super) static POOL_ARG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|\s)(?:-o|--url)(?:\s+|=)\S+:\d{2,5}\b").expect("static regex")
});
pub(super) static USER_ARG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|\s)(?:-u|--user)(?:\s+|=)\S+").expect("static regex"));
pub(super) static BACKGROUND_ARG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|\s)(?:-B|--background)(?:\s|$)").expect("static regex"));
pub(super) static WALLET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[48][0-9AB][1-9A-HJ-NP-Za-km-z]{93}(?:[1-9A-HJ-NP-Za-km-z]{11})?\b")
        .expect("static regex")
});

/// Why a command looks like it launches a miner, and the program it runs.
pub(super) fn analyze_command(text: &str, program_text: &str) -> (Vec<String>, Option<String>) {
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
    let programs = programs(program_text);
    for p in &programs {
        for r in path_reasons(p) {
            push_unique(&mut reasons, r);
        }
    }
    for n in miner_names_in(text) {
        push_unique(&mut reasons, format!("names the miner {n}"));
    }
    let stratum = STRATUM.is_match(text);
    let pool = POOL_ARG.is_match(text);
    if stratum {
        push_unique(&mut reasons, "has a stratum pool URL".to_string());
    }
    for flag in ["--donate-level", "--cpu-max-threads-hint"] {
        if text.contains(flag) {
            push_unique(&mut reasons, format!("has the miner flag {flag}"));
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
    if WALLET.is_match(text) {
        push_unique(&mut reasons, "has a Monero wallet address".to_string());
    }
    (reasons, programs.into_iter().next())
}

/// Reasons from the path of a launched program.
pub(super) fn path_reasons(program: &str) -> Vec<String> {
    let mut reasons = Vec::new();
    for dir in ["/tmp", "/var/tmp", "/dev/shm"] {
        if program
            .strip_prefix(dir)
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
        if KTHREAD_NAME.is_match(&last.to_ascii_lowercase()) {
            reasons.push(format!(
                "runs a program named like a kernel thread ({last})"
            ));
        }
    }
    reasons
}

/// Known miner and campaign names that appear as a word of `text`.
pub(super) fn miner_names_in(text: &str) -> Vec<&'static str> {
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    for word in lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
        for name in MINERS.iter().chain(CAMPAIGN_NAMES) {
            let hit = word == *name || word.strip_prefix(name).is_some_and(|r| r.starts_with('-'));
            if hit && !out.contains(name) {
                out.push(*name);
            }
        }
    }
    out
}

pub(super) const WRAPPERS: &[&str] = &[
    "nohup", "exec", "setsid", "command", "builtin", "time", "then", "do", "else", "if", "elif",
    "while", "until", "!", "eval", "sudo", "doas", "nice", "ionice", "env", "stdbuf", "chrt",
    "taskset", "timeout", "busybox", "xargs", "cpulimit",
];
pub(super) const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "csh", "tcsh", "fish",
];
pub(super) const INTERPRETERS: &[&str] = &[
    "python", "python2", "python3", "perl", "ruby", "node", "php", "lua",
];

/// The programs a shell command line runs (best effort, no full shell parse):
/// the first word of each simple command after wrappers like nohup/sudo/nice,
/// the script given to sh/bash/python, and the inner command of `sh -c`.
pub(super) fn programs(cmd: &str) -> Vec<String> {
    let cleaned: String = cmd
        .replace(">&", "> ")
        .replace("&>", " >")
        .chars()
        .map(|c| {
            if matches!(c, '\'' | '"' | '\\') {
                ' '
            } else {
                c
            }
        })
        .collect();
    let mut out = Vec::new();
    let mut cwd: Option<String> = None;
    for seg in cleaned.split([';', '&', '|', '(', ')', '`', '\n', '{', '}']) {
        let words = shell_words(seg);
        let Some((i, prog)) = command_word(&words) else {
            continue;
        };
        if prog == "cd" {
            cwd = words.get(i + 1).map(|d| (*d).to_string());
            continue;
        }
        let prog = match &cwd {
            Some(dir) if !prog.starts_with('/') && prog.contains('/') => {
                format!(
                    "{}/{}",
                    dir.trim_end_matches('/'),
                    prog.trim_start_matches("./")
                )
            }
            _ => prog.to_string(),
        };
        out.push(prog);
    }
    out
}

/// Whitespace-separated words without redirections.
pub(super) fn shell_words(seg: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut skip_next = false;
    for w in seg.split_whitespace() {
        if skip_next {
            skip_next = false;
            continue;
        }
        let t = w.trim_start_matches(|c: char| c.is_ascii_digit());
        if t.starts_with('>') || t.starts_with('<') {
            skip_next = t.trim_start_matches(['>', '<']).is_empty();
            continue;
        }
        words.push(w);
    }
    words
}

/// Index and text of the program a simple command runs.
pub(super) fn command_word<'a>(words: &[&'a str]) -> Option<(usize, &'a str)> {
    let mut i = 0;
    while let Some(&w) = words.get(i) {
        if ASSIGNMENT.is_match(w) {
            i += 1;
            continue;
        }
        let base = basename(w);
        if WRAPPERS.contains(&base) {
            i += 1;
            while let Some(&a) = words.get(i) {
                if matches!(a, "-u" | "-g" | "-C" | "-n" | "-c" | "-p")
                    && (base == "sudo" || base == "doas")
                {
                    i += 2;
                } else if a.starts_with('-')
                    || a.starts_with(|c: char| c.is_ascii_digit())
                    || ASSIGNMENT.is_match(a)
                {
                    i += 1;
                } else {
                    break;
                }
            }
            continue;
        }
        if SHELLS.contains(&base) {
            let mut j = i + 1;
            let mut inline = false;
            while let Some(&a) = words.get(j) {
                if !a.starts_with('-') {
                    break;
                }
                if !a.starts_with("--") && a.contains('c') {
                    inline = true;
                }
                j += 1;
            }
            if inline {
                i = j;
                continue;
            }
            return Some(words.get(j).map_or((i, w), |s| (j, *s)));
        }
        if INTERPRETERS.contains(&base) || base.starts_with("python3.") {
            let mut j = i + 1;
            while let Some(&a) = words.get(j) {
                if matches!(a, "-c" | "-e" | "-m" | "-E") {
                    return Some((i, w));
                }
                if !a.starts_with('-') {
                    break;
                }
                j += 1;
            }
            return Some(words.get(j).map_or((i, w), |s| (j, *s)));
        }
        if base == "." || base == "source" {
            return words.get(i + 1).map(|s| (i + 1, *s));
        }
        return Some((i, w));
    }
    None
}

pub(super) fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

pub(super) fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// At most 300 characters, control characters (terminal escapes in a
/// hostile file) shown as U+FFFD.
pub(super) fn cap_text(s: &str) -> String {
    s.chars()
        .take(TEXT_CAP)
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Lexical target of a symlink at `<root>/<link_rel>`, as a host path.
pub(super) fn resolve_link(link_rel: &str, target: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        parts.extend(link_rel.split('/').filter(|c| !c.is_empty()));
        parts.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}
