//! Test harness: the shipper's run() driven over real SEQPACKET channels, this test playing
//! supervisor and collector, exporting to the OTLP receiver of `vigil-testkit` (re-exported).
#![allow(dead_code)]

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use vigil_ipc_proto::*;
// Not every test binary that includes this module uses all of it.
#[allow(unused_imports)]
pub use vigil_testkit::otlp::{
    Received, Receiver, RecvLog, RecvMetric, Reply, any_to_string, attr_map, count_items, free_port,
};

// ----------------------------------------------------------------------------------------
// Shipper under test
// ----------------------------------------------------------------------------------------

pub fn init(journal: &Path, otlp: Option<OtlpConfig>, json_lines: &str) -> InitConfig {
    vigil_testkit::init(Role::Shipper)
        .runtime_dir(journal.parent().unwrap().display().to_string())
        .hostname("test-host")
        .shipper(ShipperConfig {
            journal_dir: Some(journal.display().to_string()),
            json_lines: json_lines.into(),
            otlp,
            ..ShipperConfig::default()
        })
        .build()
}

pub fn otlp_cfg(endpoint: String) -> OtlpConfig {
    OtlpConfig {
        endpoint,
        timeout_ms: 2000,
        max_batch_records: 100,
        max_batch_delay_ms: 20,
        retry_initial_ms: 20,
        retry_max_ms: 200,
        ..OtlpConfig::default()
    }
}

pub struct Shipper {
    pub control: Channel,
    pub collector: Channel,
    pub resume: Option<u64>,
    pub thread: Option<JoinHandle<Result<(), vigil_shipper::ShipperError>>>,
}

/// A sealed-enough memfd of shipper inputs, as the supervisor hands them over.
pub fn inputs_fd(inputs: &vigil_ipc_proto::delivery::ShipperInputs) -> std::os::fd::OwnedFd {
    use std::io::Write;
    let fd = nix::sys::memfd::memfd_create(c"test-inputs", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(&inputs.encode().unwrap()).unwrap();
    f.into()
}

impl Shipper {
    pub fn start(init: InitConfig) -> Shipper {
        Self::start_with(init, Default::default(), |_| {})
    }

    /// With descriptors attached to Init, `before` run on the shipper's thread first (to
    /// sandbox it).
    pub fn start_with(
        init: InitConfig,
        attachments: vigil_shipper::Attachments,
        before: impl FnOnce(&Path) + Send + 'static,
    ) -> Shipper {
        let (control, ship_control) = Channel::pair().unwrap();
        let (mut collector, ship_collector) = Channel::pair().unwrap();
        let thread = std::thread::spawn(move || {
            before(Path::new(
                init.shipper.journal_dir.as_deref().unwrap_or("/"),
            ));
            vigil_shipper::run(&init, ship_control, ship_collector, attachments)
        });
        let resume = handshake(&mut collector);
        Shipper {
            control,
            collector,
            resume,
            thread: Some(thread),
        }
    }

    /// Send a batch, wait for its answer: true for Ack, false for Nack.
    pub fn send(&mut self, seq: u64, records: Vec<Record>) -> bool {
        self.collector
            .send(&CollectorToShipper::Batch(Batch { seq, records }))
            .unwrap();
        wait_reply(&mut self.collector, seq)
    }

    pub fn stats(&mut self) -> RoleStats {
        self.control.send(&SupervisorToChild::StatsRequest).unwrap();
        self.control
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        loop {
            match self.control.recv::<ChildToSupervisor>().unwrap() {
                ChildToSupervisor::Stats(s) => return s,
                _ => continue,
            }
        }
    }

    pub fn shutdown(mut self) {
        self.control.send(&SupervisorToChild::Shutdown).unwrap();
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

/// Landlock (journal dir read-write, TCP connect to `port` only, no bind) and a seccomp
/// allowlist of exactly [`vigil_shipper::SYSCALLS`] and `extra` on the calling thread, with
/// checks that they bite. The ruleset is applied to that thread only (Landlock without TSYNC
/// restricts the calling thread), so the test's other threads are unaffected.
pub fn sandbox_this_thread(jd: &Path, port: u16, extra: &[&str]) {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, path_beneath_rules,
    };
    let abi = ABI::V4;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .unwrap()
        .handle_access(AccessNet::ConnectTcp | AccessNet::BindTcp)
        .unwrap()
        .create()
        .unwrap()
        .add_rules(path_beneath_rules([jd], AccessFs::from_all(abi)))
        .unwrap()
        .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
        .unwrap()
        .restrict_self()
        .unwrap();
    assert_eq!(status.ruleset, RulesetStatus::FullyEnforced);
    // The sandbox is real: nothing outside the journal directory, no other port.
    assert!(std::fs::read("/etc/hostname").is_err());
    assert!(std::fs::write(jd.parent().unwrap().join("escape"), b"x").is_err());
    let other = if port == 9 { 10 } else { 9 };
    let denied = std::net::TcpStream::connect(("127.0.0.1", other)).unwrap_err();
    assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied);
    // Seccomp for this thread: the documented syscalls and nothing else (ENOSYS for the
    // rest, so a missing one shows as a failure here rather than a silent kill).
    let mut filter =
        libseccomp::ScmpFilterContext::new(libseccomp::ScmpAction::Errno(libc::ENOSYS)).unwrap();
    for name in vigil_shipper::SYSCALLS.iter().chain(extra) {
        if let Ok(sc) = libseccomp::ScmpSyscall::from_name(name) {
            filter.add_rule(libseccomp::ScmpAction::Allow, sc).unwrap();
        }
    }
    filter.load().unwrap();
    assert_eq!(
        std::fs::metadata("/").map(|_| ()).ok(),
        Some(()),
        "stat is allowed"
    );
}

pub fn handshake(collector: &mut Channel) -> Option<u64> {
    collector
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    collector
        .handshake(Role::Collector, Some(Role::Shipper))
        .unwrap();
    match collector.recv::<ShipperToCollector>().unwrap() {
        ShipperToCollector::Resume { last_kmsg_seq } => last_kmsg_seq,
        other => panic!("expected Resume, got {other:?}"),
    }
}

pub fn wait_reply(collector: &mut Channel, seq: u64) -> bool {
    match collector.recv::<ShipperToCollector>().unwrap() {
        ShipperToCollector::Ack { seq: s } if s == seq => true,
        ShipperToCollector::Nack { seq: s, .. } if s == seq => false,
        other => panic!("unexpected {other:?} waiting for {seq}"),
    }
}

pub fn log(id: i64) -> Record {
    Record::Log {
        resource: vec![KeyValue::str("host.name", "test-host")],
        log: LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000 + id as u64,
            observed_time_unix_nano: 1_700_000_000_000_000_001,
            severity_number: 9,
            severity_text: "INFO".into(),
            event_name: String::new(),
            body: format!("test record {id}"),
            attributes: vec![KeyValue::i64("test.id", id)],
        },
    }
}

pub fn logs(range: std::ops::Range<i64>) -> Vec<Record> {
    range.map(log).collect()
}

/// The journal's segment files in `dir`, oldest first.
pub fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "vjl"))
        .collect();
    v.sort();
    v
}

/// Root: a 256 KiB tmpfs of the test's own, unmounted on drop.
pub struct SmallTmpfs {
    pub mnt: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallTmpfs {
    pub fn mount() -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "vigil-test"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs (needs root)");
        SmallTmpfs { mnt, _dir: dir }
    }

    /// Fill the file system to the last byte with one file.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.mnt.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        path
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
    }
}
