//! `wisp demo`: two gateways in two network namespaces.

/// Run the demo (needs root).
pub fn run(_hold: bool) -> anyhow::Result<()> {
    anyhow::bail!("the demo needs the IKE engine, which is not linked into this build yet")
}
