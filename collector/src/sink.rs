//! Where a cycle's records go: straight into batch frames on the way to the shipper
//! ([`crate::batch::Batcher`]), or into a `Vec` (tests, benches). Process records are lent,
//! never owned, on the first path.

use vigil_ipc_proto::{ProcessRecord, Record};

pub trait Sink {
    fn record(&mut self, r: Record);
    fn process(&mut self, p: &ProcessRecord<&str>);
}

impl Sink for Vec<Record> {
    fn record(&mut self, r: Record) {
        self.push(r);
    }

    fn process(&mut self, p: &ProcessRecord<&str>) {
        self.push(Record::Process(Box::new(p.to_owned_record())));
    }
}
