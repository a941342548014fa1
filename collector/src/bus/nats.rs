//! The cluster's log and buckets on NATS JetStream: one stream holds every
//! model's events, labels and dead letters (a record's id is its
//! `Nats-Msg-Id`, so a retried publish within the duplicate window is
//! stored once); two key-value buckets whose entries expire after the
//! lease TTL unless written again (`max_age`): leases and members; one
//! whose entries stay: alert states; and the work queue of notifications,
//! a stream of its own (`<stream>_OUTBOX`, work-queue retention: a job is
//! gone once acknowledged) read by one durable consumer that every
//! collector pulls from. Collectors ask each other on core NATS
//! (`<prefix>.ask.<node>`), an answer sent in parts that fit the servers'
//! largest message.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use driftwatch_telemetry::nats::ConnectError;

use super::{
    Answer, Bucket, Bus, BusError, Entry, Job, Jobs, Published, Question, Questions, Record,
    Records, Settle, Start,
};

/// How to reach the log and what to keep in it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `nats://host:port` URLs of the servers (any one is enough to join).
    pub urls: Vec<String>,
    /// This collector's name, as the servers show its connection.
    pub node: String,
    pub auth: Auth,
    pub stream: String,
    /// Subjects are `<prefix>.events.<model>.<group>`, `.labels.`, `.dead.`.
    pub prefix: String,
    pub leases_bucket: String,
    pub members_bucket: String,
    pub alerts_bucket: String,
    /// How long an entry of the buckets lives without being written again.
    pub lease_ttl: Duration,
    /// How long the stream keeps records: at least what the models need.
    pub retention: Duration,
    pub duplicate_window: Duration,
    pub replicas: usize,
}

pub use driftwatch_telemetry::nats::Auth;

/// The subjects of a stream whose records are under `prefix`.
pub fn subjects(prefix: &str) -> Vec<String> {
    driftwatch_protocol::subjects::Kind::ALL
        .iter()
        .map(|kind| format!("{prefix}.{}.>", kind.as_str()))
        .collect()
}

/// A connection to JetStream with the stream and buckets in place.
pub struct Nats {
    client: async_nats::Client,
    /// Subjects are under it.
    prefix: String,
    js: jetstream::Context,
    stream: stream::Stream,
    leases: kv::Store,
    members: kv::Store,
    alerts: kv::Store,
    outbox: stream::Stream,
    /// The subject of the work queue's jobs.
    outbox_subject: String,
}

/// How long a reader may hold a job before it is handed out again: more
/// than one delivery attempt may take.
const JOB_HOLD: Duration = Duration::from_secs(60);
/// The durable consumer every collector reads the work queue through.
const JOB_READER: &str = "driftwatch-delivery";

impl Nats {
    /// Connects (one try, bounded by `timeout`) and creates the stream and
    /// buckets if they do not exist; an existing stream that keeps records
    /// for less than `settings.retention` is refused.
    pub async fn connect(settings: &Settings, timeout: Duration) -> Result<Nats, BusError> {
        let client = driftwatch_telemetry::nats::connect(
            &settings.urls,
            &settings.node,
            &settings.auth,
            None,
            timeout,
        )
        .await
        .map_err(|e| match e {
            ConnectError::Unavailable(e) => BusError::Unavailable(e),
            ConnectError::Refused(e) => BusError::Refused(e),
        })?;
        let js = jetstream::new(client.clone());
        let stream = ensure_stream(&js, settings).await?;
        let bucket = |name: &str| kv::Config {
            bucket: name.to_string(),
            history: 1,
            max_age: settings.lease_ttl,
            num_replicas: settings.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let leases = ensure_bucket(&js, bucket(&settings.leases_bucket)).await?;
        let members = ensure_bucket(&js, bucket(&settings.members_bucket)).await?;
        let alerts = ensure_bucket(
            &js,
            kv::Config {
                max_age: Duration::ZERO,
                ..bucket(&settings.alerts_bucket)
            },
        )
        .await?;
        let outbox_subject = format!("{}.outbox", settings.prefix);
        let name = format!("{}_OUTBOX", settings.stream);
        let outbox = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![outbox_subject.clone()],
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: settings.duplicate_window,
                num_replicas: settings.replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&format!("stream {name}"), e))?;
        Ok(Nats {
            client,
            prefix: settings.prefix.clone(),
            js,
            stream,
            leases,
            members,
            alerts,
            outbox,
            outbox_subject,
        })
    }

    /// Where collector `node` is asked.
    fn ask_subject(&self, node: &str) -> String {
        format!("{}.ask.{}", self.prefix, super::token(node))
    }

    fn store(&self, bucket: Bucket) -> &kv::Store {
        match bucket {
            Bucket::Leases => &self.leases,
            Bucket::Members => &self.members,
            Bucket::Alerts => &self.alerts,
        }
    }
}

