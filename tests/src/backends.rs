//! Real backends for the delivery tests: the rotel OpenTelemetry collector (PyPI `rotel`, its
//! `rotel-agent` binary, blackhole exporter with detailed debug output) as the receiver,
//! `stunnel4` terminating TLS in front of it with certificates `openssl` makes at test time,
//! `dnsmasq` answering in a network namespace the test makes, a mount namespace in which the
//! agent sees test files at /etc/hosts, /etc/resolv.conf and the system CA bundle, and a small
//! HTTP CONNECT proxy (the one hand-written part: only its tunnel is under test).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::otlp::free_port;
use crate::{Output, sh};

/// The virtualenv `deploy/ci-deps.sh` installs the test tools into.
pub const VENV: &str = "/opt/vigil-deploy-venv";

fn tmpdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("tempdir")
}

fn kill_child(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

// ---------------------------------------------------------------------------------------------
// rotel
// ---------------------------------------------------------------------------------------------

/// The rotel-agent binary of the venv's `rotel` wheel (`ROTEL_AGENT` overrides).
pub fn rotel_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ROTEL_AGENT") {
        return PathBuf::from(p);
    }
    let lib = Path::new(VENV).join("lib");
    for e in std::fs::read_dir(&lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display())) {
        let p = e.unwrap().path().join("site-packages/rotel/rotel-agent");
        if p.exists() {
            return p;
        }
    }
    panic!("rotel-agent not found under {VENV}: run deploy/ci-deps.sh");
}

/// A running rotel collector: OTLP/HTTP on `addr`, everything it decodes printed.
pub struct Rotel {
    child: Child,
    pub addr: String,
    pub out: Output,
    _dir: tempfile::TempDir,
}

impl Rotel {
    pub fn start() -> Rotel {
        Self::start_on("127.0.0.1")
    }

    pub fn start_on(ip: &str) -> Rotel {
        Self::spawn(&format!("{ip}:{}", free_port()), &["logs", "metrics"])
    }

    /// OTLP/HTTP on exactly `addr` (a backend started again where it was), printing only the
    /// log records it decoded (a long run's metrics would be most of its output).
    pub fn start_logs_at(addr: &str) -> Rotel {
        Self::spawn(addr, &["logs"])
    }

