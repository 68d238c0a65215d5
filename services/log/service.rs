//! The gRPC `LogService` of the log daemon: durable writes, paged queries and
//! live tails over a [`LogStore`], and the spans of traces in a
//! [`SpanStore`] beside it (written in the same batches, read by trace).
//!
//! # Concurrency
//!
//! Each store sits behind an `Arc<std::sync::RwLock<_>>`. One writer
//! task takes append requests from a bounded queue ([`WRITE_QUEUE`]); it
//! drains everything queued (up to [`MAX_COMMIT_RECORDS`] records), appends
//! it as one group commit on a blocking thread (records, then spans: one
//! fsync each when the commit has any), answers every request, then
//! publishes the stored records to tailers on a broadcast channel of
//! batches. The writer holds the write lock for the whole append, fsync
//! included, so a query waits for at most one group commit; queries and
//! retention also run on blocking threads, so no lock is ever taken on an
//! async worker thread.
//!
//! # Shutdown
//!
//! When the shutdown token is cancelled, open `Write` streams stop reading
//! and fail with `UNAVAILABLE`, the writer commits what is already queued and
//! stops, and `Tail` streams end without error. The task of
//! [`LogServer::spawn_background`] ends once retention has stopped and the
//! writer has finished its last commit.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use futures::Stream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::log::metrics::IngestMetrics;
use crate::log::store::{LogStore, SpanStore, StoreError};
use crate::mesh::Tls;
use crate::mesh::logship::{LocalSink, Shipment};
use crate::mesh::tls::Caller;
use crate::model::log::trace::{InvalidSpan, Span, TraceId, TraceQuery};
use crate::model::log::{InvalidRecord, LogFilter, LogRecord, MAX_BATCH_RECORDS};
use crate::pb::log::v1 as pb;
use crate::pb::log::v1::log_service_server::{LogService, LogServiceServer};

/// How many append requests may wait for the writer.
pub const WRITE_QUEUE: usize = 1024;
/// How many group commits the live fan-out buffers for slow tailers.
pub const TAIL_BUFFER: usize = 4096;
/// The most records the writer puts in one group commit (it always takes at
/// least one request, whatever its size).
pub const MAX_COMMIT_RECORDS: usize = MAX_BATCH_RECORDS;
/// The page size of a query that asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page size of a query.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The largest backlog of a tail.
pub const MAX_BACKLOG: u32 = 1000;
/// The largest request message the service decodes.
pub const MAX_DECODING_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// The shortest retention interval; shorter ones are raised to it.
const MIN_RETENTION_INTERVAL: Duration = Duration::from_millis(10);

/// How long after shutdown the writer still takes records (the daemon's
/// own last records); it stops sooner once nobody can send any more.
pub const SHUTDOWN_INTAKE: Duration = Duration::from_secs(5);

/// How many of the newest spans a trace query looks at, at most.
pub const TRACE_SCAN_LIMIT: usize = 200_000;

/// The store, shared by the writer, queries, tails and retention.
type SharedStore = Arc<RwLock<LogStore>>;
/// The span store, shared by the writer, trace queries and retention.
type SharedSpans = Arc<RwLock<SpanStore>>;
/// The answer to an append request: how many records and spans were stored.
type AppendReply = Result<(u64, u64), Status>;
/// An append request: one validated batch, and where to send the answer.
type AppendRequest = (Shipment, oneshot::Sender<AppendReply>);
/// The records of one group commit, in sequence order.
type Published = Arc<Vec<LogRecord>>;
/// The stream of a `Tail` call.
type TailStream = Pin<Box<dyn Stream<Item = Result<pb::LogRecord, Status>> + Send>>;

/// The `LogService` implementation. See the module documentation.
#[derive(Debug)]
pub struct LogServer {
    /// The store.
    store: SharedStore,
    /// The span store.
    spans: SharedSpans,
    /// The queue of the writer task.
    appends: mpsc::Sender<AppendRequest>,
    /// The live fan-out to tailers.
    live: broadcast::Sender<Published>,
    /// The highest sequence published to tailers.
    published: Arc<AtomicU64>,
    /// Cancelled when the daemon shuts down.
    shutdown: CancellationToken,
    /// The writer task, until [`LogServer::spawn_background`] takes it.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// How requests are secured: a writer may write only its own records.
    tls: Tls,
    /// What is ingested, for `/metrics`.
    metrics: IngestMetrics,
}

