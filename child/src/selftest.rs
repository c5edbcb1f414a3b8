//! Sandbox self-test probes, for the end-to-end tests: with `VIGIL_SELFTEST=<role>:<probe>[,...]`
//! in the supervisor's environment, a child runs the named probes right after its sandbox is in
//! place and reports each outcome to the supervisor as a `Warning` (which the supervisor logs).
//!
//! A probe can only make the process *try* something from inside its own sandbox, so the hook
//! grants nothing: the interesting outcome is the refusal. Probes:
//!
//! - `write-host`: try to create a file in several places of the host view and the runtime dir.
//! - `kmsg`: try to open /dev/kmsg.
//! - `control-garbage`: send malformed frames to the supervisor (a hostile child).
//! - `sys:<name>`: call a forbidden syscall (`bpf`, `ptrace`, `setns`, `mount`, `finit_module`,
//!   `unshare`, `init_module`); the seccomp filter kills the role, the supervisor reports it.

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

fn run_probe(probe: &str, init: &InitConfig, control: &Channel) -> String {
    match probe {
        "write-host" => write_host(init),
        "kmsg" => outcome(std::fs::File::open("/dev/kmsg").map(drop)),
        "control-garbage" => control_garbage(control),
        p => match p.strip_prefix("sys:") {
            Some(name) => forbidden_syscall(name),
            None => format!("unknown probe {p}"),
        },
    }
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
    let pid = std::process::id();
    let mut parts = Vec::new();
    for dir in targets {
        let path = dir.join(format!(".vigil-selftest-{pid}"));
        let res = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        if res.is_ok() {
            let _ = std::fs::remove_file(&path);
        }
        parts.push(format!("{}={}", dir.display(), outcome(res.map(drop))));
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
