//! Name resolution inside the sandboxed shipper, in the host's order: the `/etc/hosts` and the
//! nameservers of `/etc/resolv.conf` the supervisor handed over (search list, ndots, timeout and
//! attempts honoured), A and AAAA. The stub resolver is hickory-resolver on a current-thread
//! tokio runtime (no threads); a lookup blocks the shipper's loop for at most
//! [`LOOKUP_BUDGET`], like its connects do. Answers are kept at most [`MAX_AGE`] (hickory's
//! cache is capped the same), and dropped at once when a connection to them fails, so a
//! backend that moves is followed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_resolver::net::runtime::{
    RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime,
};
use hickory_resolver::{Hosts, Resolver as Hickory};

type StubResolver = Hickory<UnboundUdp>;

/// Longest an answer is used before it is asked for again.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Longest one lookup (every name of the search list, every nameserver, every attempt) blocks.
pub const LOOKUP_BUDGET: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {host}: {msg}")]
    Failed { host: String, msg: String },
    #[error("cannot resolve {host}: no nameserver in /etc/resolv.conf and not in /etc/hosts")]
    NoNameserver { host: String },
    #[error("resolver runtime: {0}")]
    Runtime(std::io::Error),
}

pub struct Resolver {
    /// The stub resolver and its runtime; `None` when resolv.conf names no nameserver
    /// (/etc/hosts only), and then no runtime (epoll, eventfd) exists either.
    dns: Option<(tokio::runtime::Runtime, StubResolver)>,
    hosts: Arc<Hosts>,
    cache: HashMap<String, (Vec<IpAddr>, Instant)>,
    /// Lookups that went to the nameservers (not answered from /etc/hosts or the cache).
    pub queries: u64,
}

impl Resolver {
    /// From the bytes of resolv.conf and hosts (either may be absent).
    pub fn new(resolv_conf: Option<&[u8]>, hosts: Option<&[u8]>) -> Result<Self, ResolveError> {
        let mut h = Hosts::default();
        if let Some(b) = hosts {
            // A malformed line is skipped by the parser; an I/O error cannot happen on a slice.
            let _ = h.read_hosts_conf(b);
        }
        let hosts = Arc::new(h);
        let dns = match resolv_conf.map(hickory_resolver::system_conf::parse_resolv_conf) {
            Some(Ok((config, opts))) => Some(build(config, opts, hosts.clone())?),
            Some(Err(e)) => {
                tracing::warn!("resolv.conf: {e}; names are looked up in /etc/hosts only");
                None
            }
            None => None,
        };
        Ok(Resolver {
            dns,
            hosts,
            cache: HashMap::new(),
            queries: 0,
        })
    }

    /// Addresses of `host` (an IP literal is returned as is), IPv4 first as glibc orders them
    /// for most hosts, then IPv6.
    pub fn lookup(&mut self, host: &str, now: Instant) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if vigil_ipc_proto::delivery::is_localhost(host) {
            return Ok(vec![
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ]);
        }
        if let Some((addrs, at)) = self.cache.get(host)
            && now.duration_since(*at) < MAX_AGE
        {
            return Ok(addrs.clone());
        }
        let addrs = self.query(host)?;
        self.cache.insert(host.to_string(), (addrs.clone(), now));
        Ok(addrs)
    }

    /// Forget what is known of `host` (a connection to it failed): the next lookup asks again.
    pub fn forget(&mut self, host: &str) {
        self.cache.remove(host);
        if let Some((_, d)) = &self.dns {
            d.clear_cache();
        }
    }

    fn query(&mut self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let fail = |msg: String| ResolveError::Failed {
            host: host.to_string(),
            msg,
        };
        let Some((rt, dns)) = &self.dns else {
            let from_hosts = hosts_lookup(&self.hosts, host);
            if from_hosts.is_empty() {
                return Err(ResolveError::NoNameserver {
                    host: host.to_string(),
                });
            }
            return Ok(from_hosts);
        };
        let lookup =
            rt.block_on(async { tokio::time::timeout(LOOKUP_BUDGET, dns.lookup_ip(host)).await });
        self.queries += 1;
        let mut addrs: Vec<IpAddr> = match lookup {
            Ok(Ok(l)) => l.iter().collect(),
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail(format!("no answer within {LOOKUP_BUDGET:?}"))),
        };
        addrs.sort_by_key(|a| a.is_ipv6());
        addrs.dedup();
        if addrs.is_empty() {
            return Err(fail("no A or AAAA record".into()));
        }
        Ok(addrs)
    }
}

