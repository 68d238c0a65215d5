//! [`LogApi`]: writes to and queries of the log service, in domain types.
//! A daemon calls through its mesh channel to the log service (balanced,
//! retried on another instance when one fails); a tool that has no
//! dependency view gives it the instances the registry listed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::watch;

use crate::mesh::api::{CallError, Retry, request, unary};
use crate::mesh::channel::{ChannelSettings, MeshChannel};
use crate::mesh::discovery::DependencyView;
use crate::model::log::{LogFilter, LogRecord};
use crate::model::registry::Instance;
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

/// Calls the log service, each call within `timeout`.
#[derive(Debug, Clone)]
pub struct LogApi {
    source: Source,
    timeout: Duration,
}

impl LogApi {
    /// Calls the log service found through `dependencies`.
    pub fn new(dependencies: DependencyView, timeout: Duration) -> Self {
        LogApi {
            source: Source::View(dependencies),
            timeout,
        }
    }

    /// Calls the log service at the given instances (for tools that listed
    /// them from the registry).
    pub fn at_instances(instances: &[Instance], timeout: Duration) -> Self {
        let set: BTreeMap<String, String> = instances
            .iter()
            .map(|i| (i.instance_id.clone(), i.address.clone()))
            .collect();
        let (_, endpoints) = watch::channel(Arc::new(set));
        let channel = MeshChannel::new(SERVICE, endpoints, ChannelSettings::default());
        LogApi {
            source: Source::Fixed(channel),
            timeout,
        }
    }

    fn client(&self) -> Result<LogServiceClient<MeshChannel>, CallError> {
        let channel = match &self.source {
            Source::View(view) => view.channel(SERVICE)?,
            Source::Fixed(channel) => channel.clone(),
        };
        Ok(LogServiceClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES))
    }

    /// Writes a batch of records; returns once a log instance has stored
    /// them durably.
    pub async fn write(&self, records: &[LogRecord]) -> Result<(), CallError> {
        let mut client = self.client()?;
        let message = pb::WriteRequest {
            records: records.iter().map(pb::LogRecord::from).collect(),
        };
        let stream = futures::stream::iter([message]);
        let call = client.write(request(stream, self.timeout, Retry::Unsafe));
        unary(SERVICE, self.timeout, call).await.map(|_| ())
    }

    /// The newest `limit` records matching `filter`, newest first.
    pub async fn query(&self, filter: &LogFilter, limit: u32) -> Result<Vec<LogRecord>, CallError> {
        let mut client = self.client()?;
        let message = pb::QueryRequest {
            filter: Some(pb::Filter::from(filter)),
            page_size: limit,
            page_token: String::new(),
        };
        let call = client.query(request(message, self.timeout, Retry::Safe));
        unary(SERVICE, self.timeout, call)
            .await?
            .records
            .into_iter()
            .map(LogRecord::from_stored_pb)
            .collect::<Result<_, _>>()
            .map_err(|e| CallError::malformed(SERVICE, e))
    }

    /// The last `backlog` records matching `filter`, then every new one as
    /// it is written. Only opening the stream has a deadline.
    pub async fn tail(
        &self,
        filter: &LogFilter,
        backlog: u32,
    ) -> Result<BoxStream<'static, Result<LogRecord, CallError>>, CallError> {
        let mut client = self.client()?;
        let message = pb::TailRequest {
            filter: Some(pb::Filter::from(filter)),
            backlog,
        };
        let call = client.tail(request(message, self.timeout, Retry::Safe));
        let records = crate::mesh::client::deadline(self.timeout, call)
            .await
            .map_err(|status| CallError::Status {
                service: SERVICE,
                status,
            })?
            .into_inner();
        Ok(records
            .map(|record| match record {
                Ok(record) => {
                    LogRecord::from_stored_pb(record).map_err(|e| CallError::malformed(SERVICE, e))
                }
                Err(status) => Err(CallError::Status {
                    service: SERVICE,
                    status,
                }),
            })
            .boxed())
    }
}
