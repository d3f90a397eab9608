//! `wisp plugin check|eval`: offline plugin tools over the `wisp-policy` library.

use std::path::Path;

/// Load and validate a component; returns a printable summary.
pub fn check(file: &Path) -> anyhow::Result<String> {
    let report = wisp_policy::check(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(report.to_string().trim_end().to_string())
}

/// Evaluate a component against a fixture; returns the printable report and
/// whether every expectation in the fixture held.
pub fn eval(file: &Path, fixture: &Path) -> anyhow::Result<(String, bool)> {
    anyhow::bail!("{} {}: wisp-policy is not linked into this build yet", file.display(), fixture.display())
}
