//! The load generator's HTTP/1.1 client: kept-alive connections to the one server, each request
//! written with one write and its answer parsed in place (`httparse`).
//!
//! Why not reqwest: the clients share this machine's two cores with the server they measure,
//! and every cycle they spend is one the server loses. Under `perf` at 64 clients, reqwest and
//! its hyper connection tasks were two fifths of the tokio workers' samples (URL parsing,
//! header maps, a pool with its own task and channels per request). Load generators such as
//! wrk are lean for the same reason. What this client does is what the server sees from any
//! client: a request on a kept-alive connection, and its whole answer read back.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most a response's head may take (the server's are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;
/// The most headers a response may have.
const MAX_HEADERS: usize = 32;

pub struct Http {
    addr: SocketAddr,
    /// Connections whose last exchange ended cleanly, ready for the next request.
    idle: Mutex<Vec<Conn>>,
}

/// A response: its status and its whole body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// How an exchange failed: before any byte of the answer came back (on a kept-alive
/// connection, the server may have closed it while it was idle), or later.
enum Failure {
    Unanswered(io::Error),
    Broken(io::Error),
}

struct Conn {
    stream: TcpStream,
    /// Bytes read past the end of the last response (none, as requests are not pipelined).
    buf: Vec<u8>,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Self {
        Http { addr, idle: Mutex::new(Vec::new()) }
    }

