//! Aggregation groups, as in Alertmanager: the firing alerts that share a
//! route, a receiver and the values of the route's `group_by` labels make
//! one group and one message. A new group waits `group_wait` for more
//! alerts; after a message it is looked at again every `group_interval`,
//! and sends when an alert joined or resolved, or `repeat_interval` passed
//! with alerts still firing. A group whose alerts all resolved is sent its
//! resolution (receivers with `send_resolved`) and then forgotten.
//!
//! Timers are checked at every rule evaluation, so a message goes out at
//! the first evaluation after its time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{fingerprint, queue, targets, view, AlertView, Receiver, Route, Routing};
use crate::alert::Alert;
use crate::store::NewNotification;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub route: String,
    pub receiver: String,
    pub labels: BTreeMap<String, String>,
    /// When the group is next looked at.
    pub next_flush_ms: i64,
    pub last_sent_ms: Option<i64>,
    /// Fingerprints of the alerts the last message sent as firing.
    pub sent_firing: BTreeSet<String>,
    /// Alerts that resolved since the last message, by fingerprint.
    pub resolved: BTreeMap<String, AlertView>,
    /// Messages sent so far (part of each message's idempotency key).
    pub seq: u64,
}

/// Every aggregation group, by identity (route, receiver, group labels).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Groups {
    pub groups: BTreeMap<String, Group>,
}

fn group_key(route: &Route, receiver: &Receiver, labels: &BTreeMap<String, String>) -> String {
    let mut k = format!("{}\u{1f}{}", route.id, receiver.name);
    for (n, v) in labels {
        k.push('\u{1f}');
        k.push_str(n);
        k.push('=');
        k.push_str(v);
    }
    k
}

