//! A named network namespace joined to the host by a veth pair, for the tests that need
//! traffic or interfaces in another namespace (root, `ip` from iproute2). Removed on drop, also
//! when the test fails.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Run `ip` with `args`; panics with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct VethNetns {
    pub name: String,
    /// The end that stays in this namespace.
    pub host_if: String,
    /// The end inside `name`.
    pub ns_if: String,
    /// The /30 addresses of the two ends, when [`VethNetns::addressed`] set them.
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

impl VethNetns {
    /// Namespace `name`, veth `host_if` here and `ns_if` in it, no address, links down.
    /// Leftovers of a killed run with the same names are removed first.
    pub fn new(name: String, host_if: String, ns_if: String) -> VethNetns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let n = VethNetns {
            name,
            host_if,
            ns_if,
            host_ip: Ipv4Addr::UNSPECIFIED,
            ns_ip: Ipv4Addr::UNSPECIFIED,
        };
        ip(&["netns", "add", &n.name]);
        ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", &n.ns_if,
        ]);
        ip(&["link", "set", &n.ns_if, "netns", &n.name]);
        n
    }

    /// As [`VethNetns::new`], with `host_ip`/30 and `ns_ip`/30 on the two ends, both up, and
    /// the namespace's loopback up.
    pub fn addressed(
        name: String,
        host_if: String,
        ns_if: String,
        host_ip: Ipv4Addr,
        ns_ip: Ipv4Addr,
    ) -> VethNetns {
        let mut n = VethNetns::new(name, host_if, ns_if);
        (n.host_ip, n.ns_ip) = (host_ip, ns_ip);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &n.host_if]);
        ip(&["link", "set", &n.host_if, "up"]);
        let ns = n.name.as_str();
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &n.ns_if,
        ]);
        ip(&["-n", ns, "link", "set", &n.ns_if, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        n
    }

    /// The interface index of the host end.
    pub fn host_ifindex(&self) -> u32 {
        std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", self.host_if))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Run `f` on a thread that entered the namespace (setns is per thread for CLONE_NEWNET);
    /// sockets it makes stay in the namespace.
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the netns");
            // SAFETY: setns on a descriptor we hold; affects this thread only.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for VethNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A named network namespace with nothing but its loopback, up: what a process run in it
/// (`ip netns exec`) sees of sockets is only what the test opens there. Removed on drop;
/// leftovers of a killed run with the same name are removed first.
pub struct LoopbackNetns {
    pub name: String,
}

impl LoopbackNetns {
    pub fn new(name: String) -> LoopbackNetns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let n = LoopbackNetns { name };
        ip(&["-n", &n.name, "link", "set", "lo", "up"]);
        n
    }
}

impl Drop for LoopbackNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
