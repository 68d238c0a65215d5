//! Prometheus HTTP service discovery: `GET /sd/prometheus` on the
//! registry's port answers the catalog as `http_sd_config` target groups,
//! one per instance (whatever its health: Prometheus records a down
//! instance as `up == 0`), labelled `service`, `instance_id`, `version`
//! and `health`. A stock Prometheus pointed at any registry node scrapes
//! every instance, including those that come and go, with no static list.
//! With TLS on, the registry's handshake already requires a certificate
//! from the mesh's authority (Prometheus gets one of its own).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use serde::Serialize;

use crate::model::registry::Instance;
use crate::registry::core::Core;

/// The path Prometheus's `http_sd_configs` point at.
pub const PATH: &str = "/sd/prometheus";

/// One `http_sd_config` target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroup {
    /// The `host:port` to scrape.
    pub targets: Vec<String>,
    /// Labels every sample scraped from the targets gets.
    pub labels: BTreeMap<&'static str, String>,
}

impl From<&Instance> for TargetGroup {
    fn from(instance: &Instance) -> Self {
        TargetGroup {
            targets: vec![instance.address.clone()],
            labels: BTreeMap::from([
                ("service", instance.service.clone()),
                ("instance_id", instance.instance_id.clone()),
                ("version", instance.version.clone()),
                ("health", instance.health.to_string()),
            ]),
        }
    }
}

/// The route, answering from `core`'s merged catalog.
pub fn route(core: Arc<Core>) -> axum::Router {
    axum::Router::new().route(
        PATH,
        axum::routing::get(move || {
            let core = core.clone();
            async move {
                let (instances, _) = core.list(None, true);
                Json(instances.iter().map(TargetGroup::from).collect::<Vec<_>>())
            }
        }),
    )
}