    /// One request and its answer. A kept-alive connection that turns out closed before it
    /// answered is dropped and the request sent once more on a new one, as browsers and
    /// reqwest do; every request the benchmark sends is safe to repeat (a send carries its
    /// `client_msg_id`).
    pub async fn request(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> io::Result<Response> {
        let mut req = Vec::with_capacity(160 + path.len() + body.len());
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(path.as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\nhost: bench\r\n");
        if let Some(t) = token {
            req.extend_from_slice(b"authorization: Bearer ");
            req.extend_from_slice(t.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() {
            req.extend_from_slice(b"content-type: application/json\r\n");
        }
        req.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        req.extend_from_slice(body);

        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut conn) = pooled {
            match conn.exchange(&req).await {
                Ok((resp, reusable)) => return Ok(self.done(conn, resp, reusable)),
                Err(Failure::Unanswered(_)) => {} // closed while idle: a new connection below
                Err(Failure::Broken(e)) => return Err(e),
            }
        }
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn { stream, buf: Vec::with_capacity(4096) };
        match conn.exchange(&req).await {
            Ok((resp, reusable)) => Ok(self.done(conn, resp, reusable)),
            Err(Failure::Unanswered(e) | Failure::Broken(e)) => Err(e),
        }
    }

    fn done(&self, conn: Conn, resp: Response, reusable: bool) -> Response {
        if reusable {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
        resp
    }
}

/// What a response's head says about the response.
struct Head {
    status: u16,
    /// The head's length in bytes.
    len: usize,
    length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// The head at the start of `buf`, once all of it is there.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).map_err(|e| Failure::Broken(invalid(e)))? {
        httparse::Status::Partial if buf.len() > MAX_HEAD => {
            return Err(Failure::Broken(invalid("response head too long")));
        }
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let mut head = Head { status: resp.code.unwrap_or(0), len, length: None, chunked: false, close: false };
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
            head.length = Some(v.ok_or_else(|| Failure::Broken(invalid("bad content-length")))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some(head))
}

impl Conn {
    /// Writes `req` and reads its response; whether the connection may carry another.
    async fn exchange(&mut self, req: &[u8]) -> Result<(Response, bool), Failure> {
        self.stream.write_all(req).await.map_err(Failure::Unanswered)?;
        self.buf.clear();
        let mut interim = false;
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                // An interim answer (1xx) may come before the final one, asked for or not
                // (RFC 9110, 15.2): taken for the answer, it would leave the real one to be
                // read as the next request's.
                if (100..200).contains(&head.status) {
                    self.buf.drain(..head.len);
                    interim = true;
                    continue;
                }
                break head;
            }
            // Nothing of the answer yet: the server may have closed the connection while idle.
            let unanswered = self.buf.is_empty() && !interim;
            self.more("connection closed before the answer").await.map_err(|f| match f {
                Failure::Broken(e) if unanswered => Failure::Unanswered(e),
                f => f,
            })?;
        };
        self.buf.drain(..head.len);
        // These carry no body, whatever their headers say; reading one to the end of the
        // connection would wait for a close that a kept-alive connection never makes.
        let bodiless = matches!(head.status, 204 | 304);
        let body = if bodiless {
            Vec::new()
        } else if head.chunked {
            self.chunked_body().await?
        } else if let Some(n) = head.length {
            self.exact(n).await?
        } else {
            // No length: the body runs to the end of the connection.
            while self.fill().await.map_err(Failure::Broken)? > 0 {}
            std::mem::take(&mut self.buf)
        };
        let reusable = !head.close && (bodiless || head.chunked || head.length.is_some());
        Ok((Response { status: head.status, body }, reusable))
    }

    /// Reads more into the buffer; how many bytes came (0 at the end of the connection).
    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(4096);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Reads more into the buffer, where the connection must not end: `closed` says where.
    async fn more(&mut self, closed: &str) -> Result<(), Failure> {
        match self.fill().await {
            Ok(0) => {
                Err(Failure::Broken(io::Error::new(io::ErrorKind::UnexpectedEof, format!("HTTP response: {closed}"))))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(Failure::Broken(e)),
        }
    }

    /// The next `n` bytes after what the buffer's start holds.
    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, Failure> {
        while self.buf.len() < n {
            self.more("connection closed inside the body").await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// A chunked body: each chunk's size line, its bytes and CRLF, up to the empty chunk.
    async fn chunked_body(&mut self) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        loop {
            let (start, size) = loop {
                match httparse::parse_chunk_size(&self.buf).map_err(|_| Failure::Broken(invalid("bad chunk size")))? {
                    httparse::Status::Complete((start, size)) => break (start, size as usize),
                    httparse::Status::Partial => self.more("connection closed inside a chunk").await?,
                }
            };
            self.buf.drain(..start);
            let chunk = self.exact(size + 2).await?; // the chunk and its CRLF
            if size == 0 {
                return Ok(body); // (trailers are not used by the server)
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP response: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each connection's requests with the given raw responses, in turn.
    async fn serve(answers: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            for a in answers {
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(a).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_lengths_chunks_and_reuses_the_connection() {
        let addr = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let http = Http::new(addr);
        let a = http.request("GET", "/a", Some("t"), b"").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"hello"[..]));
        // The second answer can only come on the same connection: the server accepts once.
        let b = http.request("POST", "/b", None, b"{}").await.unwrap();
        assert_eq!((b.status, b.body.as_slice()), (404, &b"abcde"[..]));
        // No length and no body: answered at once, and the connection carries on.
        let c = tokio::time::timeout(std::time::Duration::from_secs(10), http.request("PUT", "/c", None, b"{}"))
            .await
            .expect("a 204 was read as if its body ran to the end of the connection")
            .unwrap();
        assert_eq!((c.status, c.body.len()), (204, 0));
        // An interim answer before the final one is skipped.
        let d = http.request("GET", "/d", None, b"").await.unwrap();
        assert_eq!((d.status, d.body.as_slice()), (200, &b"ok"[..]));
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // The first connection answers once and closes; the second answers again.
            for body in [&b"one"[..], b"two"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0; 4096];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n").await.unwrap();
                s.write_all(body).await.unwrap();
            }
        });
        let http = Http::new(addr);
        assert_eq!(http.request("GET", "/", None, b"").await.unwrap().body, b"one");
        assert_eq!(http.request("GET", "/", None, b"").await.unwrap().body, b"two");
    }
}
