"""Writes the Grafana dashboards (dashboards/*.json) from the panel lists
below: one place for the queries, the same layout, variables and links on
every dashboard. Standard library only; run it after editing a query:

    python3 dashboards/build.py

The test suite runs it too and fails when a committed JSON file differs
from what it writes, then runs every query against a real Prometheus
(tests/e2e.rs).
"""

import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
M = 'model="$model"'
MW = 'model="$model", window="$window"'
RATE = "$__rate_interval"


def variables(extra=(), windowed=True):
    window = [query_var(
        "window",
        "label_values(driftwatch_window_samples{model=\"$model\"}, window)",
        "Window",
    )] if windowed else []
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        query_var("model", "label_values(driftwatch_window_samples, model)", "Model"),
        *window,
        *extra,
    ]


def query_var(name, query, label, multi=False):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "hide": 0,
    }


def target(expr, legend="", ref="A"):
    return {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend, "range": True}


def panel(kind, title, targets, unit="short", description="", w=12, h=8, **extra):
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(*t, ref=chr(ord("A") + i)) for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "gridPos": {"w": w, "h": h},
    }
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    p.update(extra)
    return p


def layout(panels):
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        g["x"], g["y"] = x, y
        x += g["w"]
        row_h = max(row_h, g["h"])
    return panels


def dashboard(uid, title, description, panels, extra_vars=(), windowed=True):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["driftwatch"],
        "timezone": "",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "links": [{"type": "dashboards", "tags": ["driftwatch"], "asDropdown": False,
                   "title": "driftwatch", "includeVars": True, "keepTime": True}],
        "templating": {"list": variables(extra_vars, windowed)},
        "annotations": {"list": []},
        "panels": layout(panels),
    }


def quantiles(metric, by, where):
    return [
        (f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{where}}}[{RATE}])))",
         f"{{{{{by}}}}} p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ]


OVERVIEW = dashboard(
    "driftwatch-overview",
    "driftwatch / Overview",
    "Traffic, errors, latency and cost per model and role (champion, shadow).",
    [
        panel("timeseries", "Predictions per second",
              [(f"sum by (role) (rate(driftwatch_predictions_total{{{M}}}[{RATE}]))", "{{role}}")],
              unit="reqps", description="Outputs received by the collector, per role."),
        panel("timeseries", "Error ratio (live window)",
              [(f"driftwatch_prediction_error_ratio{{{MW}}}", "{{role}}")],
              unit="percentunit", description="Outputs that carried an error ÷ outputs, in the live window."),
        panel("timeseries", "Latency p50 / p95 / p99",
              quantiles("driftwatch_inference_latency_seconds", "role", M),
              unit="s", description="Reported latency per role, from the collector's histogram."),
        panel("timeseries", "Latency quantiles (live window, exact)",
              [(f"driftwatch_inference_latency_quantile_seconds{{{MW}}}", "{{role}} {{quantile}}")],
              unit="s", description="p50/p95/p99 of the live window's reported latencies."),
        panel("stat", "Cost per 1000 predictions",
              [(f"driftwatch_cost_per_1k_predictions_usd{{{M}}}", "{{role}}")],
              unit="currencyUSD", w=8, description="From the model's cost config."),
        panel("stat", "Events in the live window",
              [(f"driftwatch_window_samples{{{MW}}}", "{{window}}")], w=8),
        panel("stat", "Label coverage",
              [(f"driftwatch_label_coverage_ratio{{{MW}}}", "{{window}}")], unit="percentunit", w=8),
        panel("stat", "Age of the live window's statistics",
              [(f"time() - driftwatch_window_evaluated_timestamp_seconds{{{M}}}", "{{window}}")], unit="s", w=8,
              description="Seconds since each live window's statistics were computed. A window that did not "
                          "change keeps its result; one older than two eval_interval means the collector "
                          "falls behind (README: Evaluation cost)."),
        panel("timeseries", "Evaluation: cycle time and this model's share",
              [(f"rate(driftwatch_evaluation_cycle_seconds_sum[{RATE}]) / rate(driftwatch_evaluation_cycle_seconds_count[{RATE}])",
                "mean cycle (all models)"),
               (f"rate(driftwatch_evaluation_seconds_sum{{{M}}}[{RATE}])", "CPU-s per s on $model")],
              unit="s", w=16,
              description="How long an evaluation cycle takes (it stops at eval_budget) and the seconds per "
                          "second spent on this model's windows."),
        panel("timeseries", "Agent: requests per second by status code",
              [(f"sum by (code) (rate(driftwatch_agent_requests_total{{{M}}}[{RATE}]))", "{{code}}")],
              unit="reqps", description="Requests the agents answered, by the code the client got."),
        panel("timeseries", "Agent: added latency and champion latency",
              quantiles("driftwatch_agent_added_latency_seconds", "model", M)
              + [(f"histogram_quantile(0.99, sum by (le) (rate(driftwatch_agent_upstream_latency_seconds_bucket{{{M}}}[{RATE}])))",
                  "champion p99")],
              unit="s", description="Time the agent adds to a proxied request, and the champion's own time."),
        panel("timeseries", "Agent: events shipped and shadow",
              [(f"sum(rate(driftwatch_agent_events_shipped_total[{RATE}]))", "shipped/s"),
               (f"sum(driftwatch_agent_shadow_up{{{M}}})", "shadow models up"),
               (f"sum(driftwatch_agent_buffered_events)", "buffered")],
              description="Events the collector accepted from the agents; shadow models loaded; events waiting."),
    ],
)

