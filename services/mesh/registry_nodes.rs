//! The registry nodes a daemon or a tool talks to: `--registry` names one
//! or several (comma-separated URLs), and a host name that resolves to
//! several addresses (a DNS round-robin name, or a Compose network alias
//! that every node shares) counts as one node per address. Everything that talks to the registry
//! (registration, the dependency watch, the tools, the portal's views) uses
//! one node at a time, the same one, and moves on to the next at once when
//! it fails; only when every node has failed in a row do callers back off.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::transport::Channel;

use crate::mesh::client::lazy_channel;

use crate::mesh::config::ConfigError;
use crate::mesh::tls::Tls;

use crate::mesh::api::registry::SERVICE as REGISTRY;

/// One registry node.
#[derive(Debug)]
struct Node {
    url: String,
    channel: Channel,
}

/// The registry nodes and the one in use (shared by every clone).
#[derive(Debug, Clone)]
pub struct RegistryNodes {
    nodes: Arc<[Node]>,
    current: Arc<AtomicUsize>,
}

/// A node as handed out: which one, and its channel.
#[derive(Debug, Clone)]
pub struct Picked {
    /// Its place in the list (to report a failure of it).
    pub index: usize,
    /// Its URL.
    pub url: String,
    /// A lazily connecting channel to it.
    pub channel: Channel,
}

impl RegistryNodes {
    /// The nodes `urls` (comma-separated) names, each connecting on first
    /// use as `tls` says; an invalid URL is an error about `setting`.
    pub fn new(setting: &'static str, urls: &str, tls: &Tls) -> Result<Self, ConfigError> {
        let nodes = expand(Self::parse(setting, urls)?, resolve)
            .into_iter()
            .map(|url| {
                Ok(Node {
                    channel: lazy_channel(setting, &url, REGISTRY, tls)?,
                    url,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(RegistryNodes {
            nodes: nodes.into(),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The URLs of `urls` (comma-separated), each checked; at least one.
    pub fn parse(setting: &'static str, urls: &str) -> Result<Vec<String>, ConfigError> {
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(ConfigError::invalid(setting, "names no registry node"));
        }
        for url in &urls {
            crate::mesh::config::parse_url(setting, url)?;
        }
        Ok(urls)
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there is none (never: [`RegistryNodes::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node in use.
    pub fn current(&self) -> Picked {
        let index = self.current.load(Ordering::Acquire) % self.nodes.len();
        let node = &self.nodes[index];
        Picked {
            index,
            url: node.url.clone(),
            channel: node.channel.clone(),
        }
    }

    /// The node `index` failed: the next one is in use from now on (unless
    /// another caller moved on already).
    pub fn failed(&self, index: usize) {
        let next = (index + 1) % self.nodes.len();
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether `failures` failures in a row have tried every node: time to
    /// back off rather than try the next at once.
    pub fn all_failed(&self, failures: u32) -> bool {
        failures as usize >= self.nodes.len()
    }
}

/// The addresses `authority` (`host:port`) resolves to now, none when it
/// does not resolve (it is dialed by name later, when it may).
fn resolve(authority: &str) -> Vec<SocketAddr> {
    authority
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default()
}

/// `urls`, with each one whose host name resolves (by `resolve`) to several
/// addresses replaced by one URL per address, in the resolver's order.
/// Addresses, and names that resolve to one address or none, stay as they
/// are. A node named twice is kept once.
fn expand(urls: Vec<String>, resolve: impl Fn(&str) -> Vec<SocketAddr>) -> Vec<String> {
    let mut expanded: Vec<String> = Vec::new();
    for url in urls {
        let authority = url
            .strip_prefix("http://")
            .unwrap_or(&url)
            .trim_end_matches('/');
        let addresses = if authority.parse::<SocketAddr>().is_ok() {
            Vec::new()
        } else {
            resolve(authority)
        };
        let urls = if addresses.len() > 1 {
            addresses.iter().map(|a| format!("http://{a}")).collect()
        } else {
            vec![url]
        };
        for url in urls {
            if !expanded.contains(&url) {
                expanded.push(url);
            }
        }
    }
    expanded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_of_several_addresses_is_one_node_per_address() {
        let resolve = |authority: &str| -> Vec<SocketAddr> {
            match authority {
                "registry:50051" => vec![
                    "10.0.0.2:50051".parse().unwrap(),
                    "10.0.0.3:50051".parse().unwrap(),
                    "[fd00::4]:50051".parse().unwrap(),
                ],
                "one:50051" => vec!["10.0.0.9:50051".parse().unwrap()],
                _ => Vec::new(),
            }
        };
        let urls = [
            "http://registry:50051",
            "http://one:50051",
            "http://unknown:50051",
            "http://10.0.0.3:50051",
        ];
        assert_eq!(
            expand(urls.map(String::from).to_vec(), resolve),
            [
                "http://10.0.0.2:50051",
                "http://10.0.0.3:50051",
                "http://[fd00::4]:50051",
                "http://one:50051",
                "http://unknown:50051",
            ]
        );
        // Every URL it makes is one `--registry` accepts.
        for url in expand(vec!["http://registry:50051".into()], resolve) {
            RegistryNodes::new("--registry", &url, &Tls::Off).unwrap();
        }
    }

    #[tokio::test]
    async fn callers_move_on_together_and_back_off_after_a_full_round() {
        let nodes = RegistryNodes::new(
            "--registry",
            "http://127.0.0.1:1, http://127.0.0.1:2,http://127.0.0.1:3",
            &Tls::Off,
        )
        .unwrap();
        assert_eq!(nodes.len(), 3);
        let first = nodes.current();
        assert_eq!(first.url, "http://127.0.0.1:1");
        let other = nodes.clone();
        other.failed(first.index);
        assert_eq!(nodes.current().url, "http://127.0.0.1:2");
        // A late report of the same failure does not skip a node.
        nodes.failed(first.index);
        assert_eq!(nodes.current().index, 1);
        assert!(!nodes.all_failed(2));
        assert!(nodes.all_failed(3));
        let error = RegistryNodes::new("--registry", " , ", &Tls::Off).unwrap_err();
        assert!(error.to_string().contains("--registry"), "{error}");
        assert!(RegistryNodes::new("--registry", "http://ok:1,nope", &Tls::Off).is_err());
    }
}
