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
mod spawn;
mod status;
mod supervise;
mod users;

use std::path::{Path, PathBuf};

use clap::Parser;
use tracing::{error, info, warn};
use vigil_ipc_proto::{AgentConfig, Feature, Role};
use vigil_policies::features::{self, KernelFacts, names};
use vigil_policies::probe;

use crate::cli::{Cli, Command};
use crate::error::{Error, Result};

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
            match run(&args.config) {
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

fn hostname(cfg: &AgentConfig) -> String {
    cfg.hostname.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into())
    })
}

fn run(args: &cli::ConfigArgs) -> Result<i32> {
    let mut cfg = config::load(args, &env)?;
    let held = probe::held_capabilities();
    let host_root = PathBuf::from(&cfg.host_root);
    let user = users::lookup(&host_root, &cfg.user)?;
    let euid = nix::unistd::geteuid().as_raw();
    let launch = launch::current(&held, user.uid);
    if launch.rootless && args.runtime_dir.is_none() && env("VIGIL_RUNTIME_DIR").is_none() {
        cfg.runtime_dir = rootless::default_runtime_dir();
    }
    let facts = KernelFacts::probe();
    let mut eval = features::evaluate(&cfg, &held, &facts);
    launch::adjust(&mut eval, launch);
    if let Some(w) = eval.warning() {
        if cfg.enforce_sys_caps {
            return Err(Error::Enforced(format!(
                "{} (features: {})",
                names(&eval.missing_caps()),
                eval.missing()
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        warn!("{w}");
        info!(
            "the configured features need, started this way: {}",
            names(&features::required_caps(&cfg, &facts, launch))
        );
    }

    // Already the agent user: nobody to switch, and the journal dir is ours anyway.
    let switch_user = !launch.rootless
        && !launch.agent_user
        && cfg.non_root_mode
        && eval.is_enabled(Feature::UserSwitch);
    if let Some(w) =
        launch::identity_warning(launch, switch_user, cfg.non_root_mode, euid, &cfg.user)
    {
        warn!("{w}");
    }
    // Delivery files, resolver files and the Prometheus socket: read and bound while the
    // paths are the ones the user wrote (before the view), checked before anything starts.
    let prepared = delivery::prepare(&cfg, &host_root, &env)?;

    let journal = PathBuf::from(plan::journal_dir(&cfg));
    let runtime = dirs::prepare(&cfg, &journal, switch_user.then_some(&user))?;
    let rt = runtime.dir.clone();
    cfg.runtime_dir = rt.display().to_string();
    let journal =
        std::fs::canonicalize(&journal).map_err(Error::fs("resolve journal dir", &journal))?;

    let status = status::StatusServer::bind(&rt)?;
    let exe = spawn::open_self_exe()?;
    let signals = supervise::signal_fd()?;

    // The trimmed virtual root.
    let mut virtual_root = false;
    let want_root = !cfg.no_remount_root;
    if want_root && launch.rootless {
        match rootless::enter_user_namespace()
            .and_then(|_| rootfs::unshare_mount_ns())
            .and_then(|_| build_root(&cfg, &host_root, &rt))
        {
            Ok(()) => virtual_root = true,
            Err(e) => warn!("rootless: no virtual root ({e}); Landlock and seccomp still apply"),
        }
    } else if want_root && eval.is_enabled(Feature::VirtualRoot) {
        rootfs::unshare_mount_ns()?;
        build_root(&cfg, &host_root, &rt)?;
        virtual_root = true;
    } else if want_root {
        warn!(
            "no CAP_SYS_ADMIN: not remounting the host root read-only (NO_REMOUNT_ROOT); Landlock still confines the children"
        );
    } else if launch.agent_user {
        info!(
            "no_remount_root set: the host view is the one the service manager built (ProtectSystem=, InaccessiblePaths=); Landlock still confines the children"
        );
    } else {
        info!("no_remount_root set: using the host root as it is (NO_REMOUNT_ROOT)");
    }
    // What the children inherit is decided now (a rootless user namespace gave us new sets).
    let bounding = caps::read(None, caps::CapSet::Bounding).unwrap_or_default();
    match launch::bounding_note(launch, &probe::held_capabilities(), &bounding) {
        Some((true, note)) => warn!("{note}"),
        Some((false, note)) => info!("{note}"),
        None => {}
    }
    info!(
        mode = cfg.mount_mode.as_str(),
        virtual_root,
        user = %cfg.user,
        features = %eval
            .enabled()
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join(","),
        "starting"
    );

    let facts_run = plan::RunFacts {
        switch_user,
        virtual_root,
        hostname: hostname(&cfg),
        journal_dir: journal.display().to_string(),
        net: prepared.needs.clone(),
        shipper_inputs: prepared.inputs.is_some(),
        prometheus: prepared.listener.is_some(),
        fd_count_by_stat: facts.fd_count_stat,
    };
    let inits = Role::CHILDREN
        .iter()
        .map(|r| plan::init_config(*r, &cfg, &eval, Some(&user), &facts_run))
        .collect::<Result<Vec<_>>>()?;
    // The view is built and the children's plans are fixed: keep only what restarting them
    // needs (ARCHITECTURE.md lists both sets).
    let keep = plan::supervisor_steady_caps(
        &inits,
        euid,
        probe::held_capabilities().contains(&caps::Capability::CAP_SETPCAP),
    )?;
    let narrowed = vigil_policies::narrow_supervisor(&keep)?;
    info!(
        kept = %names(&features::sorted(narrowed.after.iter().copied())),
        dropped = narrowed.before.difference(&narrowed.after).count(),
        "supervisor capabilities narrowed to what restarting the children needs"
    );
    let mut states = eval.states();
    if let Some(f) = states.iter_mut().find(|f| f.name == Feature::VirtualRoot) {
        f.enabled = virtual_root;
        if virtual_root && launch.rootless {
            f.reason = "in a user namespace (rootless)".into();
        }
    }
    let ctx = status::StatusContext {
        mount_mode: cfg.mount_mode.as_str().into(),
        virtual_root,
        non_root_mode: cfg.non_root_mode,
        user: cfg.user.clone(),
        features: states,
        allowed_uid: nix::unistd::getuid().as_raw(),
        refused: 0,
    };
    let sock = status.path.clone();
    let mut sup = supervise::Supervisor::new(exe, inits, prepared, status, ctx, signals);
    let code = sup.run()?;
    let _ = std::fs::remove_file(&sock);
    Ok(code)
}

fn build_root(cfg: &AgentConfig, host_root: &Path, rt: &Path) -> Result<()> {
    let new_root = rt.join(".root");
    let entries = rootfs::host_entries(host_root)?;
    let plan = rootfs::plan(cfg.mount_mode, host_root, rt, &new_root, &entries);
    rootfs::apply(&plan)
}