impl LogServer {
    /// Builds the service over `store` and starts its writer task, which
    /// ends when `shutdown` is cancelled (after committing what is queued).
    /// Must be called inside a Tokio runtime. Retention runs only once
    /// [`LogServer::spawn_background`] is called.
    pub fn new(store: LogStore, spans: SpanStore, shutdown: CancellationToken) -> Self {
        Self::with_tail_buffer(store, spans, shutdown, TAIL_BUFFER)
    }

    /// [`LogServer::new`] with a different live fan-out capacity.
    fn with_tail_buffer(
        store: LogStore,
        spans: SpanStore,
        shutdown: CancellationToken,
        tail_buffer: usize,
    ) -> Self {
        let published = Arc::new(AtomicU64::new(store.last_sequence()));
        let store = Arc::new(RwLock::new(store));
        let spans = Arc::new(RwLock::new(spans));
        let (appends, queue) = mpsc::channel(WRITE_QUEUE);
        let (live, _) = broadcast::channel(tail_buffer.max(1));
        let metrics = IngestMetrics::default();
        let writer = tokio::spawn(run_writer(
            Arc::clone(&store),
            Arc::clone(&spans),
            metrics.clone(),
            queue,
            live.clone(),
            Arc::clone(&published),
            shutdown.clone(),
        ));
        LogServer {
            store,
            spans,
            appends,
            live,
            published,
            shutdown,
            writer: Mutex::new(Some(writer)),
            tls: Tls::Off,
            metrics,
        }
    }

    /// A sink that stores records straight into this store, without the
    /// network: where the log daemon ships its own records, so that even
    /// those of its shutdown (after its server has drained) are kept.
    pub fn local_sink(&self) -> LocalSink {
        let appends = self.appends.clone();
        Arc::new(move |shipment: Shipment| {
            let appends = appends.clone();
            Box::pin(async move {
                let (reply, answer) = oneshot::channel();
                appends
                    .send((shipment, reply))
                    .await
                    .map_err(|_| "the log store has closed".to_owned())?;
                match answer.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(status)) => Err(status.message().to_owned()),
                    Err(_) => Err("the log store has closed".to_owned()),
                }
            })
        })
    }

    /// What the service ingests, to register in the daemon's metrics.
    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Wraps the service for a tonic server, accepting request messages of
    /// up to [`MAX_DECODING_MESSAGE_BYTES`].
    pub fn into_service(self) -> LogServiceServer<Self> {
        LogServiceServer::new(self).max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
    }

    /// Starts the background work: retention every `retention_interval`
    /// (at least 10 ms) until the shutdown token is cancelled. The returned
    /// task then waits for the writer task to finish its last commit, so
    /// awaiting it after shutdown guarantees every acknowledged write is on
    /// disk and the store is idle. Call it once; later calls only run
    /// retention.
    pub fn spawn_background(&self, retention_interval: Duration) -> JoinHandle<()> {
        let store = Arc::clone(&self.store);
        let spans = Arc::clone(&self.spans);
        let shutdown = self.shutdown.clone();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let interval = retention_interval.max(MIN_RETENTION_INTERVAL);
        tokio::spawn(async move {
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let store = Arc::clone(&store);
                let spans = Arc::clone(&spans);
                let result = tokio::task::spawn_blocking(move || {
                    let now = SystemTime::now();
                    let removed = {
                        let mut store = store.write().unwrap_or_else(PoisonError::into_inner);
                        store.enforce_retention(now)?
                    };
                    let mut spans = spans.write().unwrap_or_else(PoisonError::into_inner);
                    Ok::<_, StoreError>(removed + spans.enforce_retention(now)?)
                })
                .await;
                match result {
                    Ok(Ok(0)) => {}
                    Ok(Ok(removed)) => tracing::info!(removed, "log retention removed records"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "log retention failed"),
                    Err(e) => tracing::error!(error = %e, "log retention task failed"),
                }
            }
            if let Some(writer) = writer
                && let Err(e) = writer.await
            {
                tracing::error!(error = %e, "log writer task failed");
            }
        })
    }

    /// Validates one written batch, hands it to the writer and waits until
    /// it is durable. Returns how many records were stored.
    /// Checks connections' callers against `tls` (off until set): with TLS
    /// on, a writer may write only records of its own service.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    async fn store_batch(
        &self,
        batch: pb::WriteRequest,
        writer: &Caller,
    ) -> Result<(u64, u64), Status> {
        let records = LogRecord::batch_from_pb(batch.records, SystemTime::now())
            .map_err(invalid_record_status)?;
        let spans = Span::batch_from_pb(batch.spans).map_err(invalid_span_status)?;
        if records.is_empty() && spans.is_empty() {
            return Ok((0, 0));
        }
        let services = records
            .iter()
            .map(|record| ("records", &record.service))
            .enumerate()
            .chain(
                spans
                    .iter()
                    .map(|span| ("spans", &span.service))
                    .enumerate(),
            );
        for (index, (list, service)) in services {
            if !writer.acts_for(service) {
                return Err(Status::permission_denied(format!(
                    "{list}[{index}].service: {writer} may write only its own service's {list}, not {service:?}'s; nothing of this batch was stored"
                )));
            }
        }
        let (reply, answer) = oneshot::channel();
        self.appends
            .send((Shipment { records, spans }, reply))
            .await
            .map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }
}

