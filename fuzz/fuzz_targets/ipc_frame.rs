//! Every message a vigil process decodes from a peer, from one datagram: the frame header check
//! and the postcard decoding of each message type on every channel, the collector's batch
//! frames taken apart record by record (`split_batch`), and the sealed shipper inputs. A frame
//! that decodes must encode again and decode to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};
use vigil_ipc_proto::batch::split_batch;
use vigil_ipc_proto::delivery::ShipperInputs;
use vigil_ipc_proto::frame::{self, HEADER_LEN, MAX_FRAME};
use vigil_ipc_proto::{
    ChildToSupervisor, ClientRequest, ClientResponse, CollectorToShipper, Hello, PrivRequest,
    PrivResponse, ShipperToCollector, SupervisorToChild,
};

/// Decode as `T`; when that works, the value must survive a round trip.
fn check<T: Serialize + DeserializeOwned + std::fmt::Debug>(f: &[u8], same: fn(&T, &T) -> bool) {
    if let Ok(v) = frame::decode::<T>(f) {
        let again = frame::encode(&v).expect("a decoded message encodes");
        let back = frame::decode::<T>(&again).expect("an encoded message decodes");
        assert!(same(&v, &back), "round trip changed {v:?} into {back:?}");
    }
}

fn eq<T: PartialEq>(a: &T, b: &T) -> bool {
    a == b
}

/// Types that may carry floats (NaN != NaN): compared by their encoding instead.
fn same_bytes<T: Serialize>(a: &T, b: &T) -> bool {
    postcard::to_stdvec(a).ok() == postcard::to_stdvec(b).ok()
}

fn all(f: &[u8]) {
    check::<Hello>(f, eq);
    check::<SupervisorToChild>(f, same_bytes);
    check::<ChildToSupervisor>(f, eq);
    check::<PrivRequest>(f, eq);
    check::<PrivResponse>(f, eq);
    check::<CollectorToShipper>(f, same_bytes);
    check::<ShipperToCollector>(f, eq);
    check::<ClientRequest>(f, eq);
    check::<ClientResponse>(f, same_bytes);
    if let Ok(b) = split_batch(f) {
        // Each record's bytes are exactly the encoding it was decoded from.
        for (r, bytes) in &b.records {
            let again = postcard::from_bytes::<vigil_ipc_proto::Record>(bytes)
                .expect("a record's bytes decode alone");
            assert!(same_bytes(&r.borrowed(), &again.decoded().borrowed()));
            assert_eq!(r.clone().into_owned(), again);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // As received (the header is whatever the peer wrote) ...
    all(data);
    // ... and with a correct header, so the payload decoders see every input.
    if data.len() <= MAX_FRAME {
        let mut f = Vec::with_capacity(HEADER_LEN + data.len());
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(data);
        all(&f);
    }
    let _ = ShipperInputs::decode(data);
});