    fn spawn(addr: &str, debug: &[&str]) -> Rotel {
        let dir = tmpdir("vigil-rotel-");
        let mut cmd = Command::new(rotel_bin());
        cmd.arg("start")
            .args(["--otlp-http-endpoint", addr])
            .args([
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(["--exporter", "blackhole"]);
        for d in debug {
            cmd.args(["--debug-log", d]);
        }
        let mut child = cmd
            .args(["--debug-log-verbosity", "detailed"])
            .args(["--batch-timeout", "50ms"])
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.path().join("rotel.log"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rotel-agent");
        let out = Output::default();
        out.spawn_reader(child.stdout.take().unwrap());
        out.spawn_reader(child.stderr.take().unwrap());
        wait_listening(addr, Duration::from_secs(20));
        Rotel {
            child,
            addr: addr.to_string(),
            out,
            _dir: dir,
        }
    }

    /// SIGTERM, as an operator stops it: it answers or drops what is in flight and prints
    /// what it accepted before it exits (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        crate::terminate(&mut self.child, grace);
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Bodies of the log records it decoded (`Body: Str(...)` lines).
    pub fn log_bodies(&self) -> Vec<String> {
        self.out
            .lines()
            .iter()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("Body: Str(")
                    .and_then(|b| b.strip_suffix(')'))
                    .map(String::from)
            })
            .collect()
    }

    /// How many decoded log records contain `needle` in their body.
    pub fn count_bodies(&self, needle: &str) -> usize {
        self.log_bodies()
            .iter()
            .filter(|b| b.contains(needle))
            .count()
    }

    /// Wait until a log body contains `needle`.
    pub fn wait_body(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.count_bodies(needle) > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Whether it printed a metric of this name (`-> Name: ...` / `Name: ...` lines).
    pub fn saw_metric(&self, name: &str) -> bool {
        self.out.lines().iter().any(|l| {
            l.trim() == format!("Name: {name}") || l.trim().ends_with(&format!("Name: {name}"))
        })
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        if std::thread::panicking() {
            let lines = self.out.lines();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- rotel (last lines) ---\n{}", tail.join("\n"));
        }
    }
}

/// Wait until something accepts TCP connections on `addr`.
pub fn wait_listening(addr: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// certificates
// ---------------------------------------------------------------------------------------------

/// A test PKI made with openssl: a CA, a server certificate for the given names and addresses,
/// a client certificate, and a second CA that signed nothing of this.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(dns: &[&str], ips: &[&str]) -> Pki {
        let dir = tmpdir("vigil-pki-");
        let d = dir.path().display().to_string();
        let key = |name: &str| {
            sh(&format!(
                "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {d}/{name}.key 2>/dev/null"
            ));
        };
        let ca = |name: &str| {
            key(name);
            sh(&format!(
                "openssl req -x509 -new -key {d}/{name}.key -out {d}/{name}.pem -days 2 -subj /CN={name} \
                 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null"
            ));
        };
        ca("ca");
        ca("other-ca");
        let mut san: Vec<String> = dns.iter().map(|n| format!("DNS:{n}")).collect();
        san.extend(ips.iter().map(|i| format!("IP:{i}")));
        let leaf = |name: &str, usage: &str, san: &str| {
            key(name);
            std::fs::write(
                format!("{d}/{name}.ext"),
                format!(
                    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n{san}"
                ),
            )
            .unwrap();
            sh(&format!(
                "openssl req -new -key {d}/{name}.key -out {d}/{name}.csr -subj /CN={name} 2>/dev/null && \
                 openssl x509 -req -in {d}/{name}.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial \
                 -out {d}/{name}.pem -days 2 -extfile {d}/{name}.ext 2>/dev/null"
            ));
        };
        leaf(
            "server",
            "serverAuth",
            &format!("subjectAltName={}", san.join(",")),
        );
        leaf("client", "clientAuth", "");
        // Readable by the agent user where the shipper would read them (it does not: the
        // supervisor hands the bytes over), and by stunnel.
        sh(&format!("chmod 0755 {d} && chmod 0644 {d}/*"));
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// stunnel
// ---------------------------------------------------------------------------------------------

/// stunnel4 terminating TLS on `accept` and forwarding to `connect` in plain text.
pub struct Stunnel {
    child: Child,
    pub accept: String,
    pub out: Output,
    _dir: tempfile::TempDir,
}

impl Stunnel {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `client_ca`: require a client certificate signed by it (mTLS).
    pub fn start(pki: &Pki, accept: &str, connect: &str, client_ca: Option<&str>) -> Stunnel {
        let dir = tmpdir("vigil-stunnel-");
        let mut conf = format!(
            "foreground = yes\npid =\ndebug = 5\n[otlp]\naccept = {accept}\nconnect = {connect}\n\
             cert = {}\nkey = {}\nsslVersionMin = TLSv1.2\n",
            pki.path("server.pem"),
            pki.path("server.key")
        );
        if let Some(ca) = client_ca {
            conf.push_str(&format!(
                "CAfile = {ca}\nverifyChain = yes\nrequireCert = yes\n"
            ));
        }
        let path = dir.path().join("stunnel.conf");
        std::fs::write(&path, conf).unwrap();
        let mut child = Command::new("stunnel4")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stunnel4");
        let out = Output::default();
        out.spawn_reader(child.stdout.take().unwrap());
        out.spawn_reader(child.stderr.take().unwrap());
        wait_listening(accept, Duration::from_secs(10));
        Stunnel {
            child,
            accept: accept.to_string(),
            out,
            _dir: dir,
        }
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!("--- stunnel ---\n{}", self.out.text());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a mount namespace for the agent
// ---------------------------------------------------------------------------------------------

/// A wrapper (see `AgentBuilder::wrapper`) that starts the agent in a new mount namespace in
/// which each `(file, target)` is bind-mounted over `target` (e.g. a test /etc/hosts).
pub fn mount_ns_wrapper(binds: &[(&str, &str)]) -> Vec<String> {
    let mut script = String::new();
    for (src, dst) in binds {
        script.push_str(&format!("mount --bind '{src}' '{dst}' && "));
    }
    script.push_str("exec \"$0\" \"$@\"");
    vec![
        "unshare".into(),
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        script,
    ]
}

/// A file with `text` in a fresh directory (kept alive by the returned guard).
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tmpdir("vigil-file-");
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    sh(&format!(
        "chmod 0755 {} && chmod 0644 {}",
        dir.path().display(),
        p.display()
    ));
    (dir, p.display().to_string())
}

/// /etc/hosts as it is plus `extra` lines.
pub fn hosts_with(extra: &str) -> String {
    let mut h = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !h.ends_with('\n') {
        h.push('\n');
    }
    h.push_str(extra);
    h.push('\n');
    h
}

// ---------------------------------------------------------------------------------------------
// a network namespace with dnsmasq
// ---------------------------------------------------------------------------------------------

/// A network namespace joined to ours by a veth pair: `host_ip` on our side (plus any extra
/// addresses), `ns_ip` inside, where dnsmasq answers from a hosts file the test can rewrite.
pub struct DnsNet {
    pub name: String,
    pub host_ip: String,
    pub ns_ip: String,
    pub spare_ip: String,
    veth: String,
    hosts_file: PathBuf,
    dnsmasq: Option<Child>,
    pub log: Output,
    _dir: tempfile::TempDir,
}

impl DnsNet {
    pub fn new(tag: &str, hosts: &str) -> DnsNet {
        let n = (std::process::id() % 200 + 20) as u8;
        let sub = format!("10.213.{n}");
        let name = format!("vigil-{tag}-{}", std::process::id());
        let veth = format!(
            "vg{}{}",
            &tag[..tag.len().min(3)],
            std::process::id() % 100000
        );
        let peer = format!("{veth}p");
        sh(&format!(
            "ip netns add {name} && ip link add {veth} type veth peer name {peer} && \
             ip link set {peer} netns {name} && \
             ip addr add {sub}.1/24 dev {veth} && ip addr add {sub}.3/24 dev {veth} && \
             ip link set {veth} up && \
             ip netns exec {name} ip addr add {sub}.2/24 dev {peer} && \
             ip netns exec {name} ip link set {peer} up && ip netns exec {name} ip link set lo up"
        ));
        let dir = tmpdir("vigil-dns-");
        sh(&format!("chmod 0755 {}", dir.path().display()));
        let hosts_file = dir.path().join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        sh(&format!("chmod 0644 {}", hosts_file.display()));
        let mut net = DnsNet {
            name,
            host_ip: format!("{sub}.1"),
            ns_ip: format!("{sub}.2"),
            spare_ip: format!("{sub}.3"),
            veth,
            hosts_file,
            dnsmasq: None,
            log: Output::default(),
            _dir: dir,
        };
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.name,
                "dnsmasq",
                "--keep-in-foreground",
            ])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--log-queries",
            ])
            .arg("--log-facility=-")
            .arg(format!("--listen-address={}", net.ns_ip))
            .arg(format!("--addn-hosts={}", net.hosts_file.display()))
            .args([
                "--local-ttl=0",
                "--user=nobody",
                "--group=nogroup",
                "--pid-file=",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dnsmasq");
        net.log.spawn_reader(child.stdout.take().unwrap());
        net.log.spawn_reader(child.stderr.take().unwrap());
        net.dnsmasq = Some(child);
        assert!(
            net.log
                .wait_for(Duration::from_secs(10), |l| l.contains("read ")
                    || l.contains("started"))
                .is_some(),
            "dnsmasq did not start: {}",
            net.log.text()
        );
        net
    }

    /// resolv.conf text pointing at this dnsmasq.
    pub fn resolv_conf(&self, search: &str) -> String {
        format!(
            "nameserver {}\nsearch {search}\noptions ndots:1 timeout:1 attempts:2\n",
            self.ns_ip
        )
    }

    /// Replace the names dnsmasq answers (SIGHUP re-reads --addn-hosts).
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts_file, hosts).unwrap();
        if let Some(c) = &self.dnsmasq {
            sh(&format!("kill -HUP {}", c.id()));
        }
    }