/// The status of a rejected record: `RESOURCE_EXHAUSTED` for a size limit,
/// `INVALID_ARGUMENT` otherwise.
fn invalid_record_status(e: InvalidRecord) -> Status {
    if e.is_oversize() {
        Status::resource_exhausted(e.to_string())
    } else {
        Status::invalid_argument(e.to_string())
    }
}

/// The status of a rejected span, as [`invalid_record_status`].
fn invalid_span_status(e: InvalidSpan) -> Status {
    if e.is_oversize() {
        Status::resource_exhausted(e.to_string())
    } else {
        Status::invalid_argument(e.to_string())
    }
}

/// The status of a write that can no longer be stored.
fn shutting_down() -> Status {
    Status::unavailable("the log service is shutting down")
}

/// Converts an optional wire filter; a missing one matches everything.
fn filter_from_pb(filter: Option<pb::Filter>) -> Result<LogFilter, Status> {
    filter
        .map(LogFilter::try_from)
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The status of a blocking task that did not finish.
fn task_failed(e: tokio::task::JoinError) -> Status {
    tracing::error!(error = %e, "log store task failed");
    Status::internal("log store task failed")
}

/// The writer task: group commits of everything queued, until shutdown.
async fn run_writer(
    store: SharedStore,
    spans: SharedSpans,
    metrics: IngestMetrics,
    mut queue: mpsc::Receiver<AppendRequest>,
    live: broadcast::Sender<Published>,
    published: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    // After shutdown the writer still takes requests for a while: the
    // daemon's own last records (the local sink) arrive after its server
    // has drained. It ends once every sender is gone, or the grace is over
    // (then it refuses new requests and commits the queued ones).
    let mut intake = Intake::Open;
    loop {
        let request = match &mut intake {
            Intake::Open => tokio::select! {
                biased;
                request = queue.recv() => request,
                () = shutdown.cancelled() => {
                    intake = Intake::Grace(Box::pin(tokio::time::sleep(SHUTDOWN_INTAKE)));
                    continue;
                }
            },
            Intake::Grace(grace) => tokio::select! {
                biased;
                request = queue.recv() => request,
                () = grace.as_mut() => {
                    queue.close();
                    intake = Intake::Closed;
                    continue;
                }
            },
            Intake::Closed => queue.recv().await,
        };
        let Some(first) = request else {
            break;
        };
        let mut count = first.0.len();
        let mut requests = vec![first];
        while count < MAX_COMMIT_RECORDS {
            match queue.try_recv() {
                Ok(request) => {
                    count += request.0.len();
                    requests.push(request);
                }
                Err(_) => break,
            }
        }
        commit(&store, &spans, &metrics, &live, &published, requests).await;
    }
    tracing::debug!("log writer stopped");
}

/// Whether the writer takes new records.
enum Intake {
    /// Serving.
    Open,
    /// Shutting down: still taking records until the grace ends.
    Grace(std::pin::Pin<Box<tokio::time::Sleep>>),
    /// Refusing new records; committing the queued ones.
    Closed,
}

/// Appends the requests as one group commit, answers them, and publishes
/// the stored records to tailers.
async fn commit(
    store: &SharedStore,
    spans: &SharedSpans,
    metrics: &IngestMetrics,
    live: &broadcast::Sender<Published>,
    published: &AtomicU64,
    requests: Vec<AppendRequest>,
) {
    let (shipments, replies): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
    let (batches, span_batches): (Vec<_>, Vec<_>) = shipments
        .into_iter()
        .map(|shipment| (shipment.records, shipment.spans))
        .unzip();
    let task_store = Arc::clone(store);
    let task_spans = Arc::clone(spans);
    let task_live = live.clone();
    let task_metrics = metrics.clone();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let metrics = task_metrics;
        let span_counts = if span_batches.iter().any(|batch| !batch.is_empty()) {
            let mut spans = task_spans.write().unwrap_or_else(PoisonError::into_inner);
            let bytes = spans.disk_bytes();
            let counts = spans.append(span_batches)?;
            metrics.spans.inc_by(counts.iter().sum());
            metrics
                .bytes
                .inc_by(spans.disk_bytes().saturating_sub(bytes));
            counts
        } else {
            vec![0; span_batches.len()]
        };
        let mut store = task_store.write().unwrap_or_else(PoisonError::into_inner);
        let before = store.last_sequence();
        let bytes = store.disk_bytes();
        let counts = store.append(batches)?;
        metrics.records.inc_by(counts.iter().sum());
        metrics
            .bytes
            .inc_by(store.disk_bytes().saturating_sub(bytes));
        // Checked under the write lock: a tailer that subscribes later reads
        // the store after this commit, so its backlog covers these records.
        let stored = (task_live.receiver_count() > 0)
            .then(|| store.records_after(before).cloned().collect::<Vec<_>>());
        let counts = counts.into_iter().zip(span_counts).collect::<Vec<_>>();
        Ok::<_, StoreError>((counts, stored, store.last_sequence()))
    })
    .await;
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    let (counts, stored, last) = match result {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            metrics.commit_errors.inc();
            tracing::error!(error = %e, "storing log records failed");
            let status = Status::internal(format!("storing records failed: {e}"));
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
            return;
        }
        Err(e) => {
            let status = task_failed(e);
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
            return;
        }
    };
    for (reply, count) in replies.into_iter().zip(counts) {
        // The writer of a batch may be gone; its records are stored anyway.
        let _ = reply.send(Ok(count));
    }
    published.store(last, Ordering::Release);
    if let Some(stored) = stored.filter(|s| !s.is_empty()) {
        // No receiver left is fine: nobody is tailing.
        let _ = live.send(Arc::new(stored));
    }
}

