//! Cluster mode's names on the log (NATS JetStream), shared by the
//! collectors and by agents that publish there directly. An event or
//! label is published under `<prefix>.<kind>.<model token>.<request id
//! token>`; the stream's subject transform (done by the NATS server, never
//! by the publisher) stores it as `<prefix>.<kind>.<model token>.<group>`,
//! the group (0 to `GROUPS` − 1) a hash of the request id, so that an
//! event and its label land in the same group. A model split into P
//! partitions (P divides `GROUPS`) gives partition p the groups g with
//! g mod P = p. A record's id (its `Nats-Msg-Id`) is made of its model and
//! request id, so that a publish retried within the stream's duplicate
//! window is stored once.

/// The kinds of record a model has in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Events,
    Labels,
    /// What its owner could not read, kept for inspection.
    Dead,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Events, Kind::Labels, Kind::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::Labels => "labels",
            Kind::Dead => "dead",
        }
    }
}

/// The groups the stream hashes request ids into; a model's partitions
/// must divide it.
pub const GROUPS: usize = 12;

/// The subject of a model's records of one kind, without the group (dead
/// letters are stored under it).
pub fn subject(prefix: &str, kind: Kind, model: &str) -> String {
    format!("{prefix}.{}.{}", kind.as_str(), token(model))
}

/// The subject an event or label of `request_id` is published under.
pub fn record_subject(prefix: &str, kind: Kind, model: &str, request_id: &str) -> String {
    format!("{}.{}", subject(prefix, kind, model), token(request_id))
}

/// The stream's subject transform, as (source, destination): the request
/// id token becomes its group.
pub fn transform(prefix: &str) -> (String, String) {
    (
        format!("{prefix}.*.*.*"),
        format!("{prefix}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{partition({GROUPS},3)}}}}"),
    )
}

/// The filters of the stored events and labels of partitions `held` of a
/// model split into `partitions`: one wildcard when every partition is
/// held (one filter is the server's fastest way to deliver: two cost it
/// half as much CPU again), else one per group. Dead letters (`subject`,
/// without a group) match none.
pub fn filters(prefix: &str, model: &str, partitions: usize, held: &[usize]) -> Vec<String> {
    let base = format!("{prefix}.*.{}", token(model));
    if (0..partitions).all(|p| held.contains(&p)) {
        return vec![format!("{base}.*")];
    }
    (0..GROUPS)
        .filter(|g| held.contains(&(g % partitions.max(1))))
        .map(|g| format!("{base}.{g}"))
        .collect()
}

/// The kind and model a subject names (`None`: not under `prefix`); what
/// follows the model (a group or request id) is left out.
pub fn parse_subject(prefix: &str, subject: &str) -> Option<(Kind, String)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (kind, model) = rest.split_once('.')?;
    let kind = Kind::ALL.into_iter().find(|k| k.as_str() == kind)?;
    let model = model.split_once('.').map_or(model, |(m, _)| m);
    Some((kind, untoken(model)?))
}

/// The id of an event record: a resent event is stored once.
pub fn event_id(model: &str, request_id: &str) -> String {
    format!("e.{}.{}", token(model), token(request_id))
}

/// The id of a label record: a resent label is stored once.
pub fn label_id(model: &str, request_id: &str) -> String {
    format!("l.{}.{}", token(model), token(request_id))
}

/// A name as one token of a subject or a bucket key: letters, digits, `_`
/// and `-` as they are, any other byte as `=XX` (hex), so that distinct
/// names stay distinct and `.`, `*` and `>` never reach the log.
pub fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => out.push(b as char),
            _ => out.push_str(&format!("={b:02X}")),
        }
    }
    if out.is_empty() {
        out.push('=');
    }
    out
}

/// The name a `token` was made from (`None`: not a token).
pub fn untoken(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_names_apart_and_come_back() {
        for name in [
            "credit",
            "a.b",
            "a=2Eb",
            "*",
            ">",
            "",
            "crédit score",
            "x-y_z",
        ] {
            let t = token(name);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)),
                "{t}"
            );
            assert_eq!(untoken(&t).as_deref(), Some(name), "{t}");
        }
        assert_ne!(token("a.b"), token("a=2Eb"));
        assert_eq!(untoken("=Z1"), None);
    }

    #[test]
    fn subjects_name_their_model_and_kind() {
        let s = subject("dw.prod", Kind::Labels, "credit.v2");
        assert_eq!(s, "dw.prod.labels.credit=2Ev2");
        assert_eq!(
            parse_subject("dw.prod", &s),
            Some((Kind::Labels, "credit.v2".into()))
        );
        assert_eq!(parse_subject("dw", &s), None);
        let published = record_subject("dw.prod", Kind::Events, "credit.v2", "r.1");
        assert_eq!(published, "dw.prod.events.credit=2Ev2.r=2E1");
        assert_eq!(
            parse_subject("dw.prod", "dw.prod.events.credit=2Ev2.7"),
            Some((Kind::Events, "credit.v2".into()))
        );
        assert_eq!(parse_subject("dw.prod", "dw.prod.other.m"), None);
        assert_ne!(event_id("a.b", "c"), event_id("a", "b.c"));
        assert_ne!(event_id("m", "r"), label_id("m", "r"));
    }

    #[test]
    fn partitions_take_their_groups_and_the_transform_names_the_request_id() {
        let (src, dest) = transform("dw");
        assert_eq!(src, "dw.*.*.*");
        assert_eq!(
            dest,
            "dw.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(12,3)}}"
        );
        assert_eq!(filters("dw", "m", 1, &[0]), ["dw.*.m.*"]);
        assert_eq!(filters("dw", "m", 3, &[0, 1, 2]), ["dw.*.m.*"]);
        assert_eq!(
            filters("dw", "m", 3, &[1]),
            ["dw.*.m.1", "dw.*.m.4", "dw.*.m.7", "dw.*.m.10"]
        );
        // Every group belongs to exactly one partition.
        for p in [2, 3, 4, 6, 12] {
            let mut all: Vec<String> = (0..p).flat_map(|i| filters("dw", "m", p, &[i])).collect();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), GROUPS, "{p}");
        }
    }
}
