//! `vigil`: the supervisor binary (and, re-executed as `vigil __child ROLE`, every child).

mod cli;
mod config;
mod delivery;
mod dirs;
mod doctor;
mod error;
mod files;
mod kmsg_rules;
mod launch;
mod otel_env;
mod plan;
mod rootfs;
mod rootless;
mod run;
mod spawn;
mod status;
mod supervise;
mod users;

use std::path::{Path, PathBuf};

use clap::Parser;
use tracing::error;
use vigil_ipc_proto::AgentConfig;
use vigil_policies::features::{self, KernelFacts};
use vigil_policies::probe;

use crate::cli::{Cli, Command};

fn init_logging(child: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal; children never have one.
    let ansi = child.is_none() && std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// `vigil status | head` should end quietly like any Unix tool, not panic on EPIPE: the
/// printing commands get the default SIGPIPE action back (Rust ignores it at start-up).
fn default_sigpipe() {
    // SAFETY: resetting one signal's disposition to its default before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Doctor { .. } | Command::Status { .. }) {
        default_sigpipe();
    }
    let code = match cli.command {
        Command::Child { role } => {
            init_logging(Some(&role));
            let span = tracing::info_span!("child", role = %role);
            let _g = span.enter();
            match vigil_child::main(&role) {
                Ok(()) => 0,
                Err(e) => {
                    error!("{e}");
                    1
                }
            }
        }
        Command::Run(args) => {
            init_logging(None);
            match run::run(&args.config) {
                Ok(c) => c,
                Err(e) => {
                    error!("{e}");
                    1
                }
            }
        }
        Command::Doctor { config, emit } => {
            init_logging(None);
            match config::load(&config, &env) {
                Ok(cfg) => {
                    let facts = KernelFacts::probe();
                    let held = probe::held_capabilities();
                    let mut eval = features::evaluate(&cfg, &held, &facts);
                    // Run by the agent user itself, the table says what `vigil run` would.
                    if let Ok(u) = users::lookup(Path::new(&cfg.host_root), &cfg.user) {
                        launch::adjust(&mut eval, launch::current(&held, u.uid));
                    }
                    print!("{}", doctor::render(&cfg, &facts, &eval, emit));
                    0
                }
                Err(e) => {
                    error!("{e}");
                    1
                }
            }
        }
        Command::Status { runtime_dir, json } => {
            init_logging(None);
            let dir = runtime_dir
                .or_else(|| env("VIGIL_RUNTIME_DIR").map(PathBuf::from))
                .unwrap_or_else(|| {
                    if nix::unistd::geteuid().is_root() {
                        PathBuf::from(AgentConfig::default().runtime_dir)
                    } else {
                        PathBuf::from(rootless::default_runtime_dir())
                    }
                });
            match status::query(&dir) {
                Ok(r) => {
                    if json {
                        match serde_json::to_string_pretty(&r) {
                            Ok(s) => println!("{s}"),
                            Err(e) => error!("{e}"),
                        }
                    } else {
                        status::print_report(&r);
                    }
                    0
                }
                Err(e) => {
                    error!("{e}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}
