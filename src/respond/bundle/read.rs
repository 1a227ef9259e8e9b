//! Reading a bundle back: [`open`] for `analyze` (the manifest and the
//! snapshot, checked against the manifest's hash, each member read capped)
//! and [`verify`] (every member against the manifest). A bundle handed to
//! `analyze` may come from a compromised host: nothing in it is trusted
//! beyond what its hashes check.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;

use super::{BUNDLE_SCHEMA, Manifest};
use crate::respond::RespondError;
use crate::safefs;
use crate::snapshot::{HostSnapshot, SNAPSHOT_SCHEMA};

/// Largest snapshot or manifest member `open` reads.
const MAX_READ_MEMBER: u64 = 512 * 1024 * 1024;

/// A bundle read back.
#[derive(Debug)]
pub struct Bundle {
    pub manifest: Manifest,
    pub snapshot: HostSnapshot,
}

/// True when `bytes` start like a gzip stream (a bundle, not a JSON snapshot).
pub fn looks_like_bundle(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Reads a bundle: its manifest and snapshot, the snapshot checked against
/// the manifest's hash.
pub fn open(path: &Path) -> Result<Bundle, RespondError> {
    let shown = path.display().to_string();
    let bad = |why: String| RespondError::Bundle(format!("bundle '{shown}': {why}"));
    let (file, _) = safefs::open_regular(path, true).map_err(RespondError::io(format!(
        "cannot read bundle '{shown}'; give a file written by `minerwatch collect` or `contain`"
    )))?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut snapshot: Option<Vec<u8>> = None;
    let mut manifest: Option<Vec<u8>> = None;
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a gzip-compressed tar ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt or cut short ({e})")))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let slot = match name.as_str() {
            "snapshot.json" => &mut snapshot,
            "manifest.json" => &mut manifest,
            _ => continue,
        };
        let mut buf = Vec::new();
        entry
            .by_ref()
            .take(MAX_READ_MEMBER + 1)
            .read_to_end(&mut buf)
            .map_err(|e| bad(format!("{name} is corrupt or cut short ({e})")))?;
        if buf.len() as u64 > MAX_READ_MEMBER {
            return Err(bad(format!(
                "{name} is larger than {} MiB",
                MAX_READ_MEMBER >> 20
            )));
        }
        *slot = Some(buf);
    }
    let manifest = manifest.ok_or_else(|| {
        bad("no manifest.json: it is cut short or not a minerwatch bundle".into())
    })?;
    let manifest: Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| bad(format!("manifest.json is not valid ({e})")))?;
    if manifest.schema != BUNDLE_SCHEMA {
        return Err(bad(format!(
            "manifest schema '{}', this minerwatch reads '{BUNDLE_SCHEMA}'",
            manifest.schema
        )));
    }
    let snapshot = snapshot.ok_or_else(|| bad("no snapshot.json".into()))?;
    let recorded = manifest
        .members
        .iter()
        .find(|m| m.name == "snapshot.json")
        .map(|m| m.sha256.as_str());
    let actual = safefs::sha256_hex(&snapshot);
    if recorded != Some(actual.as_str()) {
        return Err(bad(format!(
            "snapshot.json has SHA-256 {actual}, the manifest says {}: the bundle was altered",
            recorded.unwrap_or("nothing")
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(&snapshot)
        .map_err(|e| bad(format!("snapshot.json is not valid JSON ({e})")))?;
    if value.get("schema").and_then(|s| s.as_str()) != Some(SNAPSHOT_SCHEMA) {
        return Err(bad(format!(
            "snapshot.json is not schema '{SNAPSHOT_SCHEMA}': write the bundle again with this version"
        )));
    }
    let snapshot: HostSnapshot = serde_json::from_value(value)
        .map_err(|e| bad(format!("snapshot.json does not match its schema ({e})")))?;
    Ok(Bundle { manifest, snapshot })
}

/// Lists a bundle's members with their contents checked against the
/// manifest: (member, problem) for each that does not match.
pub fn verify(path: &Path) -> Result<Vec<(String, String)>, RespondError> {
    let shown = path.display().to_string();
    let bad = |why: String| RespondError::Bundle(format!("bundle '{shown}': {why}"));
    let Bundle { manifest, .. } = open(path)?;
    let (file, _) = safefs::open_regular(path, true)
        .map_err(RespondError::io(format!("cannot read bundle '{shown}'")))?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a gzip-compressed tar ({e})")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("corrupt ({e})")))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == "manifest.json" {
            continue;
        }
        let mut hasher = HashWriter::default();
        io::copy(&mut entry, &mut hasher).map_err(|e| bad(format!("{name}: {e}")))?;
        let sha = hasher.finish();
        seen.insert(name.clone());
        match manifest.members.iter().find(|m| m.name == name) {
            None => problems.push((name, "not in the manifest".into())),
            Some(m) if m.sha256 != sha => problems.push((
                name,
                format!("SHA-256 {sha}, the manifest says {}", m.sha256),
            )),
            Some(_) => {}
        }
    }
    for m in &manifest.members {
        if !seen.contains(&m.name) {
            problems.push((
                m.name.clone(),
                "in the manifest, missing from the tar".into(),
            ));
        }
    }
    Ok(problems)
}

#[derive(Default)]
struct HashWriter(sha2::Sha256);

impl HashWriter {
    fn finish(self) -> String {
        use sha2::Digest;
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
