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
                    out.push(PersistenceEntry {
                        kind: kind.to_string(),
                        path,
                        line: 0,
                        text: cap_text(&format!("symlink -> {target}")),
                        symlink_to: Some(resolved),
                        ..PersistenceEntry::default()
                    });
                }
                Got::Skip => {}
            }
        }
    }
    out
}

/// Every command of one persistence file, or the file itself when it has
/// none (or is a compiled program).
pub(super) fn analyze_file(
    kind: &str,
    format: Format,
    path: &str,
    file: &FileRead,
) -> Vec<PersistenceEntry> {
    let compiled = file.data.starts_with(b"\x7fELF");
    let entry = |line: u32, text: &str| PersistenceEntry {
        kind: kind.to_string(),
        path: path.to_string(),
        line,
        text: cap_text(text.trim()),
        immutable: file.immutable,
        compiled: compiled && format == Format::Script,
        ..PersistenceEntry::default()
    };
    let mut out = Vec::new();
    if !compiled {
        let text = String::from_utf8_lossy(&file.data);
        for (line, logical) in logical_lines(&text, matches!(format, Format::Script | Format::Unit))
        {
            let Some(cmd) = command_of(format, &logical) else {
                continue;
            };
            out.push(PersistenceEntry {
                command: cap_text(cmd.text),
                programs: programs(cmd.program),
                at_reboot: cmd.at_reboot,
                ..entry(line, &logical)
            });
        }
    }
    if out.is_empty() {
        out.push(entry(0, ""));
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
