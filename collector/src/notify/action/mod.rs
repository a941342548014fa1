//! Actions: a firing alert whose rule names an action (a retraining
//! webhook) queues one call, unless the same action already ran for the
//! same model and rule within its cooldown. The body is rendered once, at
//! queue time, from the action's template (the evidence JSON when it has
//! none), so every retry sends the same bytes with the same idempotency key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

mod config;
mod deliver;

pub use config::{check, Action, DEFAULT_COOLDOWN};
pub use deliver::call;

use super::{alerts_link, fingerprint, Routing};
use crate::alert::Alert;
use crate::clock::rfc3339;
use crate::store::NewNotification;
use crate::window::WindowInfo;

/// A queued action call (the outbox row's payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub action: String,
    pub idempotency_key: String,
    /// The rendered JSON body.
    pub body: String,
}

/// What became of an action for one firing alert (for the metric).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub action: String,
    pub model: String,
    /// `queued`, `cooldown` or `render_error`.
    pub outcome: &'static str,
}

/// When each (action, model, rule) last ran, to hold calls in the cooldown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cooldowns {
    pub last_ms: BTreeMap<String, i64>,
}

/// The context of one evaluation that actions need besides the alert.
pub struct Context<'a> {
    pub windows: &'a [WindowInfo],
    /// The model's reference, as identified in the evidence.
    pub reference: &'a dyn Fn(&str) -> Value,
    /// An experiment's latest look (`GET /v1/experiments/{name}`), for
    /// alerts on `driftwatch_experiment_*` metrics; `null` if unknown.
    pub experiment: &'a dyn Fn(&str) -> Value,
    pub external_url: Option<&'a str>,
    pub now_ms: i64,
}

impl Cooldowns {
    /// Calls for firing alerts whose actions have not run yet (each alert
    /// is marked, so a firing calls its actions once).
    pub fn calls(
        &mut self,
        routing: &Routing,
        firing: &mut [&mut Alert],
        cx: &Context<'_>,
    ) -> (Vec<NewNotification>, Vec<Outcome>) {
        let (mut out, mut outcomes) = (Vec::new(), Vec::new());
        for a in firing.iter_mut().filter(|a| !a.actions_done) {
            a.actions_done = true;
            let model = a.labels.get("model").cloned().unwrap_or_default();
            for name in &a.actions {
                let Some(action) = routing.actions.iter().find(|x| &x.name == name) else {
                    continue;
                };
                let key = format!("{name}\u{1f}{model}\u{1f}{}", a.name());
                let cooling = self
                    .last_ms
                    .get(&key)
                    .is_some_and(|t| cx.now_ms - t < action.cooldown.as_millis() as i64);
                let outcome = if cooling {
                    "cooldown"
                } else {
                    let idempotency_key = format!(
                        "{}-{}",
                        fingerprint(&key),
                        a.fired_at_ms.unwrap_or(cx.now_ms)
                    );
                    match render(action, a, &idempotency_key, cx) {
                        Ok(body) => {
                            self.last_ms.insert(key, cx.now_ms);
                            let call = Call {
                                action: name.clone(),
                                idempotency_key,
                                body,
                            };
                            out.push(NewNotification {
                                receiver: name.clone(),
                                payload: serde_json::to_string(&call).unwrap_or_default(),
                                model: Some(model.clone()),
                            });
                            "queued"
                        }
                        Err(e) => {
                            tracing::error!(
                                action = %name,
                                model = %model,
                                "action {name} for alert {} of model {model}: {e}; not called",
                                a.name()
                            );
                            "render_error"
                        }
                    }
                };
                outcomes.push(Outcome {
                    action: name.clone(),
                    model: model.clone(),
                    outcome,
                });
            }
        }
        (out, outcomes)
    }
}

/// What the alert saw, for the retraining job: model, rule, window, the
/// drifted features with their statistics, and the reference.
pub fn evidence(a: &Alert, idempotency_key: &str, cx: &Context<'_>) -> Value {
    let model = a.labels.get("model").map_or("", String::as_str);
    let window = a.labels.get("window").and_then(|w| {
        cx.windows
            .iter()
            .find(|x| x.model == model && &x.window == w)
    });
    let drifted: Vec<Value> = a
        .top_features
        .iter()
        .map(|(feature, test, statistic)| {
            json!({"feature": feature, "test": test, "statistic": statistic})
        })
        .collect();
    let experiment = a.labels.get("experiment").map(|e| (cx.experiment)(e));
    json!({
        "kind": if experiment.is_some() { "driftwatch.experiment" } else { "driftwatch.retraining" },
        "idempotency_key": idempotency_key,
        "model": model,
        "rule": a.name(),
        "triggered_at": rfc3339(cx.now_ms),
        "alert": {
            "labels": a.labels,
            "annotations": a.annotations,
            "value": a.value,
            "threshold": a.threshold,
            "active_since": rfc3339(a.active_since_ms),
            "fired_at": a.fired_at_ms.map(rfc3339),
        },
        "window": window.map(|w| json!({"length": w.window, "start": w.start, "end": w.end})),
        "drifted_features": drifted,
        "reference": (cx.reference)(model),
        "experiment": experiment,
        "alerts_url": alerts_link(cx.external_url),
    })
}

