//! wisp gateway library: config, control protocol, status model, daemon, demo.
//! The binary (`src/main.rs`) is a thin CLI over this; tests use it directly.
//!
//! `dataplane/` (TUN, UDP 4500, SPD/SAD, packet loops) is owned by the ESP side.

pub mod admission_gate;
pub mod config;
pub mod control;
pub mod credentials;
pub mod daemon;
pub mod dataplane;
pub mod dataplane_glue;
pub mod demo;
pub mod dns_hook;
pub mod dp;
pub mod driver;
pub mod gateway;
pub mod ike_settings;
pub mod netlink;
pub mod netns;
pub mod plugin_tools;
pub mod policy;
pub mod privdrop;
pub mod queue;
pub mod status;