impl Groups {
    /// One evaluation at `now_ms`: `firing` are the firing alerts no
    /// silence matches, `resolved` the alerts that resolved now (and when).
    /// Returns the messages due.
    pub fn step(
        &mut self,
        routing: &Routing,
        firing: &[&Alert],
        resolved: &[(&Alert, i64)],
        now_ms: i64,
    ) -> Vec<NewNotification> {
        let mut current: BTreeMap<String, Vec<AlertView>> = BTreeMap::new();
        for a in firing {
            for (route, r) in targets(routing, a) {
                if r.is_alertmanager() {
                    continue;
                }
                let labels = route.group_labels(&a.labels);
                let key = group_key(route, r, &labels);
                self.groups.entry(key.clone()).or_insert_with(|| Group {
                    route: route.id.clone(),
                    receiver: r.name.clone(),
                    labels,
                    next_flush_ms: now_ms + route.group_wait.as_millis() as i64,
                    last_sent_ms: None,
                    sent_firing: BTreeSet::new(),
                    resolved: BTreeMap::new(),
                    seq: 0,
                });
                current
                    .entry(key)
                    .or_default()
                    .push(view(a, "firing", None));
            }
        }
        for (a, at) in resolved {
            for (route, r) in targets(routing, a) {
                let key = group_key(route, r, &route.group_labels(&a.labels));
                let Some(g) = self.groups.get_mut(&key) else {
                    continue;
                };
                let v = view(a, "resolved", Some(*at));
                if r.send_resolved && g.sent_firing.contains(&v.fingerprint) {
                    g.resolved.insert(v.fingerprint.clone(), v);
                }
            }
        }
        let mut out = Vec::new();
        self.groups.retain(|key, g| {
            let now_firing = current.remove(key).unwrap_or_default();
            if now_ms < g.next_flush_ms {
                return !(now_firing.is_empty()
                    && g.sent_firing.is_empty()
                    && g.resolved.is_empty());
            }
            let route = routing.route.by_id(&g.route).unwrap_or(&routing.route);
            let fps: BTreeSet<String> = now_firing.iter().map(|v| v.fingerprint.clone()).collect();
            // An alert that fired again before its resolution went out.
            g.resolved.retain(|fp, _| !fps.contains(fp));
            let joined = !fps.is_subset(&g.sent_firing);
            let repeat = !fps.is_empty()
                && g.last_sent_ms
                    .is_some_and(|t| now_ms - t >= route.repeat_interval.as_millis() as i64);
            if joined || repeat || !g.resolved.is_empty() {
                g.seq += 1;
                let mut alerts = now_firing;
                alerts.extend(std::mem::take(&mut g.resolved).into_values());
                let k = format!("{}-{}", fingerprint(key), g.seq);
                out.push(queue(&g.receiver, alerts, k));
                g.last_sent_ms = Some(now_ms);
            }
            g.sent_firing = fps;
            g.next_flush_ms = now_ms + route.group_interval.as_millis() as i64;
            !g.sent_firing.is_empty()
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{log, Message, ReceiverKind};

    fn rules(send_resolved: bool) -> Routing {
        let route = Route {
            receiver: Some("team".into()),
            group_wait: std::time::Duration::from_secs(30),
            group_interval: std::time::Duration::from_secs(300),
            repeat_interval: std::time::Duration::from_secs(3600),
            ..Route::default()
        };
        Routing {
            route,
            receivers: vec![Receiver {
                name: "team".into(),
                kind: ReceiverKind::Log(log::Config { path: None }),
                send_resolved,
            }],
            ..Routing::default()
        }
    }

    fn alert(feature: &str) -> Alert {
        Alert::firing_for_test(feature, 0)
    }

    /// (status, features) of each message.
    fn sent(out: &[NewNotification]) -> Vec<(String, Vec<String>)> {
        out.iter()
            .map(|n| {
                let m: Message = serde_json::from_str(&n.payload).expect("message");
                let f = m
                    .alerts
                    .iter()
                    .map(|a| format!("{}:{}", a.labels["feature"], a.status))
                    .collect();
                (m.status, f)
            })
            .collect()
    }

    const S: i64 = 1000;

    #[test]
    fn alerts_wait_group_repeat_and_resolve_like_alertmanager() {
        let r = rules(true);
        let (age, income, debt) = (alert("age"), alert("income"), alert("debt"));
        let mut g = Groups::default();
        // Two alerts within group_wait: one message at 30 s.
        assert!(g.step(&r, &[&age], &[], 0).is_empty());
        assert!(g.step(&r, &[&age, &income], &[], 15 * S).is_empty());
        let out = g.step(&r, &[&age, &income], &[], 30 * S);
        assert_eq!(
            sent(&out),
            [(
                "firing".to_string(),
                vec!["age:firing".to_string(), "income:firing".to_string()]
            )]
        );
        // A third alert waits for group_interval (5 min after the message).
        assert!(g.step(&r, &[&age, &income, &debt], &[], 60 * S).is_empty());
        let out = g.step(&r, &[&age, &income, &debt], &[], 330 * S);
        assert_eq!(sent(&out)[0].1.len(), 3);
        // Nothing changes: nothing sent until repeat_interval (1 h).
        assert!(g.step(&r, &[&age, &income, &debt], &[], 630 * S).is_empty());
        let out = g.step(&r, &[&age, &income, &debt], &[], 3930 * S);
        assert_eq!(sent(&out)[0].1.len(), 3, "repeated after an hour");
        // One resolves: sent at the next group_interval with the others.
        assert!(g
            .step(&r, &[&age, &income], &[(&debt, 4000 * S)], 4000 * S)
            .is_empty());
        let out = g.step(&r, &[&age, &income], &[], 4230 * S);
        assert_eq!(
            sent(&out),
            [(
                "firing".to_string(),
                vec![
                    "age:firing".to_string(),
                    "income:firing".to_string(),
                    "debt:resolved".to_string()
                ]
            )]
        );
        // All resolve: one resolved message, then the group is gone.
        assert!(g
            .step(&r, &[], &[(&age, 4300 * S), (&income, 4300 * S)], 4300 * S)
            .is_empty());
        let out = g.step(&r, &[], &[], 4530 * S);
        assert_eq!(sent(&out)[0].0, "resolved");
        assert!(g.groups.is_empty());
        // The keys: one per message of the group, distinct.
        let again = g.step(&r, &[&age], &[], 5000 * S);
        assert!(again.is_empty(), "a new group waits group_wait again");
    }

    #[test]
    fn unsent_alerts_resolve_quietly_and_send_resolved_false_is_honoured() {
        let r = rules(false);
        let age = alert("age");
        let mut g = Groups::default();
        // Fires and resolves within group_wait: nothing is ever sent.
        g.step(&r, &[&age], &[], 0);
        assert!(g.step(&r, &[], &[(&age, 10 * S)], 10 * S).is_empty());
        assert!(g.step(&r, &[], &[], 40 * S).is_empty());
        assert!(g.groups.is_empty());
        // send_resolved: false: the firing message, no resolution.
        g.step(&r, &[&age], &[], 100 * S);
        assert_eq!(g.step(&r, &[&age], &[], 130 * S).len(), 1);
        g.step(&r, &[], &[(&age, 200 * S)], 200 * S);
        assert!(g.step(&r, &[], &[], 430 * S).is_empty());
        assert!(g.groups.is_empty());
    }

    #[test]
    fn each_message_of_a_group_has_its_own_stable_key() {
        let r = rules(true);
        let (age, income) = (alert("age"), alert("income"));
        let mut a = Groups::default();
        a.step(&r, &[&age], &[], 0);
        let first = a.step(&r, &[&age], &[], 30 * S);
        // The state survives a restart as JSON: the same messages follow.
        let mut b: Groups =
            serde_json::from_str(&serde_json::to_string(&a).expect("JSON")).expect("back");
        let next_a = a.step(&r, &[&age, &income], &[], 330 * S);
        let next_b = b.step(&r, &[&age, &income], &[], 330 * S);
        assert_eq!(next_a, next_b);
        let key = |n: &NewNotification| {
            serde_json::from_str::<Message>(&n.payload)
                .expect("message")
                .idempotency_key
        };
        assert_ne!(key(&first[0]), key(&next_a[0]));
    }
}