fn build(
    config: ResolverConfig,
    mut opts: ResolverOpts,
    hosts: Arc<Hosts>,
) -> Result<(tokio::runtime::Runtime, StubResolver), ResolveError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(ResolveError::Runtime)?;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // /etc/hosts comes from the supervisor's bytes, not from the path (Landlock forbids it).
    opts.use_hosts_file = ResolveHosts::Never;
    opts.positive_max_ttl = Some(MAX_AGE);
    opts.negative_max_ttl = Some(Duration::from_secs(5));
    opts.timeout = opts.timeout.min(Duration::from_secs(2));
    opts.attempts = opts.attempts.clamp(1, 2);
    let mut r = {
        // The runtime's reactor must be entered while the resolver is built.
        let _g = rt.enter();
        Hickory::builder_with_config(config, UnboundUdp::default())
            .with_options(opts)
            .build()
            .map_err(|e| ResolveError::Runtime(std::io::Error::other(e.to_string())))?
    };
    r.set_hosts(hosts);
    Ok((rt, r))
}

/// hickory's tokio provider, except that UDP query sockets are not bound: hickory binds each to
/// a random port of its choosing, which needs `bind` in the seccomp filter and is refused by
/// systemd's `SocketBindDeny=any`; an unbound socket gets a random ephemeral port from the
/// kernel at its first send (Linux randomises those), without any bind.
#[derive(Clone, Default)]
pub struct UnboundUdp(TokioRuntimeProvider);

impl RuntimeProvider for UnboundUdp {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = tokio::net::UdpSocket;
    type Tcp = AsyncIoTokioAsStd<tokio::net::TcpStream>;

    fn create_handle(&self) -> Self::Handle {
        self.0.create_handle()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = std::io::Result<Self::Tcp>>>> {
        self.0.connect_tcp(server_addr, bind_addr, timeout)
    }

    fn bind_udp(
        &self,
        _local_addr: SocketAddr,
        server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = std::io::Result<Self::Udp>>>> {
        Box::pin(async move { unbound_udp(server_addr) })
    }
}

fn unbound_udp(server: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let family = match server {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

/// Addresses of `host` in /etc/hosts alone (no nameserver configured).
fn hosts_lookup(hosts: &Hosts, host: &str) -> Vec<IpAddr> {
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::{Name, RData, RecordType};
    let Ok(name) = Name::from_utf8(host) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in [RecordType::A, RecordType::AAAA] {
        if let Some(l) = hosts.lookup_static_host(&Query::query(name.clone(), t)) {
            for r in l.answers() {
                match &r.data {
                    RData::A(a) => out.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_localhost_need_nothing() {
        let mut r = Resolver::new(None, None).unwrap();
        let now = Instant::now();
        assert_eq!(
            r.lookup("192.0.2.7", now).unwrap(),
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(r.lookup("localhost", now).unwrap().len(), 2);
        assert!(matches!(
            r.lookup("otlp.example.test", now),
            Err(ResolveError::NoNameserver { .. })
        ));
        assert_eq!(r.queries, 0);
    }

    #[test]
    fn hosts_file_without_nameserver() {
        let hosts = b"127.0.0.1 localhost\n192.0.2.10 otlp.example.test otlp\n2001:db8::10 otlp.example.test\n";
        let mut r = Resolver::new(None, Some(hosts)).unwrap();
        let a = r.lookup("otlp.example.test", Instant::now()).unwrap();
        assert_eq!(
            a,
            vec![
                "192.0.2.10".parse::<IpAddr>().unwrap(),
                "2001:db8::10".parse().unwrap()
            ]
        );
    }

    #[test]
    fn hosts_before_dns_and_cache_ages_out() {
        // A nameserver nobody answers on: /etc/hosts must answer without asking it.
        let resolv = b"nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";
        let hosts = b"192.0.2.11 backend.example.test\n";
        let mut r = Resolver::new(Some(resolv), Some(hosts)).unwrap();
        let t0 = Instant::now();
        let a = r.lookup("backend.example.test", t0).unwrap();
        assert_eq!(a, vec!["192.0.2.11".parse::<IpAddr>().unwrap()]);
        let q = r.queries;
        r.lookup("backend.example.test", t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(r.queries, q, "answered from the cache");
        r.lookup("backend.example.test", t0 + MAX_AGE).unwrap();
        assert_eq!(r.queries, q + 1, "asked again after MAX_AGE");
        r.forget("backend.example.test");
        assert!(r.cache.is_empty());
    }
}