/// The state of one `Tail` stream.
struct TailState {
    /// Records ready to send, oldest first.
    pending: VecDeque<LogRecord>,
    /// The live fan-out.
    receiver: broadcast::Receiver<Published>,
    /// Which records to send.
    filter: LogFilter,
    /// The highest sequence already considered (sent or filtered out).
    seen: u64,
    /// The highest sequence published, to say how far behind a lagging
    /// tailer is.
    published: Arc<AtomicU64>,
    /// Ends the stream.
    shutdown: CancellationToken,
    /// Set once the final item has been sent.
    done: bool,
}

/// The next item of a `Tail` stream, or `None` at its end.
async fn next_tail_item(
    mut state: TailState,
) -> Option<(Result<pb::LogRecord, Status>, TailState)> {
    loop {
        if state.done || state.shutdown.is_cancelled() {
            return None;
        }
        if let Some(record) = state.pending.pop_front() {
            return Some((Ok(record.into()), state));
        }
        let received = tokio::select! {
            biased;
            () = state.shutdown.cancelled() => return None,
            received = state.receiver.recv() => received,
        };
        match received {
            Ok(batch) => {
                for record in batch.iter() {
                    if record.sequence <= state.seen {
                        continue;
                    }
                    state.seen = record.sequence;
                    if state.filter.matches(record) {
                        state.pending.push_back(record.clone());
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return None,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                state.done = true;
                let behind = state
                    .published
                    .load(Ordering::Acquire)
                    .saturating_sub(state.seen);
                let status = Status::resource_exhausted(format!(
                    "tail fell behind by {behind} records; reconnect, and use Query to \
                     fetch what was missed"
                ));
                return Some((Err(status), state));
            }
        }
    }
}

#[tonic::async_trait]
impl LogService for LogServer {
    async fn write(
        &self,
        request: Request<Streaming<pb::WriteRequest>>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let writer = Caller::of(&request, &self.tls);
        let mut stream = request.into_inner();
        let (mut accepted, mut accepted_spans) = (0, 0);
        loop {
            let message = tokio::select! {
                biased;
                message = stream.message() => message?,
                () = self.shutdown.cancelled() => {
                    return Err(Status::unavailable(format!(
                        "the log service is shutting down; {accepted} records of this stream were stored"
                    )));
                }
            };
            let Some(batch) = message else {
                break;
            };
            let (records, spans) = self.store_batch(batch, &writer).await?;
            accepted += records;
            accepted_spans += spans;
        }
        Ok(Response::new(pb::WriteResponse {
            accepted,
            accepted_spans,
        }))
    }

    async fn get_trace(
        &self,
        request: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::Trace>, Status> {
        let text = request.into_inner().trace_id;
        let trace: TraceId = text
            .parse()
            .map_err(|e| Status::invalid_argument(format!("trace_id: {e}")))?;
        let spans = Arc::clone(&self.spans);
        let found = tokio::task::spawn_blocking(move || {
            spans
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .trace(trace)
        })
        .await
        .map_err(task_failed)?;
        if found.is_empty() {
            return Err(Status::not_found(format!(
                "trace_id: no span of trace {trace} is stored"
            )));
        }
        Ok(Response::new(pb::Trace {
            trace_id: trace.to_string(),
            spans: found.iter().map(pb::Span::from).collect(),
        }))
    }

    async fn query_traces(
        &self,
        request: Request<pb::QueryTracesRequest>,
    ) -> Result<Response<pb::QueryTracesResponse>, Status> {
        let query = TraceQuery::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let spans = Arc::clone(&self.spans);
        let traces = tokio::task::spawn_blocking(move || {
            spans
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .recent_traces(&query, TRACE_SCAN_LIMIT)
        })
        .await
        .map_err(task_failed)?;
        Ok(Response::new(pb::QueryTracesResponse {
            traces: traces.iter().map(Into::into).collect(),
        }))
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let request = request.into_inner();
        let filter = filter_from_pb(request.filter)?;
        let limit = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {size} is over the maximum of {MAX_PAGE_SIZE}"
                )));
            }
            size => size,
        };
        let before = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<u64>().map_err(|_| {
                Status::invalid_argument(format!(
                    "page_token: {token:?} is not a token from a previous page"
                ))
            })?),
        };
        let store = Arc::clone(&self.store);
        let page = tokio::task::spawn_blocking(move || {
            let store = store.read().unwrap_or_else(PoisonError::into_inner);
            store.query(&filter, before, limit as usize)
        })
        .await
        .map_err(task_failed)?;
        Ok(Response::new(pb::QueryResponse {
            records: page.records.into_iter().map(Into::into).collect(),
            next_page_token: page
                .next_before
                .map(|sequence| sequence.to_string())
                .unwrap_or_default(),
        }))
    }

    type TailStream = TailStream;

    async fn tail(
        &self,
        request: Request<pb::TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let request = request.into_inner();
        let filter = filter_from_pb(request.filter)?;
        if request.backlog > MAX_BACKLOG {
            return Err(Status::invalid_argument(format!(
                "backlog: {} is over the maximum of {MAX_BACKLOG}",
                request.backlog
            )));
        }
        // Subscribe first: every record stored after the backlog is read
        // is then also received live; those before are skipped by sequence.
        let receiver = self.live.subscribe();
        let store = Arc::clone(&self.store);
        let backlog_filter = filter.clone();
        let backlog = request.backlog as usize;
        let (mut newest_first, seen) = tokio::task::spawn_blocking(move || {
            let store = store.read().unwrap_or_else(PoisonError::into_inner);
            let page = store.query(&backlog_filter, None, backlog);
            (page.records, store.last_sequence())
        })
        .await
        .map_err(task_failed)?;
        newest_first.reverse();
        let state = TailState {
            pending: newest_first.into(),
            receiver,
            filter,
            seen,
            published: Arc::clone(&self.published),
            shutdown: self.shutdown.clone(),
            done: false,
        };
        let stream: TailStream = Box::pin(futures::stream::unfold(state, next_tail_item));
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::store::Retention;
    use crate::pb::log::v1::log_service_client::LogServiceClient;
    use futures::StreamExt;
    use std::net::SocketAddr;
    use tonic::Code;
    use tonic::transport::Channel;

    fn record(service: &str, message: &str) -> pb::LogRecord {
        pb::LogRecord {
            service: service.into(),
            instance: "i1".into(),
            level: pb::Level::Info as i32,
            message: message.into(),
            ..Default::default()
        }
    }

    fn spans_in(dir: &tempfile::TempDir) -> SpanStore {
        SpanStore::open(&dir.path().join("spans"), Retention::default()).unwrap()
    }

    fn batch(records: Vec<pb::LogRecord>) -> pb::WriteRequest {
        pb::WriteRequest {
            records,
            spans: Vec::new(),
        }
    }

    struct Harness {
        _dir: tempfile::TempDir,
        client: LogServiceClient<Channel>,
        shutdown: CancellationToken,
        server: JoinHandle<()>,
        background: JoinHandle<()>,
    }

    impl Harness {
        async fn start(tail_buffer: usize) -> Self {
            let dir = tempfile::tempdir().unwrap();
            Self::start_in(dir, tail_buffer).await
        }

        async fn start_in(dir: tempfile::TempDir, tail_buffer: usize) -> Self {
            let store = LogStore::open(dir.path(), Retention::default()).unwrap();
            let spans = SpanStore::open(&dir.path().join("spans"), Retention::default()).unwrap();
            let shutdown = CancellationToken::new();
            let server = LogServer::with_tail_buffer(store, spans, shutdown.clone(), tail_buffer);
            let background = server.spawn_background(Duration::from_secs(3600));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            let token = shutdown.clone();
            let server = tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(server.into_service())
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        token.cancelled_owned(),
                    )
                    .await
                    .unwrap();
            });
            let client = LogServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            Harness {
                _dir: dir,
                client,
                shutdown,
                server,
                background,
            }
        }

        async fn write(&self, batches: Vec<pb::WriteRequest>) -> Result<u64, Status> {
            let mut client = self.client.clone();
            client
                .write(futures::stream::iter(batches))
                .await
                .map(|r| r.into_inner().accepted)
        }

        async fn query(&self, request: pb::QueryRequest) -> Result<pb::QueryResponse, Status> {
            self.client
                .clone()
                .query(request)
                .await
                .map(Response::into_inner)
        }

        async fn stop(self) -> tempfile::TempDir {
            self.shutdown.cancel();
            self.background.await.unwrap();
            self.server.await.unwrap();
            self._dir
        }
    }

    fn messages(response: &pb::QueryResponse) -> Vec<&str> {
        response
            .records
            .iter()
            .map(|r| r.message.as_str())
            .collect()
    }

    #[tokio::test]
    async fn query_validation_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), Retention::default()).unwrap();
        let server = LogServer::new(store, spans_in(&dir), CancellationToken::new());
        let ask = |request: pb::QueryRequest| server.query(Request::new(request));

        let e = ask(pb::QueryRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.message(), "page_size: 5000 is over the maximum of 1000");

        let e = ask(pb::QueryRequest {
            page_token: "abc".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("page_token: "), "{}", e.message());

        let e = ask(pb::QueryRequest {
            filter: Some(pb::Filter {
                min_level: 9,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.message(), "filter.min_level: unknown value 9");

        let empty = ask(pb::QueryRequest::default()).await.unwrap().into_inner();
        assert!(empty.records.is_empty());
        assert_eq!(empty.next_page_token, "");

        let e = server
            .tail(Request::new(pb::TailRequest {
                backlog: 1001,
                ..Default::default()
            }))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.message(), "backlog: 1001 is over the maximum of 1000");
    }

    #[tokio::test]
    async fn write_then_query_pages() {
        let h = Harness::start(TAIL_BUFFER).await;
        let accepted = h
            .write(vec![
                batch(vec![record("a", "one"), record("b", "two")]),
                batch(vec![]),
                batch(vec![record("a", "three")]),
            ])
            .await
            .unwrap();
        assert_eq!(accepted, 3);

        let first = h
            .query(pb::QueryRequest {
                page_size: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(messages(&first), vec!["three", "two"]);
        assert_eq!(first.records[0].sequence, 3);
        assert!(first.records[0].timestamp.is_some());
        assert_eq!(first.next_page_token, "2");
        let second = h
            .query(pb::QueryRequest {
                page_size: 2,
                page_token: first.next_page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(messages(&second), vec!["one"]);
        assert_eq!(second.next_page_token, "");

        let only_a = h
            .query(pb::QueryRequest {
                filter: Some(pb::Filter {
                    service: "a".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(messages(&only_a), vec!["three", "one"]);

        // Records survive a restart.
        let dir = h.stop().await;
        let h = Harness::start_in(dir, TAIL_BUFFER).await;
        let all = h.query(pb::QueryRequest::default()).await.unwrap();
        assert_eq!(messages(&all), vec!["three", "two", "one"]);
        assert_eq!(
            h.write(vec![batch(vec![record("a", "four")])])
                .await
                .unwrap(),
            1
        );
        let all = h.query(pb::QueryRequest::default()).await.unwrap();
        assert_eq!(all.records[0].sequence, 4);
        h.stop().await;
    }

    #[tokio::test]
    async fn invalid_batches_are_rejected_whole() {
        let h = Harness::start(TAIL_BUFFER).await;
        let e = h
            .write(vec![
                batch(vec![record("a", "kept")]),
                batch(vec![record("a", "x"), record("a", "y"), record("", "z")]),
            ])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.message(), "records[2].service: must not be empty");

        let e = h
            .write(vec![batch(vec![record("a", &"m".repeat(20_000))])])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(
            e.message(),
            "records[0].message: 20000 bytes is over the 16384-byte limit"
        );

        let e = h
            .write(vec![batch(vec![record("a", ""); MAX_BATCH_RECORDS + 1])])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);

        let mut unset = record("a", "no level");
        unset.level = 0;
        let e = h.write(vec![batch(vec![unset])]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);

        let all = h.query(pb::QueryRequest::default()).await.unwrap();
        assert_eq!(messages(&all), vec!["kept"]);
        h.stop().await;
    }

    #[tokio::test]
    async fn concurrent_writers_all_get_stored() {
        let h = Harness::start(TAIL_BUFFER).await;
        let mut tasks = Vec::new();
        for w in 0..8 {
            let client = h.client.clone();
            tasks.push(tokio::spawn(async move {
                let batches: Vec<_> = (0..10)
                    .map(|b| batch(vec![record("svc", &format!("w{w}-b{b}")); 5]))
                    .collect();
                client
                    .clone()
                    .write(futures::stream::iter(batches))
                    .await
                    .unwrap()
                    .into_inner()
                    .accepted
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        assert_eq!(total, 400);
        let page = h
            .query(pb::QueryRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.records.len(), 400);
        let mut sequences: Vec<u64> = page.records.iter().map(|r| r.sequence).collect();
        sequences.sort_unstable();
        assert_eq!(sequences, (1..=400).collect::<Vec<_>>());
        h.stop().await;
    }

    #[tokio::test]
    async fn tail_sends_backlog_then_live_records_and_ends_on_shutdown() {
        let h = Harness::start(TAIL_BUFFER).await;
        h.write(vec![batch(vec![
            record("a", "old-1"),
            record("b", "old-other"),
            record("a", "old-2"),
            record("a", "old-3"),
        ])])
        .await
        .unwrap();

        let mut tail = h
            .client
            .clone()
            .tail(pb::TailRequest {
                filter: Some(pb::Filter {
                    service: "a".into(),
                    ..Default::default()
                }),
                backlog: 2,
            })
            .await
            .unwrap()
            .into_inner();
        let next = |m: Option<Result<pb::LogRecord, Status>>| m.unwrap().unwrap().message;
        assert_eq!(next(tail.next().await), "old-2");
        assert_eq!(next(tail.next().await), "old-3");

        h.write(vec![batch(vec![
            record("b", "skip"),
            record("a", "live-1"),
        ])])
        .await
        .unwrap();
        h.write(vec![batch(vec![record("a", "live-2")])])
            .await
            .unwrap();
        let live = tail.next().await.unwrap().unwrap();
        assert_eq!(live.message, "live-1");
        assert_eq!(live.sequence, 6);
        assert_eq!(next(tail.next().await), "live-2");

        h.shutdown.cancel();
        let end = tokio::time::timeout(Duration::from_secs(5), tail.next())
            .await
            .unwrap();
        assert!(end.is_none(), "{end:?}");
        h.stop().await;
    }

    #[tokio::test]
    async fn lagging_tail_gets_resource_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), Retention::default()).unwrap();
        let server =
            LogServer::with_tail_buffer(store, spans_in(&dir), CancellationToken::new(), 2);
        server
            .store_batch(batch(vec![record("a", "backlog")]), &Caller::Unverified)
            .await
            .unwrap();
        let mut tail = server
            .tail(Request::new(pb::TailRequest {
                backlog: 5,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        // Five commits of two records while the tailer does not read
        // overflow a buffer of two commits.
        for i in 0..5 {
            let records = vec![record("a", &format!("{i}")), record("b", "x")];
            assert_eq!(
                server
                    .store_batch(batch(records), &Caller::Unverified)
                    .await
                    .unwrap(),
                (2, 0)
            );
        }
        let first = tail.next().await.unwrap().unwrap();
        assert_eq!(first.message, "backlog");
        let status = tail.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status
                .message()
                .starts_with("tail fell behind by 10 records; reconnect"),
            "{}",
            status.message()
        );
        assert!(tail.next().await.is_none());
    }

    #[tokio::test]
    async fn tail_without_backlog_sees_only_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), Retention::default()).unwrap();
        let shutdown = CancellationToken::new();
        let server = LogServer::new(store, spans_in(&dir), shutdown.clone());
        server
            .store_batch(batch(vec![record("a", "before")]), &Caller::Unverified)
            .await
            .unwrap();
        let mut tail = server
            .tail(Request::new(pb::TailRequest::default()))
            .await
            .unwrap()
            .into_inner();
        server
            .store_batch(batch(vec![record("a", "after")]), &Caller::Unverified)
            .await
            .unwrap();
        let live = tail.next().await.unwrap().unwrap();
        assert_eq!((live.message.as_str(), live.sequence), ("after", 2));
        let background = server.spawn_background(Duration::from_secs(3600));
        shutdown.cancel();
        assert!(tail.next().await.is_none());
        // Once the background task ends, the writer has stopped too.
        background.await.unwrap();
        let e = server
            .store_batch(batch(vec![record("a", "late")]), &Caller::Unverified)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
    }
}
