//! Where leases go: rendezvous hashing of node and model (or partition)
//! names, and the keys leases are kept under.

use crate::bus::{token, untoken};

use super::Member;

/// This machine's name (for default node names and addresses).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "collector".into())
}

/// The member a model belongs to: the highest score of node and model
/// (rendezvous hashing), so that a member joining or leaving moves only
/// its own share of the models.
pub fn preferred<'a>(members: &'a [Member], model: &str) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|m| mixed_hash(&[m.node.as_bytes(), b"\0", model.as_bytes()]))
        .map(|m| m.node.as_str())
}

/// FNV-1a, 64 bits, then MurmurHash3's finalizer (FNV alone leaves names
/// that differ in one byte close together): stable across processes and
/// versions.
fn mixed_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The lease key of a model's partition: the model's token, and `.p` for
/// a partition after the first.
pub fn lease_key(model: &str, partition: usize) -> String {
    match partition {
        0 => token(model),
        p => format!("{}.{p}", token(model)),
    }
}

/// The model and partition a lease key names.
pub(super) fn parse_lease_key(key: &str) -> Option<(String, usize)> {
    match key.split_once('.') {
        Some((model, p)) => Some((untoken(model)?, p.parse().ok()?)),
        None => Some((untoken(key)?, 0)),
    }
}

/// What rendezvous hashing places: the model, or a partition of it.
pub(super) fn unit_name(model: &str, partition: usize) -> String {
    match partition {
        0 => model.to_string(),
        p => format!("{model}\0{p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_spread_over_members_and_move_only_with_their_member() {
        let member = |n: &str| Member {
            node: n.into(),
            url: String::new(),
        };
        let three = [member("a"), member("b"), member("c")];
        let models: Vec<String> = (0..300).map(|i| format!("model-{i}")).collect();
        let owners: Vec<&str> = models
            .iter()
            .map(|m| preferred(&three, m).expect("an owner"))
            .collect();
        for n in ["a", "b", "c"] {
            let share = owners.iter().filter(|o| **o == n).count();
            assert!((70..=130).contains(&share), "{n}: {share} of 300");
        }
        // "c" leaves: only its models move.
        let two = [member("a"), member("b")];
        for (m, before) in models.iter().zip(&owners) {
            let after = preferred(&two, m).expect("an owner");
            if *before != "c" {
                assert_eq!(after, *before, "{m}");
            }
        }
        assert_eq!(preferred(&[], "m"), None);
    }

    #[test]
    fn lease_keys_name_their_model_and_partition() {
        for (model, p) in [("credit", 0), ("credit", 2), ("a.b", 5), ("", 1)] {
            let key = lease_key(model, p);
            assert_eq!(parse_lease_key(&key), Some((model.to_string(), p)), "{key}");
        }
        assert_eq!(lease_key("credit", 0), "credit");
        // Partitions of one model spread over the members.
        let member = |n: &str| Member {
            node: n.into(),
            url: String::new(),
        };
        let three = [member("a"), member("b"), member("c")];
        let spread: std::collections::BTreeSet<&str> = (0..12)
            .filter_map(|p| preferred(&three, &unit_name("credit", p)))
            .collect();
        assert_eq!(spread.len(), 3);
    }
}