DRIFT = dashboard(
    "driftwatch-drift",
    "driftwatch / Drift",
    "Per-feature data drift of the live window against the reference.",
    [
        panel("timeseries", "Drifted share of features",
              [(f"driftwatch_drifted_features_share{{{MW}}}", "drifted share")],
              unit="percentunit", description="Share of the model's features that drift by their default test."),
        panel("bargauge", "Top drifted features (share of the time range drifting)",
              [(f"topk(10, avg_over_time(driftwatch_feature_drift_detected{{{MW}}}[$__range]))", "{{feature}}")],
              unit="percentunit", description="How much of the selected range each feature spent drifting.",
              options={"orientation": "horizontal", "displayMode": "gradient",
                       "reduceOptions": {"calcs": ["lastNotNull"], "values": False}}),
        panel("heatmap", "Drift verdict per feature",
              [(f"max by (feature) (driftwatch_feature_drift_detected{{{MW}}})", "{{feature}}")],
              w=24, description="1 (dark) when the feature drifts by its default test, per evaluation.",
              options={"calculate": False, "yAxis": {"axisPlacement": "left"},
                       "color": {"mode": "scheme", "scheme": "Oranges", "steps": 2},
                       "cellGap": 1, "legend": {"show": False}}),
        panel("timeseries", "Drift score per feature ($test)",
              [(f"driftwatch_feature_drift_score{{{MW}, test=~\"$test\"}}", "{{feature}} {{test}}")],
              description="Each test's statistic (distances, PSI; a chi-square with an unseen category is +Inf)."),
        panel("timeseries", "p-value per feature ($test)",
              [(f"driftwatch_feature_drift_p_value{{{MW}, test=~\"$test\"}}", "{{feature}} {{test}}")],
              description="For the tests that have one (KS, chi-square, z-test, ...)."),
        panel("timeseries", "Missing values per feature",
              [(f"driftwatch_feature_missing_ratio{{{MW}}}", "{{feature}}")], unit="percentunit", w=24),
        panel("timeseries", "Multivariate drift: reconstruction error",
              [(f"driftwatch_multivariate_drift{{{MW}}}", "error"),
               (f"driftwatch_multivariate_drift_upper_threshold{{{MW}}}", "upper threshold"),
               (f"driftwatch_multivariate_drift_lower_threshold{{{MW}}}", "lower threshold")],
              description="NannyML's data reconstruction (models with `multivariate:`): the mean error of "
                          "reconstructing the window's rows from the reference's principal components, "
                          "against mean ± 3σ of the reference's chunks. A change in how features move "
                          "together that no single feature's test sees."),
        panel("heatmap", "Drift per segment",
              [(f"max by (segment, segment_value, feature) (driftwatch_segment_drift_detected{{{MW}}})",
                "{{segment}}={{segment_value}} {{feature}}")],
              description="Per segment (models with `segments:`: a top value of a segment column, or "
                          "__other__) and feature, 1 (dark) when it drifts; p-value tests judged on "
                          "Benjamini-Hochberg q-values over every segment and feature.",
              options={"calculate": False, "yAxis": {"axisPlacement": "left"},
                       "color": {"mode": "scheme", "scheme": "Oranges", "steps": 2},
                       "cellGap": 1, "legend": {"show": False}}),
    ],
    extra_vars=[query_var("test", "label_values(driftwatch_feature_drift_score{model=\"$model\"}, test)",
                          "Test", multi=True)],
)