/// The stream as configured, created if absent; refused when it would
/// drop records a model still needs.
async fn ensure_stream(
    js: &jetstream::Context,
    settings: &Settings,
) -> Result<stream::Stream, BusError> {
    let (source, destination) = driftwatch_protocol::subjects::transform(&settings.prefix);
    let transform = stream::SubjectTransform {
        source,
        destination,
    };
    let wanted = stream::Config {
        name: settings.stream.clone(),
        subjects: subjects(&settings.prefix),
        subject_transform: Some(transform.clone()),
        max_age: settings.retention,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mut stream = js
        .get_or_create_stream(wanted)
        .await
        .map_err(|e| unavailable(&format!("stream {}", settings.stream), e))?;
    let info = stream
        .info()
        .await
        .map_err(|e| unavailable(&format!("stream {}", settings.stream), e))?;
    // A stream made before partitions: records from now on get their group.
    if info.config.subject_transform.as_ref() != Some(&transform) {
        let mut config = info.config.clone();
        config.subject_transform = Some(transform);
        js.update_stream(config)
            .await
            .map_err(|e| unavailable(&format!("stream {}", settings.stream), e))?;
    }
    let kept = info.config.max_age;
    if !kept.is_zero() && kept < settings.retention {
        return Err(BusError::Refused(format!(
            "stream {} keeps records for {} but the models need {} (twice the longest window, or the label TTL): raise the stream's max_age (nats stream edit {} --max-age {}s) or delete it so that it is created again",
            settings.stream,
            humantime::format_duration(kept),
            humantime::format_duration(settings.retention),
            settings.stream,
            settings.retention.as_secs()
        )));
    }
    let missing: Vec<String> = subjects(&settings.prefix)
        .into_iter()
        .filter(|s| !info.config.subjects.contains(s))
        .collect();
    if !missing.is_empty() {
        return Err(BusError::Refused(format!(
            "stream {} does not take the subjects {} (it takes {}): another application's stream of that name?",
            settings.stream,
            missing.join(", "),
            info.config.subjects.join(", ")
        )));
    }
    Ok(stream)
}

/// A bucket as it exists (its entries' life is the first collector's
/// `lease_ttl`; a different one here is refused), else created.
async fn ensure_bucket(js: &jetstream::Context, wanted: kv::Config) -> Result<kv::Store, BusError> {
    let name = wanted.bucket.clone();
    let Ok(store) = js.get_key_value(&name).await else {
        return js
            .create_key_value(wanted)
            .await
            .map_err(|e| unavailable(&format!("bucket {name}"), e));
    };
    let mut stream = js
        .get_stream(format!("KV_{name}"))
        .await
        .map_err(|e| unavailable(&format!("bucket {name}"), e))?;
    let ttl = stream
        .info()
        .await
        .map_err(|e| unavailable(&format!("bucket {name}"), e))?
        .config
        .max_age;
    if ttl != wanted.max_age {
        return Err(BusError::Refused(format!(
            "bucket {name} keeps entries for {} but cluster.lease_ttl is {}: give every collector of the cluster the same lease_ttl (or delete the bucket: nats kv del {name})",
            humantime::format_duration(ttl),
            humantime::format_duration(wanted.max_age)
        )));
    }
    Ok(store)
}

/// The header of an answer's parts: `i/n`, the part's place and how many.
const PART: &str = "Driftwatch-Part";

/// Sends `body` to `to` in parts that fit the servers' largest message.
async fn send_parts(client: &async_nats::Client, to: String, body: Bytes) -> Result<(), BusError> {
    let size = (client.server_info().max_payload.saturating_sub(4096)).max(64 * 1024);
    let n = body.len().div_ceil(size).max(1);
    for i in 0..n {
        let part = body.slice((i * size).min(body.len())..((i + 1) * size).min(body.len()));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(PART, format!("{i}/{n}").as_str());
        client
            .publish_with_headers(to.clone(), headers, part)
            .await
            .map_err(|e| unavailable("answering", e))?;
    }
    client
        .flush()
        .await
        .map_err(|e| unavailable("answering", e))
}

/// The parts of an answer put together, as they come on `parts`.
async fn receive_parts(mut parts: async_nats::Subscriber) -> Result<Bytes, String> {
    let mut got: Vec<Option<Bytes>> = Vec::new();
    while let Some(m) = parts.next().await {
        let place = m.headers.as_ref().and_then(|h| h.get(PART)).and_then(|v| {
            v.as_str()
                .split_once('/')
                .map(|(i, n)| (i.parse(), n.parse()))
        });
        let Some((Ok(i), Ok(n))) = place else {
            return Err("an answer without its part number".into());
        };
        if got.is_empty() {
            got = vec![None; n];
        }
        let (i, n): (usize, usize) = (i, n);
        if n != got.len() || i >= n {
            return Err(format!("an answer's part {i} of {n} does not fit"));
        }
        got[i] = Some(m.payload);
        if got.iter().all(Option::is_some) {
            return Ok(got.into_iter().flatten().flatten().collect());
        }
    }
    Err("the connection closed before the whole answer came".into())
}

/// An error of the servers as a temporary failure, naming what was asked.
fn unavailable(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("NATS: {what}: {e}"))
}

