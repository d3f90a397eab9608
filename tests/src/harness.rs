//! Running many independent cases in parallel and printing a result table.
//!
//! Cases run on worker threads (at most `WISP_MATRIX_JOBS`, default 4, at a time
//! across all callers in the process); a panicking case is a failed case, not a
//! failed run. The caller asserts on the returned results after printing them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// What one case reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Negotiated algorithms (IKE | ESP), as both sides agreed.
    pub algorithms: String,
    /// Free-form note (e.g. "3 rekeys, 0 lost").
    pub note: String,
}

/// A finished case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub result: Result<Outcome, String>,
    pub elapsed: Duration,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }
}

struct Slots {
    used: Mutex<usize>,
    cv: Condvar,
}

static SLOTS: Slots = Slots { used: Mutex::new(0), cv: Condvar::new() };

fn max_jobs() -> usize {
    std::env::var("WISP_MATRIX_JOBS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(4)
}

fn acquire() {
    let mut u = SLOTS.used.lock().unwrap_or_else(|e| e.into_inner());
    while *u >= max_jobs() {
        u = SLOTS.cv.wait(u).unwrap_or_else(|e| e.into_inner());
    }
    *u += 1;
}

fn release() {
    let mut u = SLOTS.used.lock().unwrap_or_else(|e| e.into_inner());
    *u -= 1;
    SLOTS.cv.notify_one();
}

/// A named case.
pub type Case = (String, Box<dyn FnOnce() -> Result<Outcome, String> + Send>);

/// Run all cases (in parallel, bounded) and return results in input order.
/// `WISP_MATRIX_FILTER=substr` runs only matching cases.
pub fn run_cases(cases: Vec<Case>) -> Vec<CaseResult> {
    let filter = std::env::var("WISP_MATRIX_FILTER").ok();
    let handles: Vec<_> = cases
        .into_iter()
        .filter(|(n, _)| filter.as_ref().map(|f| n.contains(f.as_str())).unwrap_or(true))
        .map(|(name, f)| {
            std::thread::spawn(move || {
                acquire();
                let start = Instant::now();
                let r = catch_unwind(AssertUnwindSafe(f));
                release();
                let result = match r {
                    Ok(r) => r,
                    Err(p) => Err(p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into())),
                };
                let res = CaseResult { name, result, elapsed: start.elapsed() };
                eprintln!("[matrix] {:<44} {} ({:.1}s)", res.name, if res.passed() { "pass" } else { "FAIL" }, res.elapsed.as_secs_f64());
                res
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| CaseResult { name: "?".into(), result: Err("join".into()), elapsed: Duration::ZERO }))
        .collect()
}

/// Render the results as a table, followed by the failure details.
pub fn table(title: &str, results: &[CaseResult], wall: Duration) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let w = results.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(o, "\n== {title} ==");
    let _ = writeln!(o, "{:<w$}  {:<4}  {:>6}  negotiated / note", "case", "res", "secs");
    for r in results {
        let (res, detail) = match &r.result {
            Ok(out) => ("pass", if out.note.is_empty() { out.algorithms.clone() } else { format!("{}  ({})", out.algorithms, out.note) }),
            Err(e) => ("FAIL", e.lines().next().unwrap_or("").to_string()),
        };
        let _ = writeln!(o, "{:<w$}  {:<4}  {:>6.1}  {}", r.name, res, r.elapsed.as_secs_f64(), detail);
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    let _ = writeln!(o, "{passed}/{} passed, wall {:.1}s", results.len(), wall.as_secs_f64());
    for r in results.iter().filter(|r| !r.passed()) {
        if let Err(e) = &r.result {
            let _ = writeln!(o, "\n--- {} ---\n{e}", r.name);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_panics_are_reported_in_order() {
        let cases: Vec<Case> = vec![
            ("a".into(), Box::new(|| Ok(Outcome { algorithms: "X".into(), note: String::new() }))),
            ("b".into(), Box::new(|| Err("bad".into()))),
            ("c".into(), Box::new(|| panic!("boom"))),
        ];
        let r = run_cases(cases);
        assert_eq!(r.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(r[0].passed() && !r[1].passed() && !r[2].passed());
        assert_eq!(r[2].result.as_ref().unwrap_err(), "boom");
        let t = table("t", &r, Duration::from_secs(1));
        assert!(t.contains("1/3 passed"), "{t}");
    }
}
