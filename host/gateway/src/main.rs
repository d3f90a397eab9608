//! `wisp`: the gateway binary. See `wisp --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use wisp_gateway::config::{Config, DEFAULT_CONTROL_SOCKET};
use wisp_gateway::control::{self, Request, Response};

#[derive(Parser)]
#[command(name = "wisp", version, about = "wisp: a programmable IPsec (IKEv2 + ESP) gateway")]
struct Cli {
    /// Control socket of the daemon (default: the config's `control_socket`, else /run/wisp/wisp.sock).
    #[arg(long, global = true, env = "WISP_CONTROL")]
    control: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway daemon in the foreground.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a config file and exit (non-zero with file:line:column: field: reason on error).
    CheckConfig { file: PathBuf },
    /// Bring a connection up and wait for the result.
    Up {
        name: String,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Tear a connection down (sends DELETE).
    Down { name: String },
    /// Rekey a connection's Child SAs (default) or its IKE SA (--ike).
    Rekey {
        name: String,
        #[arg(long)]
        ike: bool,
        /// Only this child.
        #[arg(long)]
        child: Option<String>,
    },
    /// Show IKE/Child SAs, counters and the plugin.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Re-read the config and plugin without dropping SAs.
    Reload,
    /// Offline plugin tools.
    Plugin {
        #[command(subcommand)]
        cmd: PluginCmd,
    },
    /// Two gateways in two network namespaces: tunnel, ping, status, deny-by-reload. Needs root.
    Demo {
        /// Keep the namespaces running until Ctrl-C after the demo.
        #[arg(long)]
        hold: bool,
    },
}

#[derive(Subcommand)]
enum PluginCmd {
    /// Load and validate a plugin component, print its name and version.
    Check { file: PathBuf },
    /// Evaluate a plugin against a fixture (JSON) and print the decisions.
    Eval { file: PathBuf, fixture: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let control = cli.control.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET));
    match cli.cmd {
        Cmd::Run { config } => match wisp_gateway::daemon::run(&config, cli.control.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wisp: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} connection{}, plugin {})",
                    file.display(),
                    cfg.connections.len(),
                    if cfg.connections.len() == 1 { "" } else { "s" },
                    cfg.plugin_path().display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Up { name, timeout } => {
            let req = Request::Up { name, timeout_secs: Some(timeout) };
            client(&control, &req, Some(Duration::from_secs(timeout + 5)), false)
        }
        Cmd::Down { name } => client(&control, &Request::Down { name }, Some(Duration::from_secs(30)), false),
        Cmd::Rekey { name, ike, child } => client(&control, &Request::Rekey { name, ike, child }, Some(Duration::from_secs(30)), false),
        Cmd::Status { json } => client(&control, &Request::Status, Some(Duration::from_secs(10)), json),
        Cmd::Reload => client(&control, &Request::Reload, Some(Duration::from_secs(30)), false),
        Cmd::Plugin { cmd: PluginCmd::Check { file } } => match wisp_gateway::plugin_tools::check(&file) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wisp plugin check: {}: {e:#}", file.display());
                ExitCode::FAILURE
            }
        },
        Cmd::Plugin { cmd: PluginCmd::Eval { file, fixture } } => match wisp_gateway::plugin_tools::eval(&file, &fixture) {
            Ok((text, all_pass)) => {
                println!("{text}");
                if all_pass {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("wisp plugin eval: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Demo { hold } => match wisp_gateway::demo::run(hold) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wisp demo: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn client(path: &std::path::Path, req: &Request, timeout: Option<Duration>, json: bool) -> ExitCode {
    match control::call(path, req, timeout) {
        Ok(Response::Ok { message }) => {
            if !message.is_empty() {
                println!("{message}");
            }
            ExitCode::SUCCESS
        }
        Ok(Response::Status { status }) => {
            if json {
                match serde_json::to_string_pretty(&status) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("wisp: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", status.render());
            }
            ExitCode::SUCCESS
        }
        Ok(Response::Error { message }) => {
            eprintln!("wisp: {message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("wisp: {e}");
            ExitCode::FAILURE
        }
    }
}
