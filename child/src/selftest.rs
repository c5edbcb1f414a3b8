//! Sandbox self-test probes, for the end-to-end tests: with `VIGIL_SELFTEST=<role>:<probe>[,...]`
//! in the supervisor's environment, a child runs the named probes right after its sandbox is in
//! place and reports each outcome to the supervisor as a `Warning` (which the supervisor logs).
//!
//! A probe can only make the process *try* something from inside its own sandbox, so the hook
//! grants nothing: the interesting outcome is the refusal. Probes:
//!
//! - `write-host`: try to create a file in several places of the host view and the runtime dir.
//! - `write:<path>`: try to create a file in the directory `<path>`, or to open the existing
//!   file `<path>` for writing (nothing is written).
//! - `kmsg`: try to open /dev/kmsg.
//! - `control-garbage`: send malformed frames to the supervisor (a hostile child).
//! - `sys:<name>`: call a forbidden syscall (`bpf`, `ptrace`, `setns`, `mount`, `finit_module`,
//!   `unshare`, `init_module`); the seccomp filter kills the role, the supervisor reports it.
//!
//! `supervisor:write:<path>` runs in the supervisor itself, once its own confinement is in
//! place and before the children start, and is logged as `selftest supervisor write:<path>: ..`.

use std::path::Path;

use vigil_ipc_proto::{Channel, ChildToSupervisor, InitConfig, Role};

pub const ENV: &str = "VIGIL_SELFTEST";

/// Run the probes meant for `role`, if any are configured.
pub fn run_from_env(role: Role, init: &InitConfig, control: &Channel) {
    let Ok(spec) = std::env::var(ENV) else { return };
    for item in spec.split(',') {
        let Some((r, probe)) = item.split_once(':') else {
            continue;
        };
        if Role::parse(r) != Some(role) {
            continue;
        }
        let outcome = run_probe(probe, init, control);
        let _ = control.send(&ChildToSupervisor::Warning(format!(
            "selftest {role} {probe}: {outcome}"
        )));
    }
}

/// The supervisor's own probes (only `write:<path>`): `(probe, outcome)` per item.
pub fn supervisor_probes() -> Vec<(String, String)> {
    let Ok(spec) = std::env::var(ENV) else {
        return Vec::new();
    };
    spec.split(',')
        .filter_map(|item| item.split_once(':'))
        .filter(|(r, _)| Role::parse(r) == Some(Role::Supervisor))
        .map(|(_, probe)| {
            let outcome = match probe.strip_prefix("write:") {
                Some(path) => write_probe(Path::new(path)),
                None => format!("unknown probe {probe}"),
            };
            (probe.to_string(), outcome)
        })
        .collect()
}

fn run_probe(probe: &str, init: &InitConfig, control: &Channel) -> String {
    match probe {
        "write-host" => write_host(init),
        "kmsg" => outcome(std::fs::File::open("/dev/kmsg").map(drop)),
        "control-garbage" => control_garbage(control),
        p => {
            if let Some(name) = p.strip_prefix("sys:") {
                forbidden_syscall(name)
            } else if let Some(path) = p.strip_prefix("write:") {
                write_probe(Path::new(path))
            } else {
                format!("unknown probe {p}")
            }
        }
    }
}

/// Create (then remove) a file in the directory `path`, or open the existing non-directory
/// `path` for writing without writing anything (a sysctl, a device): the refusal, if any,
/// comes at open.
fn write_probe(path: &Path) -> String {
    if path.is_dir() {
        return create_in(path);
    }
    outcome(std::fs::OpenOptions::new().write(true).open(path).map(drop))
}

fn create_in(dir: &Path) -> String {
    let path = dir.join(format!(".vigil-selftest-{}", std::process::id()));
    let res = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path);
    if res.is_ok() {
        let _ = std::fs::remove_file(&path);
    }
    outcome(res.map(drop))
}

/// Datagrams a compromised child could send its supervisor: truncated, lying lengths, unknown
/// variants, oversized.
fn control_garbage(control: &Channel) -> String {
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 2],
        [&9999u32.to_le_bytes()[..], b"xx"].concat(),
        [&1u32.to_le_bytes()[..], &[0x7f][..]].concat(),
        vec![0xff; 70_000],
    ];
    junk.push([&4u32.to_le_bytes()[..], &[0, 1, 2, 3][..]].concat());
    let sent = junk.iter().filter(|j| control.send_raw(j).is_ok()).count();
    format!("sent {sent} malformed frames")
}

fn write_host(init: &InitConfig) -> String {
    let root = Path::new(&init.host_root);
    let journal = init
        .shipper
        .journal_dir
        .clone()
        .unwrap_or_else(|| format!("{}/journal", init.runtime_dir));
    let targets = [
        root.join("etc"),
        root.join("tmp"),
        root.join("var/tmp"),
        Path::new(&init.runtime_dir).to_path_buf(),
        Path::new(&journal).to_path_buf(),
    ];
    let mut parts = Vec::new();
    for dir in targets {
        parts.push(format!("{}={}", dir.display(), create_in(&dir)));
    }
    parts.push(format!(
        "/proc/sys/kernel/hostname={}",
        outcome(std::fs::write("/proc/sys/kernel/hostname", b"x"))
    ));
    parts.join(" ")
}

fn outcome(r: std::io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => match e.raw_os_error() {
            Some(n) => format!("{:?}", nix::errno::Errno::from_raw(n)),
            None => e.to_string(),
        },
    }
}

/// Call a syscall the role's seccomp policy forbids. If the policy is in place the process is
/// killed inside this function; the return value only exists when the call was let through.
fn forbidden_syscall(name: &str) -> String {
    let nr = match name {
        "bpf" => libc::SYS_bpf,
        "ptrace" => libc::SYS_ptrace,
        "setns" => libc::SYS_setns,
        "mount" => libc::SYS_mount,
        "unshare" => libc::SYS_unshare,
        "init_module" => libc::SYS_init_module,
        "finit_module" => libc::SYS_finit_module,
        other => return format!("unknown syscall {other}"),
    };
    let rc = raw_syscall_with_bad_args(nr);
    format!(
        "NOT KILLED: syscall returned {rc} ({})",
        std::io::Error::last_os_error()
    )
}

fn raw_syscall_with_bad_args(nr: libc::c_long) -> libc::c_long {
    // SAFETY: every argument is an invalid fd (-1) or a null pointer, so even if the kernel
    // let the call through it could only fail (EBADF/EFAULT/EINVAL); no memory of ours is
    // handed to the kernel.
    unsafe { libc::syscall(nr, -1 as libc::c_long, 0usize, 0usize, 0usize, 0usize) }
}