PERFORMANCE = dashboard(
    "driftwatch-performance",
    "driftwatch / Performance",
    "Accuracy-family metrics once labels arrive and estimated before they do, label coverage, champion vs shadow.",
    [
        panel("timeseries", "Accuracy per role",
              [(f"driftwatch_model_performance{{{MW}, metric=\"accuracy\"}}", "{{role}}")],
              unit="percentunit"),
        panel("timeseries", "Performance metrics ($metric)",
              [(f"driftwatch_model_performance{{{MW}, metric=~\"$metric\"}}", "{{role}} {{metric}}")]),
        panel("timeseries", "Champion accuracy: estimated (before labels) and realized",
              [(f"driftwatch_estimated_performance{{{MW}, role=\"champion\", metric=\"accuracy\"}}", "estimated"),
               (f"driftwatch_estimated_performance_lower{{{MW}, role=\"champion\", metric=\"accuracy\"}}",
                "band lower"),
               (f"driftwatch_estimated_performance_upper{{{MW}, role=\"champion\", metric=\"accuracy\"}}",
                "band upper"),
               (f"driftwatch_model_performance{{{MW}, role=\"champion\", metric=\"accuracy\"}}", "realized")],
              unit="percentunit",
              description="CBPE's estimate from the champion's scores (models with `estimation:`), its band "
                          "(± 3 sampling errors), and the accuracy realized on the labels received so far."),
        panel("timeseries", "Estimated performance per role",
              [(f"driftwatch_estimated_performance{{{MW}}}", "{{role}} {{metric}}")]),
        panel("timeseries", "Champion accuracy per segment: estimated and realized",
              [(f"driftwatch_segment_estimated_performance{{{MW}, role=\"champion\", metric=\"accuracy\"}}",
                "{{segment}}={{segment_value}} estimated"),
               (f"driftwatch_segment_performance{{{MW}, role=\"champion\", metric=\"accuracy\"}}",
                "{{segment}}={{segment_value}} realized")],
              unit="percentunit",
              description="Per segment (models with `segments:`): the whole reference's estimator on the "
                          "segment's outputs, and the accuracy of its labelled predictions."),
        panel("timeseries", "Estimates outside the reference's range",
              [(f"driftwatch_estimated_performance_alert{{{MW}}}", "{{role}} {{metric}}")], w=8,
              description="1 while an estimate is outside mean ± 3σ of the metric over the reference's chunks."),
        panel("timeseries", "Label coverage",
              [(f"driftwatch_label_coverage_ratio{{{MW}}}", "labels ÷ events")], unit="percentunit", w=8),
        panel("timeseries", "Champion vs shadow agreement",
              [(f"driftwatch_shadow_agreement_ratio{{{MW}}}", "same label"),
               (f"driftwatch_shadow_score_mean_abs_diff{{{MW}}}", "mean |score diff|")],
              unit="percentunit", w=8),
        panel("stat", "Shadow verdict",
              [(f"driftwatch_shadow_comparison_verdict{{{MW}}}", "verdict"),
               (f"driftwatch_shadow_comparison_p_value{{{MW}}}", "p-value"),
               (f"driftwatch_shadow_always_valid_verdict{{{MW}}}", "always-valid verdict")],
              w=8, description="McNemar (classification) or Wilcoxon (regression): 1 shadow better, −1 champion better, "
                               "0 no difference. The always-valid verdict (a confidence sequence over per-request "
                               "differences) stays valid however often the window is looked at.",
              fieldConfig={"defaults": {"unit": "short", "mappings": [
                  {"type": "value", "options": {
                      "1": {"text": "shadow better", "color": "green"},
                      "0": {"text": "no difference", "color": "text"},
                      "-1": {"text": "champion better", "color": "orange"}}}]},
                  "overrides": []}),
    ],
    extra_vars=[query_var("metric", "label_values(driftwatch_model_performance{model=\"$model\"}, metric)",
                          "Metric", multi=True)],
)

