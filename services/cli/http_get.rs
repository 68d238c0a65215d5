//! A minimal keep-alive HTTP/1.1 client over one TCP connection (GET, and
//! POST of a JSON body), for the command line's own checks of the portal
//! (`gradebook up`'s readiness, the benchmark's load): small and cheap, so
//! that a load generator on the same machine takes little of it.

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection that sends requests one after another.
pub struct HttpConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Where the last response's body is in `buffer`.
    body: std::ops::Range<usize>,
    /// The `Authorization` header line sent with every request, if any.
    authorization: String,
}

impl HttpConnection {
    /// Connects to `address` (`host:port`).
    pub async fn open(address: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConnection {
            stream,
            buffer: Vec::with_capacity(64 * 1024),
            body: 0..0,
            authorization: String::new(),
        })
    }

    /// Sends `token` as `Authorization: Bearer` with every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.authorization = format!("Authorization: Bearer {token}\r\n");
        self
    }

    /// GETs `path`; returns the status code and body length.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, usize)> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: bench\r\n{}\r\n",
            self.authorization
        );
        self.exchange(request.as_bytes()).await
    }

    /// POSTs `body` as JSON to `path` with an `Idempotency-Key`; returns the
    /// status code and body length.
    pub async fn post_json(
        &mut self,
        path: &str,
        idempotency_key: &str,
        body: &str,
    ) -> anyhow::Result<(u16, usize)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
             Idempotency-Key: {idempotency_key}\r\n{}Content-Length: {}\r\n\r\n{body}",
            self.authorization,
            body.len()
        );
        self.exchange(request.as_bytes()).await
    }

    /// The body of the last response.
    pub fn body(&self) -> &[u8] {
        self.buffer.get(self.body.clone()).unwrap_or_default()
    }

    /// Sends one request and reads its response.
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(u16, usize)> {
        self.stream.write_all(request).await?;
        self.buffer.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_ascii_lowercase();
                let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .context("no content-length")?;
                while self.buffer.len() < end + 4 + length {
                    let n = self.stream.read(&mut chunk).await?;
                    if n == 0 {
                        bail!("connection closed");
                    }
                    self.buffer.extend_from_slice(&chunk[..n]);
                }
                self.body = end + 4..end + 4 + length;
                return Ok((status, length));
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