/// The body: the action's template with `evidence`, `idempotency_key`,
/// `model`, `rule` and `labels`, or the evidence itself; it must be JSON.
fn render(
    action: &Action,
    a: &Alert,
    idempotency_key: &str,
    cx: &Context<'_>,
) -> Result<String, String> {
    let evidence = evidence(a, idempotency_key, cx);
    let Some(template) = &action.body else {
        return serde_json::to_string(&evidence).map_err(|e| e.to_string());
    };
    let env = minijinja::Environment::new();
    let body = env
        .render_str(
            template,
            minijinja::context! {
                evidence => minijinja::Value::from_serialize(&evidence),
                idempotency_key => idempotency_key,
                model => a.labels.get("model"),
                rule => a.name(),
                labels => a.labels,
            },
        )
        .map_err(|e| format!("the body template failed: {e}"))?;
    serde_json::from_str::<Value>(&body)
        .map_err(|e| format!("the body template did not give JSON ({e}): {body}"))?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(feature: &str, fired_at_ms: i64) -> Alert {
        Alert {
            actions: vec!["retrain".into()],
            ..Alert::firing_for_test(feature, fired_at_ms)
        }
    }

    fn rules(body: Option<&str>) -> Routing {
        Routing {
            actions: vec![Action {
                name: "retrain".into(),
                url: "http://127.0.0.1:1/".into(),
                headers: Vec::new(),
                secret_headers: Vec::new(),
                hmac_secret: None,
                body: body.map(String::from),
                cooldown: std::time::Duration::from_secs(3600),
            }],
            ..Routing::default()
        }
    }

    fn cx<'a>(
        windows: &'a [WindowInfo],
        reference: &'a dyn Fn(&str) -> Value,
        now_ms: i64,
    ) -> Context<'a> {
        Context {
            windows,
            reference,
            experiment: &|_| Value::Null,
            external_url: Some("http://dw:8080"),
            now_ms,
        }
    }

    #[test]
    fn one_call_per_model_and_rule_within_the_cooldown() {
        let r = rules(None);
        let windows = [WindowInfo {
            model: "credit".into(),
            window: "1h".into(),
            start: "2026-11-29T10:00:00Z".into(),
            end: "2026-11-29T11:00:00Z".into(),
            top_features: Vec::new(),
        }];
        let reference = |m: &str| json!({"model": m, "sha256": "abc"});
        let mut c = Cooldowns::default();
        let (mut age, mut income) = (alert("age", 0), alert("income", 0));
        let (out, outcomes) = c.calls(
            &r,
            &mut [&mut age, &mut income],
            &cx(&windows, &reference, 0),
        );
        assert_eq!(out.len(), 1, "two features of one rule: one call");
        let got: Vec<&str> = outcomes.iter().map(|o| o.outcome).collect();
        assert_eq!(got, ["queued", "cooldown"]);
        let call: Call = serde_json::from_str(&out[0].payload).expect("call");
        let body: Value = serde_json::from_str(&call.body).expect("JSON body");
        assert_eq!(body["model"], "credit");
        assert_eq!(body["rule"], "FeatureDrift");
        assert_eq!(body["window"]["start"], "2026-11-29T10:00:00Z");
        assert_eq!(body["drifted_features"][0]["feature"], "age");
        assert_eq!(body["drifted_features"][0]["statistic"], 0.4);
        assert_eq!(body["reference"]["sha256"], "abc");
        assert_eq!(body["idempotency_key"], call.idempotency_key);
        assert_eq!(body["alerts_url"], "http://dw:8080/v1/alerts");
        // The same firing is not called twice; a new firing inside the
        // cooldown is held; after it, it is called.
        assert!(c
            .calls(&r, &mut [&mut age], &cx(&windows, &reference, 10))
            .0
            .is_empty());
        let mut again = alert("age", 1_800_000);
        let (out, outcomes) = c.calls(&r, &mut [&mut again], &cx(&windows, &reference, 1_800_000));
        assert!(out.is_empty());
        assert_eq!(outcomes[0].outcome, "cooldown");
        let mut later = alert("age", 3_700_000);
        let (out, _) = c.calls(&r, &mut [&mut later], &cx(&windows, &reference, 3_700_000));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn templates_render_json_bodies_or_are_refused() {
        let reference = |_: &str| Value::Null;
        let r = rules(Some(
            r#"{"dag_run_id": "{{ idempotency_key }}", "conf": {{ evidence | tojson }}}"#,
        ));
        let mut c = Cooldowns::default();
        let (out, _) = c.calls(&r, &mut [&mut alert("age", 5)], &cx(&[], &reference, 5));
        let call: Call = serde_json::from_str(&out[0].payload).expect("call");
        let body: Value = serde_json::from_str(&call.body).expect("JSON");
        assert_eq!(body["dag_run_id"], call.idempotency_key);
        assert_eq!(body["conf"]["rule"], "FeatureDrift");
        let bad = rules(Some("not json {{ model }}"));
        let (out, outcomes) =
            Cooldowns::default().calls(&bad, &mut [&mut alert("age", 5)], &cx(&[], &reference, 5));
        assert!(out.is_empty());
        assert_eq!(outcomes[0].outcome, "render_error");
    }
}
