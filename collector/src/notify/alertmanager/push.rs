//! Which alerts go to Alertmanager receivers, and when: Alertmanager
//! groups, routes and repeats by itself, so each alert is pushed alone.

use std::collections::{HashMap, HashSet};

use crate::alert::Alert;
use crate::notify::{queue, targets, view, Routing};
use crate::store::NewNotification;

/// How often a firing alert is sent again to Alertmanager receivers, which
/// resolve an alert that is not refreshed before its `endsAt` (4 minutes).
pub const ALERTMANAGER_RESEND_MS: i64 = 60_000;

/// Messages to Alertmanager receivers, which group, route and repeat by
/// themselves (as Prometheus does it): each firing alert at once and again
/// every `ALERTMANAGER_RESEND_MS`, each resolution at once. `last`
/// remembers when each alert was last sent to each receiver.
pub fn pushes(
    routing: &Routing,
    firing: &[&Alert],
    resolved: &[(&Alert, i64)],
    last: &mut HashMap<String, i64>,
    now_ms: i64,
) -> Vec<NewNotification> {
    let mut out = Vec::new();
    let mut live = HashSet::new();
    for a in firing {
        for (_, r) in targets(routing, a)
            .into_iter()
            .filter(|(_, r)| r.is_alertmanager())
        {
            let key = format!("{}\u{1f}{}", a.key(), r.name);
            live.insert(key.clone());
            if last
                .get(&key)
                .is_some_and(|t| now_ms - t < ALERTMANAGER_RESEND_MS)
            {
                continue;
            }
            last.insert(key, now_ms);
            let v = view(a, "firing", None);
            let k = format!("{}-firing-{now_ms}", v.fingerprint);
            out.push(queue(&r.name, vec![v], k));
        }
    }
    for (a, at) in resolved {
        for (_, r) in targets(routing, a)
            .into_iter()
            .filter(|(_, r)| r.is_alertmanager())
        {
            if r.send_resolved {
                let v = view(a, "resolved", Some(*at));
                let k = format!("{}-resolved-{at}", v.fingerprint);
                out.push(queue(&r.name, vec![v], k));
            }
        }
    }
    last.retain(|k, _| live.contains(k));
    out
}