    /// Queries dnsmasq logged for `name`.
    pub fn queries_for(&self, name: &str) -> usize {
        self.log
            .lines()
            .iter()
            .filter(|l| l.contains("query[") && l.contains(name))
            .count()
    }
}

impl Drop for DnsNet {
    fn drop(&mut self) {
        if let Some(c) = self.dnsmasq.as_mut() {
            kill_child(c);
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if std::thread::panicking() {
            eprintln!("--- dnsmasq ---\n{}", self.log.text());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// an HTTP CONNECT proxy
// ---------------------------------------------------------------------------------------------

/// A minimal CONNECT proxy on 127.0.0.1: checks `Proxy-Authorization` when given one, resolves
/// target names from its own table (`names`: `host:port` → `ip:port`, as a proxy's resolver
/// would), opens the tunnel and copies bytes both ways. Records every CONNECT target it saw.
pub struct ConnectProxy {
    pub port: u16,
    pub connects: Arc<Mutex<Vec<String>>>,
    pub refused: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    pub fn start(auth: Option<&str>, names: &[(&str, &str)]) -> ConnectProxy {
        let names: Vec<(String, String)> = names
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let connects = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, r2, s2) = (connects.clone(), refused.clone(), stop.clone());
        let want = auth.map(String::from);
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (c3, r3, w, n) = (c2.clone(), r2.clone(), want.clone(), names.clone());
                        std::thread::spawn(move || proxy_one(s, w, &n, c3, r3));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        ConnectProxy {
            port,
            connects,
            refused,
            stop,
        }
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn proxy_one(
    mut s: TcpStream,
    want_auth: Option<String>,
    names: &[(String, String)],
    connects: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<u32>>,
) {
    s.set_nonblocking(false).ok();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut auth = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("proxy-authorization")
        {
            auth = Some(v.trim().to_string());
        }
    }
    let mut parts = line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        let _ = s.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if want_auth.is_some() && auth != want_auth {
        *refused.lock().unwrap() += 1;
        let _ =
            s.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let addr = names
        .iter()
        .find(|(n, _)| n == target)
        .map_or(target, |(_, a)| a.as_str());
    let Ok(up) = TcpStream::connect(addr) else {
        let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    connects.lock().unwrap().push(target.to_string());
    let _ = s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    // Anything the reader buffered beyond the head belongs to the tunnel.
    let buffered = r.buffer().to_vec();
    let mut up_w = up.try_clone().unwrap();
    if !buffered.is_empty() {
        let _ = up_w.write_all(&buffered);
    }
    let mut down = s.try_clone().unwrap();
    let mut up_r = up;
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_r, &mut down);
        let _ = down.shutdown(Shutdown::Write);
    });
    let mut s_r = s;
    let _ = std::io::copy(&mut s_r as &mut dyn Read, &mut up_w);
    let _ = up_w.shutdown(Shutdown::Write);
    let _ = t.join();
}
