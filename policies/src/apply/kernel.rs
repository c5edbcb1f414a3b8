//! The syscalls that change a process's privileges: the only door [`super::apply`] and
//! [`super::narrow_supervisor`] have to the kernel. [`Linux`] makes them; the recording kernel
//! of the unit tests writes them down and fails where told, so the order of the drop and its
//! error paths are tested without root.

use std::collections::HashSet;
use std::os::fd::RawFd;

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid};
use vigil_ipc_proto::LandlockPlan;

use super::SandboxError;
use crate::plan::seccomp::Policy;

pub trait Kernel {
    fn caps(&self, set: CapSet) -> Result<HashSet<Capability>, SandboxError>;
    fn drop_bounding(&mut self, cap: Capability) -> Result<(), SandboxError>;
    fn drop_ambient(&mut self, cap: Capability) -> Result<(), SandboxError>;
    /// Set the inheritable, effective or permitted set.
    fn set_caps(&mut self, set: CapSet, caps: &HashSet<Capability>) -> Result<(), SandboxError>;
    fn set_keepcaps(&mut self, on: bool) -> Result<(), SandboxError>;
    fn setgroups(&mut self, groups: &[u32]) -> Result<(), SandboxError>;
    fn setresgid(&mut self, gid: u32) -> Result<(), SandboxError>;
    fn setresuid(&mut self, uid: u32) -> Result<(), SandboxError>;
    fn set_non_dumpable(&mut self) -> Result<(), SandboxError>;
    fn set_no_new_privs(&mut self) -> Result<(), SandboxError>;
    fn no_new_privs(&self) -> bool;
    /// The Landlock ABI of the kernel (0: none).
    fn landlock_abi(&self) -> i32;
    /// Restrict ourselves with a ruleset; the status text for the report.
    fn landlock_restrict(&mut self, plan: &LandlockPlan, abi: i32) -> Result<String, SandboxError>;
    /// Install the SIGSYS reporter on `report_fd`, then load the compiled policy.
    fn seccomp_load(&mut self, policy: &Policy, report_fd: RawFd) -> Result<(), SandboxError>;
    /// Real uid and gid.
    fn ids(&self) -> (u32, u32);
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> SandboxError {
    move |e| SandboxError::Step {
        step,
        source: e.into(),
    }
}

fn caps_err(step: &'static str) -> impl FnOnce(caps::errors::CapsError) -> SandboxError {
    move |source| SandboxError::Caps { step, source }
}

/// The running kernel.
pub struct Linux;

impl Kernel for Linux {
    fn caps(&self, set: CapSet) -> Result<HashSet<Capability>, SandboxError> {
        caps::read(None, set).map_err(caps_err("read a capability set"))
    }
    fn drop_bounding(&mut self, cap: Capability) -> Result<(), SandboxError> {
        caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("drop bounding"))
    }
    fn drop_ambient(&mut self, cap: Capability) -> Result<(), SandboxError> {
        caps::drop(None, CapSet::Ambient, cap).map_err(caps_err("drop ambient"))
    }
    fn set_caps(&mut self, set: CapSet, caps: &HashSet<Capability>) -> Result<(), SandboxError> {
        caps::set(None, set, caps).map_err(caps_err("set a capability set"))
    }
    fn set_keepcaps(&mut self, on: bool) -> Result<(), SandboxError> {
        nix::sys::prctl::set_keepcaps(on).map_err(sys("PR_SET_KEEPCAPS"))
    }
    fn setgroups(&mut self, groups: &[u32]) -> Result<(), SandboxError> {
        let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(sys("setgroups"))
    }
    fn setresgid(&mut self, gid: u32) -> Result<(), SandboxError> {
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g).map_err(sys("setresgid"))
    }
    fn setresuid(&mut self, uid: u32) -> Result<(), SandboxError> {
        let u = Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u).map_err(sys("setresuid"))
    }
    fn set_non_dumpable(&mut self) -> Result<(), SandboxError> {
        nix::sys::prctl::set_dumpable(false).map_err(sys("PR_SET_DUMPABLE"))
    }
    fn set_no_new_privs(&mut self) -> Result<(), SandboxError> {
        nix::sys::prctl::set_no_new_privs().map_err(sys("PR_SET_NO_NEW_PRIVS"))
    }
    fn no_new_privs(&self) -> bool {
        nix::sys::prctl::get_no_new_privs().unwrap_or(false)
    }
    fn landlock_abi(&self) -> i32 {
        super::landlock::kernel_abi()
    }
    fn landlock_restrict(&mut self, plan: &LandlockPlan, abi: i32) -> Result<String, SandboxError> {
        Ok(super::landlock::restrict_self(plan, abi)?)
    }
    fn seccomp_load(&mut self, policy: &Policy, report_fd: RawFd) -> Result<(), SandboxError> {
        let filter = super::seccomp::compile(policy)?;
        super::report::install(report_fd)?;
        filter.load().map_err(super::seccomp::CompileError::from)?;
        Ok(())
    }
    fn ids(&self) -> (u32, u32) {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }
}

