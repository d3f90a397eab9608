//! `wisp plugin check|eval`: offline plugin tools over the `wisp-policy` library.

use std::path::Path;

/// Load and validate a component; returns a printable summary.
pub fn check(file: &Path) -> anyhow::Result<String> {
    let report = wisp_policy::check(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(report.to_string().trim_end().to_string())
}

/// Evaluate a component against a decision fixture (format:
/// `host/policy/FIXTURES.md`); returns the printable report and whether the
/// answer matches the fixture's expectation.
pub fn eval(file: &Path, fixture: &Path) -> anyhow::Result<(String, bool)> {
    use wisp_policy::fixture::{eval, Fixture};
    let fx = Fixture::load(fixture).map_err(|e| anyhow::anyhow!("{e}"))?;
    let answer = eval(file, &fx).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let verdict = fx.check(&answer);
    let mut text = format!("{}: {answer}\n{}", fixture.display(), answer.to_json());
    match &verdict {
        Ok(()) => text.push_str("\nexpectation: met"),
        Err(why) => text.push_str(&format!("\nexpectation: NOT met: {why}")),
    }
    Ok((text, verdict.is_ok()))
}
