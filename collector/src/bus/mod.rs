//! The transport of cluster mode, behind one small trait: a replicated log
//! that events and labels are appended to (stored once per id) and read
//! back from a point in time, buckets of entries (leases and members that
//! expire unless written again; alert states that do not), and a work
//! queue whose jobs (notifications to deliver) are each handed to one
//! reader at a time until it settles them, and questions one collector
//! asks another (a partitioned model's partial windows). JetStream stands behind it
//! today (`nats.rs`); a Kafka log with compacted topics for the buckets and
//! a consumer group for the queue could stand there too.

pub mod nats;

pub use driftwatch_protocol::subjects::{token, untoken};

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

/// A future the trait's methods return (the trait is used as `dyn Bus`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// What a method of the trait answers, to come.
pub type Answer<'a, T> = BoxFuture<'a, Result<T, BusError>>;
/// The records a `follow` yields, oldest first, then new ones as they come.
pub type Records = Pin<Box<dyn Stream<Item = Result<Record, BusError>> + Send>>;

/// What became of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Stored,
    /// A record with the same id was stored before (within the log's
    /// duplicate window): nothing was added.
    Duplicate,
}

/// A record read back from the log.
#[derive(Debug, Clone)]
pub struct Record {
    pub subject: String,
    pub payload: Bytes,
    /// Its position in the log.
    pub sequence: u64,
    /// Records after it that this reader has not been given yet.
    pub pending: u64,
}

/// Where reading the log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first record stored at or after this time (Unix milliseconds).
    Time(i64),
    /// The first record at or after this position.
    Sequence(u64),
}

/// An entry of a bucket: its value and the revision an update must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Bytes,
    pub revision: u64,
}

/// The buckets cluster mode keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Who owns which model: an entry per model, written by its owner.
    Leases,
    /// Which collectors are alive: an entry per node, written by itself.
    Members,
    /// Alert states: an entry per model, written by its owner, and the
    /// cluster's silences. Entries never expire.
    Alerts,
}

/// The bus once a collector is connected (`None` before): how alerting
/// and delivery reach it.
pub type BusHandle = std::sync::Arc<dyn Fn() -> Option<std::sync::Arc<dyn Bus>> + Send + Sync>;

/// A job of the work queue, handed to this reader until it settles it.
pub struct Job {
    pub payload: Bytes,
    /// 1 for the first time the job is handed out, then 2, 3, ...
    pub attempt: u64,
    settle: Box<dyn FnOnce(Settle) -> BoxFuture<'static, Result<(), BusError>> + Send>,
}

/// How a reader is done with a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done: the queue forgets it.
    Done,
    /// Hand it out again (to any reader) after this delay.
    Retry(std::time::Duration),
    /// Give it up: the queue forgets it.
    Drop,
}

impl Job {
    pub fn new(
        payload: Bytes,
        attempt: u64,
        settle: Box<dyn FnOnce(Settle) -> BoxFuture<'static, Result<(), BusError>> + Send>,
    ) -> Job {
        Job {
            payload,
            attempt,
            settle,
        }
    }

    pub async fn settle(self, how: Settle) -> Result<(), BusError> {
        (self.settle)(how).await
    }
}

/// The jobs a reader is handed, as they come.
pub type Jobs = Pin<Box<dyn Stream<Item = Result<Job, BusError>> + Send>>;

/// A question another collector asked this one: what it asked, and how
/// to answer it.
pub struct Question {
    pub body: Bytes,
    answer: Box<dyn FnOnce(Bytes) -> BoxFuture<'static, Result<(), BusError>> + Send>,
}

impl Question {
    pub fn new(
        body: Bytes,
        answer: Box<dyn FnOnce(Bytes) -> BoxFuture<'static, Result<(), BusError>> + Send>,
    ) -> Question {
        Question { body, answer }
    }

    /// Answers (however large the answer).
    pub async fn answer(self, body: Bytes) -> Result<(), BusError> {
        (self.answer)(body).await
    }
}

/// The questions a collector is asked, as they come.
pub type Questions = Pin<Box<dyn Stream<Item = Question> + Send>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The log cannot be reached or did not answer in time: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The log refused what was asked (a configuration problem).
    #[error("{0}")]
    Refused(String),
}

/// The log and the buckets of a cluster.
pub trait Bus: Send + Sync {
    /// Appends `payload` under `subject`; resolves once the log has stored
    /// it (replicated where the log is), or found `id` stored already.
    fn publish(&self, subject: String, id: String, payload: Bytes) -> Answer<'_, Published>;

    /// The records under `subjects` from `start` on, in log order, then
    /// each new one as it is stored; and how many were stored from `start`
    /// on when reading began.
    fn follow(&self, subjects: Vec<String>, start: Start) -> Answer<'_, (Records, u64)>;

    /// Creates `key` if no live entry holds it: its revision, or `None`
    /// when another holds it.
    fn create(&self, bucket: Bucket, key: String, value: Bytes) -> Answer<'_, Option<u64>>;

    /// Writes `entry.key` again if its last revision is still
    /// `entry.revision` (and so extends its life): the new revision, or
    /// `None` when it expired or another wrote it since.
    fn update(&self, bucket: Bucket, entry: Entry) -> Answer<'_, Option<u64>>;

    /// Writes `key` whatever it held.
    fn put(&self, bucket: Bucket, key: String, value: Bytes) -> Answer<'_, ()>;

    /// Removes `key` if its last revision is still `revision`.
    fn delete(&self, bucket: Bucket, key: String, revision: u64) -> Answer<'_, ()>;

    /// Every live entry of `bucket`.
    fn entries(&self, bucket: Bucket) -> Answer<'_, Vec<Entry>>;

    /// The live entry of `key`, if any.
    fn get(&self, bucket: Bucket, key: String) -> Answer<'_, Option<Entry>>;

    /// Adds a job to the work queue; a job with the same `id` added within
    /// the duplicate window is added once.
    fn enqueue(&self, id: String, payload: Bytes) -> Answer<'_, Published>;

    /// The work queue's jobs: each is handed to one reader at a time, and
    /// handed out again when its reader does not settle it in time (a
    /// reader that died).
    fn jobs(&self) -> Answer<'_, Jobs>;
    /// The questions other collectors ask collector `node`.
    fn questions(&self, node: String) -> Answer<'_, Questions>;
    /// Asks collector `node` and waits for its whole answer, at most
    /// `timeout`.
    fn ask(&self, node: String, body: Bytes, timeout: std::time::Duration) -> Answer<'_, Bytes>;
}
