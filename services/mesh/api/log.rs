//! [`LogApi`]: writes to and queries of the log service, in domain types.
//! Writes go through the mesh channel (balanced, retried on another
//! instance when one fails: a batch is stored by one instance); queries and
//! tails fan out to every instance and merge ([`super::log_paging`]). A
//! daemon finds the instances in its dependency view; a tool gives the
//! instances the registry listed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::mesh::api::log_paging::{InstanceCursor, InstancePage, MergedCursor, merge};
use crate::mesh::api::{CallError, Retry, request, stream, unary};
use crate::mesh::channel::discover::Route;
use crate::mesh::channel::metrics::ChannelMetrics;
use crate::mesh::channel::{ChannelSettings, MeshChannel};
use crate::mesh::client::lazy_channel_to;
use crate::mesh::discovery::{DependencyView, DiscoveryError};
use crate::mesh::logship::Shipment;
use crate::mesh::tls::Tls;
use crate::mesh::trace::client::TraceAttempts;
use crate::model::log::trace::{Span, TraceId, TraceQuery, TraceSummary, summary_from_pb};
use crate::model::log::{LogFilter, LogRecord};
use crate::model::registry::Instance;
use crate::model::traffic::TrafficPolicy;
use crate::pb::log::v1 as pb;
use crate::pb::log::v1::log_service_client::LogServiceClient;

/// The log service's name in the registry.
pub const SERVICE: &str = "log";
/// The largest answer accepted from the log service.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Where the log service's instances come from.
#[derive(Debug, Clone)]
enum Source {
    /// The daemon's live dependency view.
    View(DependencyView),
    /// A fixed channel (over instances a tool listed).
    Fixed(MeshChannel),
}

/// A page of the whole log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogPage {
    /// The records, newest first.
    pub records: Vec<LogRecord>,
    /// The token of the next page; empty on the last.
    pub next_page_token: String,
    /// The log instances that did not answer (their records are missing).
    pub unanswered: Vec<String>,
}

/// Calls the log service, each call within `timeout`: writes go to one
/// instance (balanced, retried on another when one fails); queries and
/// tails fan out to every instance and merge.
#[derive(Debug, Clone)]
pub struct LogApi {
    source: Source,
    timeout: Duration,
    /// Connections to single instances, for fan-out, by address.
    connections: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Tls,
}

impl LogApi {
    /// Calls the log service found through `dependencies`.
    pub fn new(dependencies: DependencyView, timeout: Duration) -> Self {
        LogApi {
            tls: dependencies.tls().clone(),
            source: Source::View(dependencies),
            timeout,
            connections: Arc::default(),
        }
    }

    /// Calls the log service at the given instances (for tools that listed
    /// them from the registry), connecting as `tls` says.
    pub fn at_instances(instances: &[Instance], timeout: Duration, tls: &Tls) -> Self {
        let route = Route::new(instances, TrafficPolicy::Equal);
        let (_, route) = watch::channel(Arc::new(route));
        let channel = MeshChannel::new(
            SERVICE,
            route,
            ChannelSettings::default(),
            tls,
            &ChannelMetrics::default(),
        );
        LogApi {
            tls: tls.clone(),
            source: Source::Fixed(channel),
            timeout,
            connections: Arc::default(),
        }
    }

