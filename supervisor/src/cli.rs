//! Command line of the `vigil` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "Privilege-separated Linux observability agent"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (supervisor, privhelper, collector, shipper).
    Run(RunArgs),
    /// Feature/capability table for this host and config, and the minimal add-list.
    Doctor {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print only one snippet.
        #[arg(long, value_enum, default_value = "text")]
        emit: Emit,
    },
    /// Live process tree of a running agent, with privileges and pipeline counters.
    Status {
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Internal: a child role, started by the supervisor.
    #[command(name = "__child", hide = true)]
    Child { role: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    Text,
    Setcap,
    Systemd,
    K8s,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Every flag overrides the same key of the TOML file and of the `VIGIL_*` environment.
#[derive(Debug, Args, Default, Clone)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Host user the collector, shipper and privhelper run as.
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long, value_parser = ["full", "read-only", "minimal"])]
    pub mount_mode: Option<String>,
    /// Where the host's root is visible (`/`, or `/hostfs` in a container).
    #[arg(long)]
    pub host_root: Option<String>,
    #[arg(long)]
    pub runtime_dir: Option<String>,
    /// `false`: collector and shipper stay root (with a warning).
    #[arg(long)]
    pub non_root_mode: Option<bool>,
    /// Fail at start if a capability of an enabled feature is missing.
    #[arg(long)]
    pub enforce_sys_caps: bool,
    /// Do not build the read-only virtual root (SmartAgent's NO_REMOUNT_ROOT).
    #[arg(long)]
    pub no_remount_root: bool,
    #[arg(long)]
    pub interval_ms: Option<u64>,
    /// JSON lines: `stdout`, a file path, or "" for off.
    #[arg(long)]
    pub json_lines: Option<String>,
    /// OTLP/HTTP endpoint, e.g. https://otlp.example.com:4318 ("" for off).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Serve the latest metrics for Prometheus on IP:PORT, e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub prometheus_listen: Option<String>,
}
