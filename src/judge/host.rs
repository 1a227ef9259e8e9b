//! Host findings: what the host shows outside any one process.

use super::{HostFinding, Level};
use crate::snapshot::HostSnapshot;

/// Share of one core, unexplained by any visible process, from which the
/// host's CPU is worth a notice, and from which it is suspicious.
const HIDDEN_CPU_NOTICE: f64 = 0.25;
const HIDDEN_CPU_SUSPICIOUS: f64 = 0.5;

/// All host findings of a snapshot.
pub fn findings(snap: &HostSnapshot) -> Vec<HostFinding> {
    let mut out = Vec::new();
    hidden_cpu(snap, &mut out);
    out
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
    let level = if share >= HIDDEN_CPU_SUSPICIOUS {
        Level::Suspicious
    } else if share >= HIDDEN_CPU_NOTICE {
        Level::Notice
    } else {
        return;
    };
    out.push(HostFinding {
        id: "host.hidden_cpu".into(),
        level,
        evidence: format!(
            "over the {:.1} s window the kernel counted {} ticks of task CPU (/proc/stat user+nice+system) but the {} visible processes and minerwatch account for {}: {} ticks, {:.0} % of a core, ran in processes we cannot see",
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
        s
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
    fn reaped_children_explain_their_cpu() {
        let mut s = snap(600, &[95]);
        s.processes[0].cpu.children_ticks = 480;
        assert!(findings(&s).is_empty());
    }

    #[test]
    fn pid_scoped_scans_do_not_judge_host_cpu() {
        let mut s = snap(600, &[95]);
        s.scope = vec![1];
        assert!(findings(&s).is_empty());
    }
}