    fn client(&self) -> Result<LogServiceClient<MeshChannel>, CallError> {
        let channel = match &self.source {
            Source::View(view) => view.channel(SERVICE)?,
            Source::Fixed(channel) => channel.clone(),
        };
        Ok(LogServiceClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES))
    }

    /// Writes a batch of records and spans; returns once a log instance
    /// has stored them durably.
    pub async fn write(&self, shipment: &Shipment) -> Result<(), CallError> {
        let mut client = self.client()?;
        let message = pb::WriteRequest {
            records: shipment.records.iter().map(pb::LogRecord::from).collect(),
            spans: shipment.spans.iter().map(pb::Span::from).collect(),
        };
        let stream = futures::stream::iter([message]);
        let call = client.write(request(stream, self.timeout, Retry::Unsafe));
        unary(SERVICE, self.timeout, call).await.map(|_| ())
    }

    /// The instances a query fans out to, by id, with their addresses.
    fn instances(&self) -> Vec<(String, String)> {
        match &self.source {
            Source::View(view) => view
                .healthy(SERVICE)
                .into_iter()
                .map(|i| (i.instance_id, i.address))
                .collect(),
            Source::Fixed(channel) => channel
                .route()
                .endpoints
                .iter()
                .map(|(id, endpoint)| (id.clone(), endpoint.address.clone()))
                .collect(),
        }
    }

    /// A client of the one instance at `address` (connections are kept
    /// for the instances still there); a call made inside a trace is a
    /// client span of it.
    fn instance_client(
        &self,
        address: &str,
    ) -> Result<LogServiceClient<TraceAttempts<Channel>>, CallError> {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let channel = match connections.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let channel = lazy_channel_to(address, SERVICE, &self.tls)
                    .map_err(|e| CallError::malformed(SERVICE, e))?;
                connections.insert(address.to_owned(), channel.clone());
                channel
            }
        };
        Ok(LogServiceClient::new(TraceAttempts::new(channel))
            .max_decoding_message_size(MAX_ANSWER_BYTES))
    }

    /// A page of the whole log: the newest `page_size` records matching
    /// `filter` across every log instance, after `page_token` (empty for the
    /// first page). Instances that do not answer in time are named in the
    /// answer instead of failing it; only when none answers does it fail.
    pub async fn query_page(
        &self,
        filter: &LogFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<LogPage, CallError> {
        let cursor = if page_token.is_empty() {
            MergedCursor::default()
        } else {
            MergedCursor::decode(page_token).map_err(|e| CallError::Status {
                service: SERVICE,
                status: tonic::Status::invalid_argument(e.to_string()),
            })?
        };
        let instances = self.fan_out_targets()?;
        let asks = instances.iter().filter_map(|(id, address)| {
            let before = match cursor.instances.get(id) {
                Some(InstanceCursor::Done) => return None,
                Some(InstanceCursor::Before(seq)) => seq.to_string(),
                None => String::new(),
            };
            let mut filter = filter.clone();
            if !cursor.instances.contains_key(id)
                && let Some(below) = cursor.below()
            {
                filter.until = Some(filter.until.map_or(below, |u| u.min(below)));
            }
            let message = pb::QueryRequest {
                filter: Some(pb::Filter::from(&filter)),
                page_size,
                page_token: before,
            };
            let client = self.instance_client(address);
            let timeout = self.timeout;
            Some(async move {
                let answer = async {
                    let mut client = client?;
                    let call = client.query(request(message, timeout, Retry::Safe));
                    let page = unary(SERVICE, timeout, call).await?;
                    let records = page
                        .records
                        .into_iter()
                        .map(LogRecord::from_stored_pb)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| CallError::malformed(SERVICE, e))?;
                    Ok::<_, CallError>(InstancePage {
                        instance_id: id.clone(),
                        records,
                        next_before: page.next_page_token.parse().ok(),
                    })
                }
                .await;
                (id.clone(), answer)
            })
        });
        let (pages, unanswered) = gather(futures::future::join_all(asks).await)?;
        let (records, next) = merge(&cursor, pages, page_size.max(1) as usize);
        Ok(LogPage {
            records,
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
            unanswered,
        })
    }

    /// The instances to fan out to (forgetting connections to the ones no
    /// longer there); fails when there are none.
    fn fan_out_targets(&self) -> Result<Vec<(String, String)>, CallError> {
        let instances = self.instances();
        if instances.is_empty() {
            return Err(DiscoveryError::NoHealthyInstance(SERVICE.to_owned()).into());
        }
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        connections.retain(|address, _| instances.iter().any(|(_, a)| a == address));
        Ok(instances)
    }

    /// Every stored span of `trace` across every log instance (a trace's
    /// spans may be stored by several), by start time. A trace that no
    /// instance holds is `NOT_FOUND`.
    pub async fn trace(&self, trace: TraceId) -> Result<Vec<Span>, CallError> {
        let asks = self.fan_out_targets()?.into_iter().map(|(id, address)| {
            let client = self.instance_client(&address);
            let timeout = self.timeout;
            async move {
                let answer = async {
                    let message = pb::GetTraceRequest {
                        trace_id: trace.to_string(),
                    };
                    let mut client = client?;
                    let call = client.get_trace(request(message, timeout, Retry::Safe));
                    match unary(SERVICE, timeout, call).await {
                        Ok(found) => found
                            .spans
                            .into_iter()
                            .map(Span::from_stored_pb)
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| CallError::malformed(SERVICE, e)),
                        Err(error) if error.code() == tonic::Code::NotFound => Ok(Vec::new()),
                        Err(error) => Err(error),
                    }
                }
                .await;
                (id, answer)
            }
        });
        let (answers, _) = gather(futures::future::join_all(asks).await)?;
        let mut spans: Vec<Span> = answers.into_iter().flatten().collect();
        spans.sort_by_key(|span| (span.start, span.span_id));
        spans.dedup_by_key(|span| span.span_id);
        if spans.is_empty() {
            return Err(CallError::Status {
                service: SERVICE,
                status: tonic::Status::not_found(format!(
                    "trace_id: no span of trace {trace} is stored"
                )),
            });
        }
        Ok(spans)
    }

    /// The newest traces matching `query` across every log instance, newest
    /// first. A trace whose spans several instances hold is summed up from
    /// their summaries.
    pub async fn recent_traces(&self, query: &TraceQuery) -> Result<Vec<TraceSummary>, CallError> {
        let message = pb::QueryTracesRequest::from(query);
        let asks = self.fan_out_targets()?.into_iter().map(|(id, address)| {
            let client = self.instance_client(&address);
            let timeout = self.timeout;
            let message = message.clone();
            async move {
                let answer = async {
                    let mut client = client?;
                    let call = client.query_traces(request(message, timeout, Retry::Safe));
                    let found = unary(SERVICE, timeout, call).await?;
                    Ok(found
                        .traces
                        .into_iter()
                        .filter_map(summary_from_pb)
                        .collect::<Vec<_>>())
                }
                .await;
                (id, answer)
            }
        });
        let (answers, _) = gather(futures::future::join_all(asks).await)?;
        let mut merged: Vec<TraceSummary> = Vec::new();
        for summary in answers.into_iter().flatten() {
            match merged.iter_mut().find(|m| m.trace_id == summary.trace_id) {
                Some(known) => known.absorb(summary),
                None => merged.push(summary),
            }
        }
        merged.sort_by_key(|summary| std::cmp::Reverse(summary.start));
        merged.truncate(query.limit);
        Ok(merged)
    }

    /// The newest `limit` records matching `filter` across every log
    /// instance, newest first, with the instances that did not answer.
    pub async fn query(&self, filter: &LogFilter, limit: u32) -> Result<LogPage, CallError> {
        self.query_page(filter, limit, "").await
    }

    /// The last `backlog` records matching `filter` of every log instance,
    /// then every new one as it is written, from all of them. Only opening
    /// the streams has a deadline; the instances that could not be followed
    /// are logged, and it fails only when none could.
    pub async fn tail(
        &self,
        filter: &LogFilter,
        backlog: u32,
    ) -> Result<BoxStream<'static, Result<LogRecord, CallError>>, CallError> {
        let instances = self.instances();
        if instances.is_empty() {
            return Err(DiscoveryError::NoHealthyInstance(SERVICE.to_owned()).into());
        }
        let opens = instances.iter().map(|(id, address)| {
            let message = pb::TailRequest {
                filter: Some(pb::Filter::from(filter)),
                backlog,
            };
            let client = self.instance_client(address);
            let timeout = self.timeout;
            async move {
                let mut client = client?;
                let call = client.tail(request(message, timeout, Retry::Safe));
                stream(SERVICE, timeout, call, LogRecord::from_stored_pb).await
            }
            .map(move |result| (id.clone(), result))
        });
        let mut streams = Vec::new();
        let mut last_error = None;
        for (id, opened) in futures::future::join_all(opens).await {
            match opened {
                Ok(records) => streams.push(records),
                Err(error) => {
                    tracing::warn!(instance = %id, error = %error, "cannot follow a log instance");
                    last_error = Some(error);
                }
            }
        }
        match (streams.is_empty(), last_error) {
            (true, Some(error)) => Err(error),
            _ => Ok(futures::stream::select_all(streams).boxed()),
        }
    }
}

/// Sorts the answers of a fan-out: the ones that came, and the ids of the
/// instances that did not answer (logged). A refused argument fails the
/// whole call, as does no instance answering.
fn gather<T>(
    answers: Vec<(String, Result<T, CallError>)>,
) -> Result<(Vec<T>, Vec<String>), CallError> {
    let mut answered = Vec::new();
    let mut unanswered = Vec::new();
    let mut last_error = None;
    for (id, answer) in answers {
        match answer {
            Ok(value) => answered.push(value),
            Err(CallError::Status { status, .. })
                if status.code() == tonic::Code::InvalidArgument =>
            {
                return Err(CallError::Status {
                    service: SERVICE,
                    status,
                });
            }
            Err(error) => {
                tracing::warn!(instance = %id, error = %error, "a log instance did not answer a query");
                unanswered.push(id);
                last_error = Some(error);
            }
        }
    }
    match (answered.is_empty(), last_error) {
        (true, Some(error)) => Err(error),
        _ => Ok((answered, unanswered)),
    }
}
