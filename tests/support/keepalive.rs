//! A lean HTTP/1.1 keep-alive client for load generators.
//!
//! One connection, driven by the task that owns it: no pool, no spawned
//! connection task, no channel between them, the way `redis-benchmark`
//! drives Redis. Benchmarks that compare Switchboard with a raw Redis rate
//! use it so that the load generator's own cost stays as small on both
//! sides of the ratio. Responses are parsed with `httparse` (the parser
//! under hyper); only `Content-Length` bodies are read, which is what the
//! daemon sends for JSON answers.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted (headers and body).
const MAX_RESPONSE: usize = 1 << 20;

/// One keep-alive connection.
pub struct KeepAlive {
    stream: TcpStream,
    host: String,
    request: Vec<u8>,
    buf: Vec<u8>,
}

/// A response: its status and body.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl KeepAlive {
    /// Connects to `base` (`http://host:port`).
    pub async fn connect(base: &str) -> Result<KeepAlive, String> {
        let host = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("not an http:// base: {base}"))?
            .trim_end_matches('/')
            .to_owned();
        let stream = TcpStream::connect(&host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(KeepAlive {
            stream,
            host,
            request: Vec::with_capacity(1024),
            buf: Vec::with_capacity(4096),
        })
    }

    /// POSTs `body` as JSON to `path` with a bearer `token`, and reads the
    /// whole answer.
    pub async fn post_json(
        &mut self,
        path: &str,
        token: &str,
        body: &[u8],
    ) -> Result<RawReply, String> {
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                self.host,
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body);
        self.stream
            .write_all(&self.request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> Result<RawReply, String> {
        loop {
            if let Some((head, status, length)) = parse_head(&self.buf)?
                && self.buf.len() >= head + length
            {
                let body = self.buf[head..head + length].to_vec();
                self.buf.drain(..head + length);
                return Ok(RawReply { status, body });
            }
            if self.buf.len() > MAX_RESPONSE {
                return Err("response too large".into());
            }
            let read = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if read == 0 {
                return Err("connection closed by the server".into());
            }
        }
    }
}

/// The head's length, status and `Content-Length` once the head is whole.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, u16, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(head)) => {
            let status = response.code.unwrap_or(0);
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse().ok())
                .ok_or("a response without Content-Length")?;
            Ok(Some((head, status, length)))
        }
        Err(e) => Err(format!("bad response: {e}")),
    }
}
