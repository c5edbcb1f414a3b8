//! The OTLP/HTTP receiver of the end-to-end tests: `vigil-testkit`'s, the one the shipper's own
//! tests use.

pub use vigil_testkit::otlp::*;
