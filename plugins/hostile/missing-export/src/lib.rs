//! Exports `wisp:policy/decisions@0.4.0` without the decision functions.

wit_bindgen::generate!({
    path: "wit",
    world: "partial",
});

use exports::wisp::policy::decisions::{Guest, PluginInfo, Setting};

struct Partial;

impl Guest for Partial {
    fn info() -> PluginInfo {
        PluginInfo { name: "hostile-missing-export".to_string(), version: "1.0.0".to_string() }
    }
    fn configure(_settings: Vec<Setting>) -> Result<(), String> {
        Ok(())
    }
}

export!(Partial);
