//! Generated bindings for the `wisp:policy/policy-plugin` world (`wit/policy.wit`).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "wisp:policy/policy-plugin",
});

pub use exports::wisp::policy::decisions as guest;
pub use wisp::policy::types as wit;
