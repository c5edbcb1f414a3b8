//! `vigil run`, in the order it happens: evaluate the configuration against this kernel and
//! launch; prepare what must be read or bound before the view (delivery files, runtime and
//! journal directories, status socket); build the view; plan the children; narrow the
//! supervisor's own capabilities; supervise.

use std::path::{Path, PathBuf};

use tracing::{info, warn};
use vigil_ipc_proto::{AgentConfig, Feature, Role};
use vigil_policies::features::{self, Evaluation, KernelFacts, Launch, names};
use vigil_policies::probe;

use crate::error::{Error, Result};
use crate::users::HostUser;
use crate::{
    cli, config, delivery, dirs, env, launch, plan, rootfs, rootless, spawn, status, supervise,
    users,
};

/// The configuration evaluated against this kernel, our capabilities and how we were started.
struct Evaluated {
    cfg: AgentConfig,
    user: HostUser,
    euid: u32,
    launch: Launch,
    facts: KernelFacts,
    eval: Evaluation,
}

pub fn run(args: &cli::ConfigArgs) -> Result<i32> {
    let Evaluated {
        mut cfg,
        user,
        euid,
        launch,
        facts,
        eval,
    } = evaluate(args)?;
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
    let host_root = PathBuf::from(&cfg.host_root);
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

    let virtual_root = enter_view(&cfg, &host_root, &rt, launch, &eval)?;
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
    narrow(&inits, euid)?;
    let own_landlock = confine_writes(launch, virtual_root, &eval, &cfg.runtime_dir, &journal)?;
    for (probe, outcome) in vigil_child::supervisor_probes() {
        warn!("selftest supervisor {probe}: {outcome}");
    }

    let mut ctx = status_context(&cfg, &eval, virtual_root, launch);
    ctx.landlock = own_landlock;
    let sock = status.path.clone();
    let mut sup = supervise::Supervisor::new(exe, inits, prepared, status, ctx, signals);
    let code = sup.run()?;
    let _ = std::fs::remove_file(&sock);
    Ok(code)
}

/// Load the configuration, find the agent user, evaluate every feature; with
/// `enforce_sys_caps` a missing capability is an error, else a warning naming them.
fn evaluate(args: &cli::ConfigArgs) -> Result<Evaluated> {
    let mut cfg = config::load(args, &env)?;
    let held = probe::held_capabilities();
    let user = users::lookup(Path::new(&cfg.host_root), &cfg.user)?;
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
    Ok(Evaluated {
        cfg,
        user,
        euid,
        launch,
        facts,
        eval,
    })
}

/// The trimmed virtual root, when asked for and possible; whether we are in it.
fn enter_view(
    cfg: &AgentConfig,
    host_root: &Path,
    rt: &Path,
    launch: Launch,
    eval: &Evaluation,
) -> Result<bool> {
    let mut virtual_root = false;
    let want_root = !cfg.no_remount_root;
    if want_root && launch.rootless {
        match rootless::enter_user_namespace()
            .and_then(|_| rootfs::unshare_mount_ns())
            .and_then(|_| build_root(cfg, host_root, rt))
        {
            Ok(()) => virtual_root = true,
            Err(e) => warn!("rootless: no virtual root ({e}); Landlock and seccomp still apply"),
        }
    } else if want_root && eval.is_enabled(Feature::VirtualRoot) {
        rootfs::unshare_mount_ns()?;
        build_root(cfg, host_root, rt)?;
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
        info!(
            "no_remount_root set: the host view is the one the container runtime or service manager built (NO_REMOUNT_ROOT); Landlock still confines the children"
        );
    }
    // What the children inherit is decided now (a rootless user namespace gave us new sets).
    let bounding = caps::read(None, caps::CapSet::Bounding).unwrap_or_default();
    match launch::bounding_note(launch, &probe::held_capabilities(), &bounding) {
        Some((true, note)) => warn!("{note}"),
        Some((false, note)) => info!("{note}"),
        None => {}
    }
    Ok(virtual_root)
}

fn build_root(cfg: &AgentConfig, host_root: &Path, rt: &Path) -> Result<()> {
    let new_root = rt.join(".root");
    let entries = rootfs::host_entries(host_root)?;
    let plan = rootfs::plan(cfg.mount_mode, host_root, rt, &new_root, &entries);
    rootfs::apply(&plan)
}

/// The view is built and the children's plans are fixed: keep only what restarting them needs
/// (ARCHITECTURE.md lists both sets).
fn narrow(inits: &[vigil_ipc_proto::InitConfig], euid: u32) -> Result<()> {
    let keep = plan::supervisor_steady_caps(
        inits,
        euid,
        probe::held_capabilities().contains(&caps::Capability::CAP_SETPCAP),
    )?;
    let narrowed = vigil_policies::narrow_supervisor(&keep)?;
    info!(
        kept = %names(&features::sorted(narrowed.after.iter().copied())),
        dropped = narrowed.before.difference(&narrowed.after).count(),
        "supervisor capabilities narrowed to what restarting the children needs"
    );
    Ok(())
}

/// Without a view of its own, a uid-0 supervisor keeps its writes (and, by inheritance, its
/// children's) to the runtime and journal dirs: the runtime's read-only mounts are read-only at
/// their top only. Its Landlock state for `vigil status`.
fn confine_writes(
    launch: Launch,
    virtual_root: bool,
    eval: &Evaluation,
    runtime_dir: &str,
    journal: &Path,
) -> Result<String> {
    match launch::write_confinement(launch, virtual_root, eval.privhelper_inspects_others()) {
        Ok(()) => {
            let writable = plan::supervisor_writable(runtime_dir, &journal.display().to_string());
            let state = vigil_policies::landlock::restrict_writes(&writable)
                .map_err(Error::ConfineWrites)?;
            if state.starts_with("writes: ") {
                info!(landlock = %state, "no view of its own: the supervisor confined its writes");
            } else {
                warn!(
                    landlock = %state,
                    "no view of its own and no Landlock: the supervisor's writes are not confined beyond the mounts it was given"
                );
            }
            Ok(state)
        }
        Err(launch::Unconfined::PrivhelperInspects) => {
            warn!(
                "no view of its own, and the privhelper inspects other processes (an opt-in feature), which a Landlock domain would forbid: the supervisor's writes are not confined beyond the mounts it was given"
            );
            Ok("off".into())
        }
        Err(_) => Ok("off".into()),
    }
}

/// What `vigil status` reports besides the processes: the view and each feature's state.
fn status_context(
    cfg: &AgentConfig,
    eval: &Evaluation,
    virtual_root: bool,
    launch: Launch,
) -> status::StatusContext {
    let mut states = eval.states();
    if let Some(f) = states.iter_mut().find(|f| f.name == Feature::VirtualRoot) {
        f.enabled = virtual_root;
        if virtual_root && launch.rootless {
            f.reason = "in a user namespace (rootless)".into();
        }
    }
    status::StatusContext {
        mount_mode: cfg.mount_mode.as_str().into(),
        virtual_root,
        non_root_mode: cfg.non_root_mode,
        user: cfg.user.clone(),
        features: states,
        landlock: "off".into(),
        allowed_uid: nix::unistd::getuid().as_raw(),
        refused: 0,
    }
}

fn hostname(cfg: &AgentConfig) -> String {
    cfg.hostname.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into())
    })
}