/// A kernel that records every call and fails the one it is told to (unit tests).
#[cfg(test)]
pub mod recording {
    use std::collections::HashSet;

    use super::*;

    pub struct Recording {
        /// The calls made, in order (`setresuid(990)`, `drop_bounding(CAP_SYS_ADMIN)`, ...).
        pub calls: Vec<String>,
        /// A call whose name starts with this fails with EPERM (and is recorded).
        pub fail: Option<&'static str>,
        /// Bounding, permitted, effective, inheritable, ambient (see [`Recording::set`]).
        sets: [HashSet<Capability>; 5],
        pub abi: i32,
        nnp: bool,
        uid: u32,
        gid: u32,
    }

    impl Recording {
        /// Root with every capability, Landlock ABI `abi`.
        pub fn root(abi: i32) -> Recording {
            let all: HashSet<Capability> = caps::all().into_iter().collect();
            let sets = [
                all.clone(),
                all.clone(),
                all,
                HashSet::new(),
                HashSet::new(),
            ];
            Recording {
                calls: Vec::new(),
                fail: None,
                sets,
                abi,
                nnp: false,
                uid: 0,
                gid: 0,
            }
        }

        /// The call names only (`setresuid`, `drop_bounding`, ...), consecutive repeats once.
        pub fn steps(&self) -> Vec<&str> {
            let mut v: Vec<&str> = self
                .calls
                .iter()
                .map(|c| c.split('(').next().unwrap_or(c))
                .collect();
            v.dedup();
            v
        }

        fn call(&mut self, c: String) -> Result<(), SandboxError> {
            let fails = self.fail.is_some_and(|f| c.starts_with(f));
            self.calls.push(c);
            if fails {
                return Err(SandboxError::Step {
                    step: "recorded failure",
                    source: std::io::Error::from_raw_os_error(libc::EPERM),
                });
            }
            Ok(())
        }

        fn index(set: CapSet) -> usize {
            match set {
                CapSet::Bounding => 0,
                CapSet::Permitted => 1,
                CapSet::Effective => 2,
                CapSet::Inheritable => 3,
                CapSet::Ambient => 4,
            }
        }

        pub fn set(&mut self, set: CapSet) -> &mut HashSet<Capability> {
            &mut self.sets[Self::index(set)]
        }

        pub fn get(&self, set: CapSet) -> &HashSet<Capability> {
            &self.sets[Self::index(set)]
        }
    }

    impl Kernel for Recording {
        fn caps(&self, set: CapSet) -> Result<HashSet<Capability>, SandboxError> {
            Ok(self.get(set).clone())
        }
        fn drop_bounding(&mut self, cap: Capability) -> Result<(), SandboxError> {
            self.call(format!("drop_bounding({cap})"))?;
            self.set(CapSet::Bounding).remove(&cap);
            Ok(())
        }
        fn drop_ambient(&mut self, cap: Capability) -> Result<(), SandboxError> {
            self.call(format!("drop_ambient({cap})"))?;
            self.set(CapSet::Ambient).remove(&cap);
            Ok(())
        }
        fn set_caps(
            &mut self,
            set: CapSet,
            caps: &HashSet<Capability>,
        ) -> Result<(), SandboxError> {
            self.call(format!("set_caps({set:?}, {})", caps.len()))?;
            *self.set(set) = caps.clone();
            Ok(())
        }
        fn set_keepcaps(&mut self, on: bool) -> Result<(), SandboxError> {
            self.call(format!("set_keepcaps({on})"))
        }
        fn setgroups(&mut self, groups: &[u32]) -> Result<(), SandboxError> {
            self.call(format!("setgroups({groups:?})"))
        }
        fn setresgid(&mut self, gid: u32) -> Result<(), SandboxError> {
            self.call(format!("setresgid({gid})"))?;
            self.gid = gid;
            Ok(())
        }
        fn setresuid(&mut self, uid: u32) -> Result<(), SandboxError> {
            self.call(format!("setresuid({uid})"))?;
            self.uid = uid;
            Ok(())
        }
        fn set_non_dumpable(&mut self) -> Result<(), SandboxError> {
            self.call("set_non_dumpable".into())
        }
        fn set_no_new_privs(&mut self) -> Result<(), SandboxError> {
            self.call("set_no_new_privs".into())?;
            self.nnp = true;
            Ok(())
        }
        fn no_new_privs(&self) -> bool {
            self.nnp
        }
        fn landlock_abi(&self) -> i32 {
            self.abi
        }
        fn landlock_restrict(
            &mut self,
            plan: &LandlockPlan,
            abi: i32,
        ) -> Result<String, SandboxError> {
            self.call(format!("landlock_restrict({} paths)", plan.read_only.len()))?;
            Ok(format!("enforced (ABI {abi})"))
        }
        fn seccomp_load(&mut self, policy: &Policy, _fd: RawFd) -> Result<(), SandboxError> {
            self.call(format!("seccomp_load({})", policy.name))
        }
        fn ids(&self) -> (u32, u32) {
            (self.uid, self.gid)
        }
    }
}