impl Bus for Nats {
    fn publish(&self, subject: String, id: String, payload: Bytes) -> Answer<'_, Published> {
        Box::pin(async move {
            let duplicate = driftwatch_telemetry::nats::publish(&self.js, subject, id, payload)
                .await
                .map_err(BusError::Unavailable)?;
            Ok(match duplicate {
                true => Published::Duplicate,
                false => Published::Stored,
            })
        })
    }

    fn follow(&self, subjects: Vec<String>, start: Start) -> Answer<'_, (Records, u64)> {
        Box::pin(async move {
            let deliver_policy = match start {
                Start::Time(ms) => consumer::DeliverPolicy::ByStartTime {
                    start_time: chrono::DateTime::from_timestamp_millis(ms.max(0))
                        .unwrap_or_default(),
                },
                Start::Sequence(sequence) => consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: sequence.max(1),
                },
            };
            let consumer = self
                .stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subjects: subjects.clone(),
                    deliver_policy,
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable(&format!("reading {}", subjects.join(", ")), e))?;
            let stored = consumer.cached_info().num_pending;
            let messages = consumer
                .messages()
                .await
                .map_err(|e| unavailable(&format!("reading {}", subjects.join(", ")), e))?;
            let records = messages.map(|m| {
                let m = m.map_err(|e| unavailable("reading the stream", e))?;
                let (sequence, pending) = m
                    .info()
                    .map(|i| (i.stream_sequence, i.pending))
                    .unwrap_or_default();
                Ok(Record {
                    subject: m.subject.to_string(),
                    payload: m.payload.clone(),
                    sequence,
                    pending,
                })
            });
            Ok((Box::pin(records) as Records, stored))
        })
    }

    fn create(&self, bucket: Bucket, key: String, value: Bytes) -> Answer<'_, Option<u64>> {
        Box::pin(async move {
            match self.store(bucket).create(&key, value).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(unavailable(&format!("create {key}"), e)),
            }
        })
    }

    fn update(&self, bucket: Bucket, entry: Entry) -> Answer<'_, Option<u64>> {
        Box::pin(async move {
            let store = self.store(bucket);
            match store.update(&entry.key, entry.value, entry.revision).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(unavailable(&format!("update {}", entry.key), e)),
            }
        })
    }

    fn put(&self, bucket: Bucket, key: String, value: Bytes) -> Answer<'_, ()> {
        Box::pin(async move {
            self.store(bucket)
                .put(&key, value)
                .await
                .map(|_| ())
                .map_err(|e| unavailable(&format!("put {key}"), e))
        })
    }

    fn delete(&self, bucket: Bucket, key: String, revision: u64) -> Answer<'_, ()> {
        Box::pin(async move {
            self.store(bucket)
                .delete_expect_revision(&key, Some(revision))
                .await
                .map_err(|e| unavailable(&format!("delete {key}"), e))
        })
    }

    fn entries(&self, bucket: Bucket) -> Answer<'_, Vec<Entry>> {
        Box::pin(async move {
            let store = self.store(bucket);
            let keys: Vec<String> = match store.keys().await {
                Ok(keys) => keys
                    .try_collect()
                    .await
                    .map_err(|e| unavailable("listing keys", e))?,
                Err(e) => return Err(unavailable("listing keys", e)),
            };
            let mut entries = Vec::with_capacity(keys.len());
            for key in keys {
                let entry = store
                    .entry(&key)
                    .await
                    .map_err(|e| unavailable(&format!("reading {key}"), e))?;
                if let Some(e) = entry.filter(|e| e.operation == kv::Operation::Put) {
                    entries.push(Entry {
                        key: e.key,
                        value: e.value,
                        revision: e.revision,
                    });
                }
            }
            Ok(entries)
        })
    }

    fn get(&self, bucket: Bucket, key: String) -> Answer<'_, Option<Entry>> {
        Box::pin(async move {
            let entry = self
                .store(bucket)
                .entry(&key)
                .await
                .map_err(|e| unavailable(&format!("reading {key}"), e))?;
            Ok(entry
                .filter(|e| e.operation == kv::Operation::Put)
                .map(|e| Entry {
                    key: e.key,
                    value: e.value,
                    revision: e.revision,
                }))
        })
    }

    fn enqueue(&self, id: String, payload: Bytes) -> Answer<'_, Published> {
        Box::pin(async move {
            let duplicate = driftwatch_telemetry::nats::publish(
                &self.js,
                self.outbox_subject.clone(),
                id,
                payload,
            )
            .await
            .map_err(BusError::Unavailable)?;
            Ok(match duplicate {
                true => Published::Duplicate,
                false => Published::Stored,
            })
        })
    }

    fn jobs(&self) -> Answer<'_, Jobs> {
        Box::pin(async move {
            let consumer = self
                .outbox
                .get_or_create_consumer(
                    JOB_READER,
                    consumer::pull::Config {
                        durable_name: Some(JOB_READER.to_string()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: JOB_HOLD,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| unavailable("the notification queue", e))?;
            let messages = consumer
                .messages()
                .await
                .map_err(|e| unavailable("the notification queue", e))?;
            let jobs = messages.map(|m| {
                let m = m.map_err(|e| unavailable("reading the notification queue", e))?;
                let attempt = m.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
                let payload = m.payload.clone();
                let settle = Box::new(move |how: Settle| {
                    Box::pin(async move {
                        let kind = match how {
                            Settle::Done => jetstream::AckKind::Ack,
                            Settle::Retry(after) => jetstream::AckKind::Nak(Some(after)),
                            Settle::Drop => jetstream::AckKind::Term,
                        };
                        m.ack_with(kind)
                            .await
                            .map_err(|e| unavailable("settling a notification", e))
                    }) as super::BoxFuture<'static, Result<(), BusError>>
                });
                Ok(Job::new(payload, attempt, settle))
            });
            Ok(Box::pin(jobs) as Jobs)
        })
    }

    fn questions(&self, node: String) -> Answer<'_, Questions> {
        Box::pin(async move {
            let subject = self.ask_subject(&node);
            let asked = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|e| unavailable(&format!("answering on {subject}"), e))?;
            let client = self.client.clone();
            let questions = asked.filter_map(move |m| {
                let client = client.clone();
                async move {
                    let to = m.reply?.to_string();
                    let answer = Box::new(move |body: Bytes| {
                        Box::pin(async move { send_parts(&client, to, body).await })
                            as super::BoxFuture<'static, Result<(), BusError>>
                    });
                    Some(Question::new(m.payload, answer))
                }
            });
            Ok(Box::pin(questions) as Questions)
        })
    }

    fn ask(&self, node: String, body: Bytes, timeout: Duration) -> Answer<'_, Bytes> {
        Box::pin(async move {
            let inbox = self.client.new_inbox();
            let parts = self
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| unavailable("asking", e))?;
            self.client
                .publish_with_reply(self.ask_subject(&node), inbox, body)
                .await
                .map_err(|e| unavailable("asking", e))?;
            match tokio::time::timeout(timeout, receive_parts(parts)).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) => Err(BusError::Unavailable(format!("collector {node}: {e}"))),
                Err(_) => Err(BusError::Unavailable(format!(
                    "collector {node} did not answer within {}",
                    humantime::format_duration(timeout)
                ))),
            }
        })
    }
}
