//! Test harness helpers shared by the end-to-end tests.
