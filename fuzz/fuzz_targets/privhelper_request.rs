//! The privhelper's whole check of a collector request, as `Server::handle` runs it before
//! touching anything: the frame decoded as a `PrivRequest`, the request table's admission
//! (`server::admit`: phase, once-only, features) over a sequence of requests, then the field
//! validators of each kind (`validate::check_pids`, `check_pids_at_most`,
//! `check_netns_target`), and the refusal encoded as the answer. What passes must be what the
//! validators promise: pids in range and unique, netns names that cannot move in a path.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vigil_ipc_proto::frame::{self, HEADER_LEN, MAX_FRAME};
use vigil_ipc_proto::privtable::{self, PrivRequestKind};
use vigil_ipc_proto::{
    Feature, MAX_EXE_PIDS, MAX_FD_STAT_PIDS, MAX_IO_STAT_PIDS, MAX_NETNS_NAME, NetnsTarget,
    PrivRequest, PrivResponse,
};
use vigil_privhelper::RequestError;
use vigil_privhelper::server::admit;
use vigil_privhelper::validate::{self, PID_MAX_LIMIT};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Bit i: `Feature::ALL[i]` enabled.
    features: u32,
    pid_max: u32,
    /// Payloads of the collector's frames, in order.
    frames: Vec<Vec<u8>>,
}

fn pids_ok(pids: &[u32], max: usize, pid_max: u32) -> Result<(), RequestError> {
    let out = validate::check_pids_at_most(pids, max, pid_max)?;
    assert!(out.len() <= max && out.len() <= pids.len());
    let mut seen = std::collections::HashSet::new();
    for &p in &out {
        assert!(
            (1..=pid_max).contains(&p),
            "pid {p} passed with pid_max {pid_max}"
        );
        assert!(seen.insert(p), "duplicate pid {p} passed");
    }
    Ok(())
}

fn fields(req: &PrivRequest, pid_max: u32) -> Result<(), RequestError> {
    match req {
        PrivRequest::ProcFdStats { pids } => {
            let out = validate::check_pids(pids, pid_max)?;
            assert!(out.len() <= MAX_FD_STAT_PIDS);
            pids_ok(pids, MAX_FD_STAT_PIDS, pid_max)
        }
        PrivRequest::ProcIoStats { pids } => pids_ok(pids, MAX_IO_STAT_PIDS, pid_max),
        PrivRequest::ProcExePaths { pids } => pids_ok(pids, MAX_EXE_PIDS, pid_max),
        PrivRequest::NetlinkRouteInNetns { target } => {
            validate::check_netns_target(target, pid_max)?;
            if let NetnsTarget::Named(n) = target {
                assert!(!n.is_empty() && n.len() <= MAX_NETNS_NAME);
                assert!(n != "." && n != ".." && !n.contains('/') && !n.contains('\0'));
            }
            Ok(())
        }
        PrivRequest::BpfAttach { program } => {
            let _ = program.feature();
            Ok(())
        }
        PrivRequest::OpenKmsg
        | PrivRequest::ListNetns
        | PrivRequest::Ready
        | PrivRequest::TaskIterLink => Ok(()),
    }
}

fuzz_target!(|input: Input| {
    let enabled: Vec<Feature> = Feature::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| input.features & (1 << i) != 0)
        .map(|(_, f)| *f)
        .collect();
    let pid_max = input.pid_max.clamp(1, PID_MAX_LIMIT);
    let mut steady = false;
    let mut done: Vec<PrivRequestKind> = Vec::new();
    for payload in input.frames.iter().take(64) {
        if payload.len() > MAX_FRAME {
            continue;
        }
        let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        let Ok(req) = frame::decode::<PrivRequest>(&f) else {
            continue;
        };
        let rule = privtable::rule(req.kind());
        let result = admit(rule, steady, &done, |f| enabled.contains(&f))
            .and_then(|()| fields(&req, pid_max));
        match result {
            Ok(()) => {
                if rule.once {
                    done.push(rule.kind);
                }
                if req == PrivRequest::Ready {
                    steady = true;
                }
            }
            Err(e) => {
                // The refusal always fits one answer frame.
                let resp = PrivResponse::Error(e.to_priv_error());
                let n = frame::encoded_len(&resp).expect("a refusal encodes");
                assert!(n <= MAX_FRAME, "refusal of {n} bytes");
            }
        }
    }
});
