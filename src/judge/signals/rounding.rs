//! The rounding mode of busy threads: RandomX's `CFROUND` at work
//! (`rx.rounding_modes`), or evidence that it is not (`rx.not_hashing`).

use super::{Kind, Signal, Strength};
use crate::snapshot::ProcessFacts;

const MODE_NAMES: [&str; 4] = ["nearest", "down", "up", "toward zero"];

/// Samples taken while its threads ran, all at round-to-nearest, from which
/// a process is not hashing RandomX: a RandomX thread leaves round-to-nearest
/// in 60–74 % of samples (SIGNALS.md §1), so 8 nearest samples in a row
/// happen to one in about 1,500 (0.4^8).
pub const NOT_HASHING_SAMPLES: usize = 8;
/// Share of the CPU of its sampled threads that the threads seen running
/// must account for: a busy thread that slept through its samples is not
/// cleared by a quiet one that ran.
const NOT_HASHING_CPU_SHARE: f64 = 0.8;

pub(super) fn rounding(p: &ProcessFacts, busy: bool, out: &mut Vec<Signal>) {
    let Some(f) = &p.fpu else { return };
    if f.modes.len() >= 2 {
        let names: Vec<&str> = f
            .modes
            .iter()
            .filter_map(|m| MODE_NAMES.get(usize::from(*m)).copied())
            .collect();
        let share = f.non_default_share().unwrap_or(0.0) * 100.0;
        out.push(Signal::new(
            "rx.rounding_modes",
            Strength::Strong,
            Kind::Activity,
            format!(
                "{} FPU rounding modes ({}) seen in {} samples of {} thread{}, {share:.0} % not round-to-nearest: RandomX's CFROUND at work (benign programs stay at nearest)",
                f.modes.len(),
                names.join(", "),
                f.samples,
                f.threads.len(),
                if f.threads.len() == 1 { "" } else { "s" },
            ),
        ));
    } else if f.non_default == 0
        && let Some(evidence) = not_hashing(p, f)
    {
        out.push(Signal::new(
            "rx.not_hashing",
            Strength::Weak,
            Kind::Against,
            evidence,
        ));
    }
    if let Some(tracer) = f.traced_by.filter(|_| busy) {
        out.push(Signal::new(
            "ptrace.already_traced",
            Strength::Weak,
            Kind::Stealth,
            format!(
                "busy and already traced by pid {tracer}: a debugger, or a guard against inspection"
            ),
        ));
    }
}

/// The evidence that a process whose samples all stayed at round-to-nearest
/// is not hashing RandomX, when its threads were seen running often enough;
/// `None` when they were not (a stopped, throttled or sleeping thread's
/// samples repeat its last state and prove nothing).
fn not_hashing(p: &ProcessFacts, f: &crate::snapshot::FpuFacts) -> Option<String> {
    let cpu_of = |tid: i32| p.cpu.threads.iter().find(|t| t.tid == tid);
    let percent = |tid: i32| cpu_of(tid).map_or(0.0, |t| t.percent);
    let (seen, unseen): (Vec<_>, Vec<_>) = f.threads.iter().partition(|t| t.ran_samples() > 0);
    let ran: usize = seen.iter().map(|t| t.ran_samples()).sum();
    let seen_cpu: f64 = seen.iter().map(|t| percent(t.tid)).sum();
    let sampled_cpu: f64 = f.threads.iter().map(|t| percent(t.tid)).sum();
    if ran < NOT_HASHING_SAMPLES || seen_cpu < NOT_HASHING_CPU_SHARE * sampled_cpu {
        return None;
    }
    let name = |tid: i32| {
        cpu_of(tid).map_or_else(
            || format!("{tid}"),
            |t| format!("{tid} '{}' at {:.0} %", t.name, t.percent),
        )
    };
    let mut evidence = match seen.as_slice() {
        [one] => format!(
            "{ran} samples of its busy thread {} taken while it ran",
            name(one.tid)
        ),
        many => format!(
            "{ran} samples of {} busy threads taken while they ran ({})",
            many.len(),
            many.iter()
                .map(|t| format!("{}: {}", name(t.tid), t.ran_samples()))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    evidence.push_str(
        ", all round-to-nearest: not RandomX at work (RandomX's CFROUND leaves round-to-nearest in about 2 of 3 samples)",
    );
    for t in unseen {
        let doing = if t.idle.is_empty() {
            t.error.clone().unwrap_or_else(|| "not running".into())
        } else {
            t.idle.join(", ")
        };
        evidence.push_str(&format!(
            "; thread {} was not seen running ({doing}): its {} sample{} prove nothing",
            name(t.tid),
            t.modes.len(),
            if t.modes.len() == 1 { "" } else { "s" },
        ));
    }
    Some(evidence)
}
