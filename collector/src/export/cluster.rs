//! The metrics of cluster mode (`driftwatch_cluster_*`), registered beside
//! the others only when a `cluster:` block is configured.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct ClusterMetrics {
    pub connected: IntGauge,
    pub members: IntGauge,
    pub owned_models: IntGauge,
    pub owned_partitions: IntGauge,
    pub lease_changes: IntCounterVec,
    pub gathers: IntCounterVec,
    pub pending: IntGaugeVec,
    pub consumed: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub follow_restarts: IntCounterVec,
}

impl ClusterMetrics {
    pub fn register(registry: &Registry) -> ClusterMetrics {
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(name, help)).expect("a valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        ClusterMetrics {
            connected: gauge(
                "driftwatch_cluster_connected",
                "1 while this collector is connected to the cluster's NATS servers with its stream and buckets in place",
            ),
            members: gauge(
                "driftwatch_cluster_members",
                "Collectors alive in the cluster, as last read",
            ),
            owned_models: gauge(
                "driftwatch_cluster_owned_models",
                "Models whose lease this collector holds (it keeps their windows and evaluates them)",
            ),
            owned_partitions: gauge(
                "driftwatch_cluster_owned_partitions",
                "Partitions of split models whose lease this collector holds (it reads their records and keeps their partial windows)",
            ),
            gathers: counter(
                "driftwatch_cluster_partial_gathers_total",
                "Gatherings of a split model's partial windows by the owner of its partition 0: complete (evaluated), or missing (a partition's state could not be had: the model waits)",
                &["model", "outcome"],
            ),
            lease_changes: counter(
                "driftwatch_cluster_lease_changes_total",
                "Leases this collector took (acquired), lost to expiry or another collector (lost), or handed over to rebalance (released)",
                &["change"],
            ),
            pending: gauges(
                "driftwatch_cluster_pending_messages",
                "Records of an owned model in the stream not yet read by this collector (consumer lag)",
                &["model"],
            ),
            consumed: counter(
                "driftwatch_cluster_consumed_total",
                "Records of owned models read from the stream, by kind (events, labels)",
                &["model", "kind"],
            ),
            dead_letters: counter(
                "driftwatch_cluster_dead_letters_total",
                "Records that could not be read as an event or label of their model, moved to the dead-letter subject",
                &["model"],
            ),
            follow_restarts: counter(
                "driftwatch_cluster_follow_restarts_total",
                "Times reading a model's records had to start again after an error",
                &["model"],
            ),
        }
    }
}
