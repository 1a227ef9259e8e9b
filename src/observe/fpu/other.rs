//! Other architectures and systems: no sampling, said plainly.

use super::*;

pub(super) fn sample(
    _proc_root: &Path,
    _pid: i32,
    _tids: &[i32],
    _opts: &SampleOptions,
) -> FpuFacts {
    let mut facts = FpuFacts {
        refused: Some("not supported on this architecture".to_string()),
        ..FpuFacts::default()
    };
    facts.summarize();
    facts
}