ALERTS = dashboard(
    "driftwatch-alerts",
    "driftwatch / Alerts",
    "Alerts firing, notifications delivered and failed, retraining actions, rule reloads.",
    [
        panel("timeseries", "Alerts firing",
              [(f"sum by (alertname, severity) (driftwatch_alerts_firing{{{M}}})", "{{alertname}} ({{severity}})")]),
        panel("table", "Firing now",
              [(f"driftwatch_alerts_firing{{{M}}} > 0", "")],
              options={"showHeader": True},
              transformations=[{"id": "labelsToFields", "options": {"mode": "columns"}}]),
        panel("timeseries", "Notifications by receiver and outcome",
              [(f"sum by (receiver, outcome) (increase(driftwatch_notifications_total[{RATE}]))",
                "{{receiver}} {{outcome}}")],
              description="Delivery attempts: delivered, failed (will retry), dead (given up)."),
        panel("timeseries", "Outbox",
              [("sum by (state) (driftwatch_notifications_queued)", "{{state}}")],
              description="Messages waiting for delivery (pending) and given up (dead)."),
        panel("timeseries", "Retraining actions",
              [(f"sum by (action, outcome) (increase(driftwatch_actions_total{{{M}}}[{RATE}]))",
                "{{action}} {{outcome}}")]),
        panel("stat", "Last rule reload",
              [("min(driftwatch_rules_last_reload_success)", "ok")],
              fieldConfig={"defaults": {"unit": "short", "mappings": [
                  {"type": "value", "options": {"1": {"text": "OK", "color": "green"},
                                                "0": {"text": "REFUSED", "color": "red"}}}]},
                  "overrides": []}),
    ],
)

ME = 'model="$model", experiment="$experiment"'

EXPERIMENTS = dashboard(
    "driftwatch-experiments",
    "driftwatch / Experiments",
    "A/B tests and canaries: each arm's metric and traffic, the treatment's lift with its always-valid "
    "confidence sequence (safe to watch continuously), the decision, the sample-ratio check and the guardrails.",
    [
        panel("stat", "Decision",
              [(f"driftwatch_experiment_decision{{{ME}}}", "decision")], w=6,
              description="promote: a treatment's interval lies above 0 (below, for losses); rollback: every "
                          "treatment is worse or one broke a guardrail; continue: not yet.",
              fieldConfig={"defaults": {"unit": "short", "mappings": [
                  {"type": "value", "options": {
                      "1": {"text": "promote", "color": "green"},
                      "0": {"text": "continue", "color": "text"},
                      "-1": {"text": "rollback", "color": "red"}}}]},
                  "overrides": []}),
        panel("stat", "Split valid",
              [(f"driftwatch_experiment_invalid{{{ME}}}", "invalid")], w=6,
              description="Invalid: the arms' answered requests do not match their weights (sample ratio "
                          "mismatch, p < 0.001); no result of the experiment can be trusted.",
              fieldConfig={"defaults": {"unit": "short", "mappings": [
                  {"type": "value", "options": {
                      "0": {"text": "valid", "color": "green"},
                      "1": {"text": "INVALID", "color": "red"}}}]},
                  "overrides": []}),
        panel("timeseries", "Sample-ratio check p-value",
              [(f"driftwatch_experiment_srm_p_value{{{ME}}}", "p-value")], w=12,
              description="Chi-square of answered requests per arm against the weights; below 0.001 the "
                          "experiment is invalid."),
        panel("timeseries", "Lift and its always-valid interval",
              [(f"driftwatch_experiment_lift{{{ME}}}", "{{arm}} lift"),
               (f"driftwatch_experiment_lift_lower{{{ME}}}", "{{arm}} lower"),
               (f"driftwatch_experiment_lift_upper{{{ME}}}", "{{arm}} upper")],
              description="Treatment − baseline (or relative, as configured). The interval holds at every "
                          "look at once: watching it does not inflate false positives."),
        panel("timeseries", "Always-valid p-value",
              [(f"driftwatch_experiment_p_value{{{ME}}}", "{{arm}}")]),
        panel("timeseries", "Metric per arm",
              [(f"driftwatch_experiment_metric{{{ME}}}", "{{arm}} {{metric}}")]),
        panel("timeseries", "Labelled and all requests per arm",
              [(f"driftwatch_experiment_samples{{{ME}}}", "{{arm}} labelled"),
               (f"driftwatch_experiment_requests{{{ME}}}", "{{arm}} requests")]),
        panel("timeseries", "Guardrail: failed requests",
              [(f"driftwatch_experiment_error_ratio{{{ME}}}", "{{arm}}")], unit="percentunit"),
        panel("timeseries", "Guardrail: latency p99",
              [(f"driftwatch_experiment_latency_p99_seconds{{{ME}}}", "{{arm}}")], unit="s"),
    ],
    extra_vars=[query_var("experiment",
                          "label_values(driftwatch_experiment_decision{model=\"$model\"}, experiment)",
                          "Experiment")],
    windowed=False,
)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for name, d in [("overview", OVERVIEW), ("drift", DRIFT), ("performance", PERFORMANCE), ("alerts", ALERTS),
                    ("experiments", EXPERIMENTS)]:
        with open(os.path.join(here, f"{name}.json"), "w") as f:
            json.dump(d, f, indent=2, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    main()
