//! Process exec/exit events as log records.
//!
//! `event.name` (the record's `event_name`) is `process.exec` or `process.exit`; attributes:
//! `process.pid`, `process.parent_pid`, `process.executable.name` (the kernel's comm, at most 15
//! bytes), `process.real_user.id`, `process.real_group.id`, `thread.id`, and on exit
//! `process.exit.code` (or `process.exit.signal` when killed by a signal).

use vigil_ipc_proto::{KeyValue, LogRecord, Record};

use super::records::{ProcEvent, ProcEventKind};

/// OpenTelemetry severity number INFO.
const SEVERITY_INFO: u8 = 9;

/// `extra`: attributes known from elsewhere (container attribution of the cgroup).
pub fn to_record(
    e: &ProcEvent,
    time_unix_nano: u64,
    observed_unix_nano: u64,
    resource: &[KeyValue],
    extra: Vec<KeyValue>,
) -> Record {
    let (event_name, body) = match e.kind {
        ProcEventKind::Exec => (
            "process.exec",
            format!("exec {} pid {} ppid {}", e.comm, e.pid, e.ppid),
        ),
        ProcEventKind::Exit => (
            "process.exit",
            format!("exit {} pid {} status {}", e.comm, e.pid, e.exit_status),
        ),
    };
    let mut attributes = vec![
        KeyValue::i64("process.pid", i64::from(e.pid)),
        KeyValue::i64("process.parent_pid", i64::from(e.ppid)),
        KeyValue::str("process.executable.name", e.comm.clone()),
        KeyValue::i64("process.real_user.id", i64::from(e.uid)),
        KeyValue::i64("process.real_group.id", i64::from(e.gid)),
        KeyValue::i64("thread.id", i64::from(e.tid)),
    ];
    attributes.extend(extra);
    if e.kind == ProcEventKind::Exit {
        match (e.exit_code(), e.exit_signal()) {
            (Some(c), _) => attributes.push(KeyValue::i64("process.exit.code", i64::from(c))),
            (None, Some(s)) => attributes.push(KeyValue::i64("process.exit.signal", i64::from(s))),
            (None, None) => {}
        }
    }
    Record::Log {
        resource: resource.to_vec(),
        log: LogRecord {
            time_unix_nano,
            observed_time_unix_nano: observed_unix_nano,
            severity_number: SEVERITY_INFO,
            severity_text: "INFO".into(),
            event_name: event_name.into(),
            body,
            attributes,
        },
    }
}
