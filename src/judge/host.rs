//! Host findings: what the host shows outside any one process.

use super::persistence::Suspect;
use super::{HostFinding, Level, Policy};
use crate::snapshot::HostSnapshot;

/// Share of one core, unexplained by any visible process, from which the
/// host's CPU is worth a notice, and from which it is suspicious.
const HIDDEN_CPU_NOTICE: f64 = 0.25;
const HIDDEN_CPU_SUSPICIOUS: f64 = 0.5;

/// All host findings of a snapshot.
pub fn findings(
    snap: &HostSnapshot,
    policy: &Policy,
    persistence: &[Suspect<'_>],
) -> Vec<HostFinding> {
    let mut out = Vec::new();
    if snap.scoped_host_checks {
        // A --pid scan: only what concerns its scope. A scoped pid hidden
        // or mounted over; ld.so.preload, which loads into every process in
        // it; a persistence entry that launches one of them.
        hiding(snap, &mut out);
        preloads(snap, policy, &mut out);
        let launching: Vec<Suspect<'_>> = persistence
            .iter()
            .filter(|s| {
                s.entry
                    .programs
                    .iter()
                    .any(|exe| !launched_by(snap, exe).is_empty())
            })
            .cloned()
            .collect();
        persistence_findings(snap, &launching, &mut out);
        return out;
    }
    hidden_cpu(snap, &mut out);
    hiding(snap, &mut out);
    preloads(snap, policy, &mut out);
    leftovers(snap, &mut out);
    persistence_findings(snap, persistence, &mut out);
    out
}

fn push(out: &mut Vec<HostFinding>, id: &str, level: Level, evidence: String) {
    out.push(HostFinding {
        id: id.to_string(),
        level,
        evidence,
    });
}

fn name_of(snap: &HostSnapshot, pid: i32) -> String {
    snap.processes
        .iter()
        .find(|p| p.pid == pid)
        .map(|p| format!(" ({})", p.comm))
        .unwrap_or_default()
}

/// Processes hidden from listings, /proc/PID mounts, hidepid.
fn hiding(snap: &HostSnapshot, out: &mut Vec<HostFinding>) {
    let h = &snap.host_facts;
    // A hidden process that was observed is reported in its own finding
    // (proc.hidden); only one nothing could be read of is a host finding.
    let observed = |pid: i32| snap.processes.iter().any(|p| p.pid == pid);
    let concerns = |pid: i32| !snap.scoped_host_checks || snap.scope.contains(&pid);
    for hp in h
        .hidden_pids
        .iter()
        .filter(|hp| !observed(hp.pid) && concerns(hp.pid))
    {
        push(
            out,
            "host.hidden_process",
            Level::Suspicious,
            format!(
                "pid {}{} is missing from the {} listing of /proc but seen by {}: something (an LD_PRELOAD or kernel rootkit) hides it",
                hp.pid,
                name_of(snap, hp.pid),
                hp.missing_from.join(" and "),
                hp.seen_by.join(", ")
            ),
        );
    }
    proc_mounts(snap, out);
    if let Some(opt) = h.hidepid.as_ref().filter(|_| !snap.scoped_host_checks) {
        push(
            out,
            "host.hidepid",
            Level::Notice,
            format!("/proc is mounted with hidepid={opt}: users cannot see each other's processes"),
        );
    }
}

/// Mounts over /proc/PID; in a `--pid` scan only those over a pid in scope.
fn proc_mounts(snap: &HostSnapshot, out: &mut Vec<HostFinding>) {
    let in_scope = |m: &str| {
        // "/proc/1234" or "/proc/1234/fd": the first all-digit component.
        let pid = m.split('/').find_map(|c| c.parse::<i32>().ok());
        pid.is_some_and(|pid| {
            snap.scope.contains(&pid) || snap.processes.iter().any(|p| p.pid == pid)
        })
    };
    for m in &snap.host_facts.proc_pid_mounts {
        if snap.scoped_host_checks && !in_scope(m) {
            continue;
        }
        push(
            out,
            "host.proc_mount",
            Level::Suspicious,
            format!(
                "a filesystem is mounted over {m}, hiding that process's details from every tool (see /proc/self/mountinfo)"
            ),
        );
    }
}

/// ld.so.preload and libraries preloaded into minerwatch itself.
fn preloads(snap: &HostSnapshot, policy: &Policy, out: &mut Vec<HostFinding>) {
    let matched = |path: &str| -> Option<String> {
        let id = snap
            .preload_binaries
            .iter()
            .find(|b| b.path == path)?
            .binary
            .as_ref()?;
        let b = snap.binaries.iter().find(|b| &b.id == id)?;
        (!b.matches.is_empty()).then(|| {
            b.matches
                .iter()
                .map(|m| m.rule.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    if let Some(f) = &snap.host_facts.ld_so_preload {
        let mut level = Level::Notice;
        let mut notes = Vec::new();
        for e in &f.entries {
            if let Some(rules) = matched(e) {
                level = Level::Suspicious;
                notes.push(format!("{e} matches {rules}"));
            }
            if policy.indicators.staging_path(e) {
                level = Level::Suspicious;
                notes.push(format!("{e} lies in a world-writable or hidden directory"));
            }
        }
        if f.immutable {
            level = Level::Suspicious;
            notes.push("the file is immutable (chattr +i)".into());
        }
        if let Some(t) = &f.symlink_target {
            notes.push(format!("it is a symlink to {t}"));
        }
        if !f.entries.is_empty() || f.symlink_target.is_some() {
            push(
                out,
                "host.ld_so_preload",
                level,
                format!(
                    "{} preloads {} into every program{}",
                    f.path,
                    if f.entries.is_empty() {
                        "nothing readable".to_string()
                    } else {
                        f.entries.join(", ")
                    },
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", notes.join("; "))
                    }
                ),
            );
        }
    }
    if !snap.host_facts.self_preloaded.is_empty() {
        let libs: Vec<String> = snap
            .host_facts
            .self_preloaded
            .iter()
            .map(|l| match matched(l) {
                Some(rules) => format!("{l} (matches {rules})"),
                None => l.clone(),
            })
            .collect();
        push(
            out,
            "host.self_preloaded",
            Level::Suspicious,
            format!(
                "minerwatch itself runs with {} preloaded: a rootkit may be filtering what tools see (minerwatch lists /proc with raw getdents64 to see past it)",
                libs.join(", ")
            ),
        );
    }
}

/// State a miner leaves behind: huge pages, msr writes, nmi watchdog, sysctl.
fn leftovers(snap: &HostSnapshot, out: &mut Vec<HostFinding>) {
    let h = &snap.host_facts;
    let hp = &h.hugepages;
    if hp.nr_hugepages > 0 && hp.free >= hp.nr_hugepages {
        push(
            out,
            "host.hugepages_unused",
            Level::Notice,
            format!(
                "{} huge pages of {} kB ({} MiB) are reserved and all free: nothing uses them (XMRig reserves them for its dataset)",
                hp.nr_hugepages,
                hp.size_kib,
                hp.nr_hugepages * hp.size_kib / 1024
            ),
        );
    }
    if hp.nr_1g > 0 && hp.free_1g >= hp.nr_1g {
        push(
            out,
            "host.hugepages_unused",
            Level::Notice,
            format!(
                "{} 1 GiB huge pages are reserved and all free (XMRig's --randomx-1gb-pages)",
                hp.nr_1g
            ),
        );
    }
    if h.msr_allow_writes
        .as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("on"))
    {
        push(
            out,
            "host.msr_writes",
            Level::Notice,
            "the msr module allows writes to CPU model-specific registers (allow_writes=on): XMRig's MSR mod turns prefetchers off this way".into(),
        );
    }
    // Many VM images ship with the watchdog off: alone it says nothing, so it
    // is reported beside other tuning leftovers only.
    let tuned = out
        .iter()
        .any(|f| f.id == "host.hugepages_unused" || f.id == "host.msr_writes")
        || h.sysctl.iter().any(|s| s.key == "kernel.nmi_watchdog");
    if h.nmi_watchdog.as_deref() == Some("0") && tuned {
        push(
            out,
            "host.nmi_watchdog_off",
            Level::Notice,
            "kernel.nmi_watchdog is 0 beside other miner tuning: miners turn it off for a few percent more hashrate".into(),
        );
    }
    for s in &h.sysctl {
        push(
            out,
            "host.sysctl",
            Level::Notice,
            format!("{}:{} sets {} = {}", s.file, s.line, s.key, s.value),
        );
    }
}

/// Cron lines, systemd units and rc.local that launch a miner.
fn persistence_findings(snap: &HostSnapshot, suspects: &[Suspect<'_>], out: &mut Vec<HostFinding>) {
    for Suspect { entry: e, reasons } in suspects {
        let mut launched: Vec<String> = Vec::new();
        for exe in &e.programs {
            for p in launched_by(snap, exe) {
                if !launched.contains(&p) {
                    launched.push(p);
                }
            }
        }
        let mut evidence = format!(
            "{} {}:{} `{}`: {}",
            e.kind,
            e.path,
            e.line,
            e.text,
            reasons.join(", ")
        );
        if !launched.is_empty() {
            evidence.push_str(&format!(
                "; it launches running process {}",
                launched.join(", ")
            ));
        }
        push(out, "host.persistence", Level::Suspicious, evidence);
    }
}

/// Running processes whose executable is `exe`.
pub fn launched_by(snap: &HostSnapshot, exe: &str) -> Vec<String> {
    snap.processes
        .iter()
        .filter(|p| {
            p.exe
                .as_deref()
                .is_some_and(|e| e.trim_end_matches(" (deleted)") == exe)
        })
        .map(|p| format!("{} ({})", p.pid, p.comm))
        .collect()
}

/// CPU the kernel counted for tasks that no visible process accounts for.
///
/// Explained: each visible process's utime+stime over the window, the
/// cutime+cstime its reaped children added, and our own. Only a whole-host
/// scan can tell; a `--pid` scan does not look.
fn hidden_cpu(snap: &HostSnapshot, out: &mut Vec<HostFinding>) {
    let cpu = &snap.host_cpu;
    if !snap.scope.is_empty() || cpu.task_ticks == 0 || snap.window_secs <= 0.0 {
        return;
    }
    let explained: u64 = snap
        .processes
        .iter()
        .map(|p| p.cpu.ticks + p.cpu.children_ticks)
        .sum::<u64>()
        + cpu.self_ticks;
    let unexplained = cpu.task_ticks.saturating_sub(explained);
    let core = snap.host.clock_ticks.max(1) as f64 * snap.window_secs;
    let share = unexplained as f64 / core;
    // Kernel threads are listed only in the host's (initial) PID namespace:
    // without one we run in a PID namespace of our own (a container), and
    // the host's other processes spend CPU out of our sight by design.
    let own_namespace = !snap.processes.iter().any(|p| p.kernel_thread);
    let level = if share >= HIDDEN_CPU_SUSPICIOUS && !own_namespace {
        Level::Suspicious
    } else if share >= HIDDEN_CPU_NOTICE {
        Level::Notice
    } else {
        return;
    };
    let why = if own_namespace {
        "; no kernel thread is visible, so minerwatch runs in a PID namespace of its own (a container) and the host's other processes are outside its view: give it the host's /proc with --proc-root to judge this"
    } else {
        ""
    };
    out.push(HostFinding {
        id: "host.hidden_cpu".into(),
        level,
        evidence: format!(
            "over the {:.1} s window the kernel counted {} ticks of task CPU (/proc/stat user+nice+system) but the {} visible processes and minerwatch account for {}: {} ticks, {:.0} % of a core, ran in processes we cannot see{why}",
            snap.window_secs,
            cpu.task_ticks,
            snap.processes.len(),
            explained,
            unexplained,
            share * 100.0
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{CpuFacts, HostCpu, ProcessFacts};

    fn snap(task_ticks: u64, visible: &[u64]) -> HostSnapshot {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/snapshots/xmrig-light.json"
        ))
        .expect("fixture");
        let mut s: HostSnapshot = serde_json::from_str(&text).expect("parse");
        s.host_cpu = HostCpu {
            busy_ticks: task_ticks + 10,
            total_ticks: 1000,
            task_ticks,
            self_ticks: 5,
        };
        s.processes = visible
            .iter()
            .map(|t| ProcessFacts {
                cpu: CpuFacts {
                    ticks: *t,
                    ..CpuFacts::default()
                },
                ..ProcessFacts::default()
            })
            .collect();
        // The host's PID namespace: kthreadd is listed.
        s.processes.push(ProcessFacts {
            pid: 2,
            comm: "kthreadd".into(),
            kernel_thread: true,
            ..ProcessFacts::default()
        });
        s
    }

    fn findings(s: &HostSnapshot) -> Vec<HostFinding> {
        let policy = Policy::default();
        let persistence =
            crate::judge::persistence::suspects(&s.host_facts.persistence, &policy.indicators);
        super::findings(s, &policy, &persistence)
    }

    #[test]
    fn accounted_cpu_is_no_finding() {
        assert!(findings(&snap(600, &[500, 90])).is_empty());
    }

    #[test]
    fn a_hidden_core_is_suspicious_with_figures() {
        let f = findings(&snap(600, &[95]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Suspicious);
        assert!(
            f[0].evidence.contains("600 ticks")
                && f[0].evidence.contains("100: 500 ticks, 100 % of a core"),
            "{}",
            f[0].evidence
        );
    }

    #[test]
    fn a_third_of_a_core_is_a_notice() {
        let f = findings(&snap(270, &[100]));
        assert_eq!(f[0].level, Level::Notice, "{f:?}");
    }

    #[test]
    fn in_a_pid_namespace_of_its_own_hidden_cpu_is_only_a_notice() {
        let mut s = snap(600, &[95]);
        s.processes.retain(|p| !p.kernel_thread);
        let f = findings(&s);
        assert_eq!(f[0].level, Level::Notice, "{f:?}");
        assert!(f[0].evidence.contains("PID namespace of its own"), "{f:?}");
    }

    #[test]
    fn reaped_children_explain_their_cpu() {
        let mut s = snap(600, &[95]);
        s.processes[0].cpu.children_ticks = 480;
        assert!(findings(&s).is_empty());
    }

    use crate::snapshot::{HiddenPid, HostFacts, PersistenceEntry, PreloadFile, SysctlSetting};

    fn ids(f: &[HostFinding]) -> Vec<(String, Level)> {
        f.iter().map(|h| (h.id.clone(), h.level)).collect()
    }

    #[test]
    fn hidden_processes_mounts_and_self_preloads_are_suspicious() {
        let mut s = snap(0, &[]);
        s.host_facts = HostFacts {
            hidden_pids: vec![HiddenPid {
                pid: 4242,
                seen_by: vec!["getdents64".into(), "kill(0)/stat".into()],
                missing_from: vec!["readdir".into()],
            }],
            proc_pid_mounts: vec!["/proc/4243".into()],
            self_preloaded: vec!["/tmp/.x/libhide.so".into()],
            hidepid: Some("2".into()),
            ..HostFacts::default()
        };
        let f = findings(&s);
        assert_eq!(
            ids(&f),
            vec![
                ("host.hidden_process".into(), Level::Suspicious),
                ("host.proc_mount".into(), Level::Suspicious),
                ("host.hidepid".into(), Level::Notice),
                ("host.self_preloaded".into(), Level::Suspicious),
            ]
        );
        assert!(
            f[0].evidence.contains("pid 4242") && f[0].evidence.contains("readdir"),
            "{}",
            f[0].evidence
        );
    }

    #[test]
    fn ld_so_preload_is_notice_unless_staged_or_immutable() {
        let mut s = snap(0, &[]);
        s.host_facts.ld_so_preload = Some(PreloadFile {
            path: "/etc/ld.so.preload".into(),
            entries: vec!["/usr/lib/libfaketime.so".into()],
            ..PreloadFile::default()
        });
        assert_eq!(
            ids(&findings(&s)),
            vec![("host.ld_so_preload".into(), Level::Notice)]
        );
        if let Some(f) = s.host_facts.ld_so_preload.as_mut() {
            f.entries = vec!["/dev/shm/.l/libsystem.so".into()];
        }
        assert_eq!(findings(&s)[0].level, Level::Suspicious);
    }

    #[test]
    fn leftovers_are_notices() {
        let mut s = snap(0, &[]);
        s.host_facts.hugepages.nr_hugepages = 1168;
        s.host_facts.hugepages.free = 1168;
        s.host_facts.hugepages.size_kib = 2048;
        s.host_facts.msr_allow_writes = Some("on".into());
        s.host_facts.nmi_watchdog = Some("0".into());
        s.host_facts.sysctl = vec![SysctlSetting {
            file: "/etc/sysctl.d/99.conf".into(),
            line: 1,
            key: "vm.nr_hugepages".into(),
            value: "1168".into(),
        }];
        let f = findings(&s);
        assert!(f.iter().all(|h| h.level == Level::Notice), "{f:?}");
        assert_eq!(f.len(), 4);
        assert!(f[0].evidence.contains("2336 MiB"), "{}", f[0].evidence);
        // In use: not a leftover.
        s.host_facts.hugepages.free = 0;
        assert_eq!(findings(&s).len(), 3);
        // The watchdog off alone, as many VM images ship: nothing.
        s.host_facts.msr_allow_writes = None;
        s.host_facts.sysctl.clear();
        assert!(findings(&s).is_empty());
    }

    #[test]
    fn persistence_names_the_process_it_launches() {
        let mut s = snap(0, &[]);
        s.processes.push(ProcessFacts {
            pid: 777,
            comm: "kdevtmpfsi".into(),
            exe: Some("/tmp/.x/kdevtmpfsi (deleted)".into()),
            ..ProcessFacts::default()
        });
        s.host_facts.persistence = vec![PersistenceEntry {
            kind: "cron".into(),
            path: "/etc/crontab".into(),
            line: 3,
            text: "@reboot root /tmp/.x/kdevtmpfsi".into(),
            command: "root /tmp/.x/kdevtmpfsi".into(),
            programs: vec!["/tmp/.x/kdevtmpfsi".into()],
            at_reboot: true,
            immutable: true,
            ..PersistenceEntry::default()
        }];
        let f = findings(&s);
        assert_eq!(
            ids(&f),
            vec![("host.persistence".into(), Level::Suspicious)]
        );
        assert!(
            f[0].evidence
                .contains("launches running process 777 (kdevtmpfsi)")
                && f[0].evidence.contains("immutable"),
            "{}",
            f[0].evidence
        );
        let p = s
            .processes
            .iter()
            .find(|p| p.pid == 777)
            .expect("the miner");
        let sig = crate::judge::signals::detect(p, &s, &Policy::default());
        assert!(sig.iter().any(|x| x.id == "persist.launcher"), "{sig:?}");

        // The watchdog line that restarts it: the miner is its second program.
        s.host_facts.persistence[0].text =
            "*/30 * * * * root pgrep -x kdevtmpfsi || /tmp/.x/kdevtmpfsi".into();
        s.host_facts.persistence[0].programs = vec!["pgrep".into(), "/tmp/.x/kdevtmpfsi".into()];
        s.host_facts.persistence[0].at_reboot = false;
        let f = findings(&s);
        assert!(
            f[0].evidence.contains("launches running process 777"),
            "{}",
            f[0].evidence
        );
        let p = &s.processes[s.processes.len() - 1];
        let sig = crate::judge::signals::detect(p, &s, &Policy::default());
        assert!(sig.iter().any(|x| x.id == "persist.launcher"), "{sig:?}");
    }

    #[test]
    fn a_pid_scope_keeps_only_the_host_findings_that_concern_it() {
        let mut s = snap(0, &[]);
        s.processes.push(ProcessFacts {
            pid: 777,
            comm: "kdevtmpfsi".into(),
            exe: Some("/tmp/.x/kdevtmpfsi".into()),
            ..ProcessFacts::default()
        });
        let cron = |line: u32, program: &str| PersistenceEntry {
            kind: "cron".into(),
            path: "/etc/crontab".into(),
            line,
            text: format!("@reboot root {program}"),
            command: format!("root {program}"),
            programs: vec![program.into()],
            at_reboot: true,
            ..PersistenceEntry::default()
        };
        s.host_facts.persistence = vec![cron(3, "/tmp/.x/kdevtmpfsi"), cron(4, "/tmp/.y/other")];
        // Another program's huge pages, a hidden pid, a mount over another
        // pid and one over ours.
        s.host_facts.hugepages.nr_hugepages = 1168;
        s.host_facts.hugepages.free = 1168;
        s.host_facts.hugepages.size_kib = 2048;
        s.host_facts.hidden_pids = vec![HiddenPid {
            pid: 4321,
            seen_by: vec!["kill(0)/stat".into()],
            missing_from: vec!["readdir".into()],
        }];
        s.host_facts.proc_pid_mounts = vec!["/proc/4321".into(), "/proc/777".into()];
        s.host_facts.hidepid = Some("2".into());
        let whole = ids(&findings(&s));
        assert_eq!(whole.len(), 7, "{whole:?}");

        s.scope = vec![777];
        s.scoped_host_checks = true;
        let f = findings(&s);
        assert_eq!(
            ids(&f),
            vec![
                ("host.proc_mount".into(), Level::Suspicious),
                ("host.persistence".into(), Level::Suspicious),
            ],
            "{f:?}"
        );
        assert!(f[0].evidence.contains("/proc/777"), "{}", f[0].evidence);
        assert!(f[1].evidence.contains("crontab:3"), "{}", f[1].evidence);
        // ld.so.preload loads into every process in scope: kept.
        s.host_facts.ld_so_preload = Some(PreloadFile {
            path: "/etc/ld.so.preload".into(),
            entries: vec!["/dev/shm/.l/libsystem.so".into()],
            ..PreloadFile::default()
        });
        assert!(
            ids(&findings(&s))
                .iter()
                .any(|(id, _)| id == "host.ld_so_preload")
        );
    }

    #[test]
    fn pid_scoped_scans_do_not_judge_host_cpu() {
        let mut s = snap(600, &[95]);
        s.scope = vec![1];
        assert!(findings(&s).is_empty());
    }
}
