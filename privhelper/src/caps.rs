//! The privhelper's own capability sets after start-up: permitted and effective lowered to the
//! steady-state list (a lowering only: capset cannot raise the permitted set, and nothing is
//! inheritable or ambient).

use std::collections::HashSet;

use caps::{CapSet, Capability};

fn to_caps(nums: &[u8]) -> HashSet<Capability> {
    caps::all()
        .into_iter()
        .filter(|c| nums.contains(&c.index()))
        .collect()
}

/// Keep only `keep` (capability numbers) in the effective and permitted sets.
pub fn drop_to(keep: &[u8]) -> std::io::Result<()> {
    let keep = to_caps(keep);
    let now = caps::read(None, CapSet::Permitted).map_err(std::io::Error::other)?;
    let keep: HashSet<Capability> = keep.intersection(&now).copied().collect();
    caps::set(None, CapSet::Effective, &keep).map_err(std::io::Error::other)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(std::io::Error::other)?;
    Ok(())
}

/// The effective set now, as numbers.
pub fn effective() -> Vec<u8> {
    let mut v: Vec<u8> = caps::read(None, CapSet::Effective)
        .map(|s| s.into_iter().map(|c| c.index()).collect())
        .unwrap_or_default();
    v.sort_unstable();
    v
}
