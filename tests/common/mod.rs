//! The black-box harness: the real server binary on a free loopback port, over real HTTP.
#![allow(dead_code)] // each test binary uses a different part of the harness

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One HTTP client for the whole test binary: building one loads TLS roots, which costs
/// milliseconds; a clone shares its connection pool.
pub fn client() -> Client {
    static CLIENT: std::sync::OnceLock<Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(Client::new).clone()
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    http: Client,
}

impl Server {
    /// A server on a fresh data directory.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// A server on a fresh data directory (and, with `IM_TEST_BACKEND=aws`, on fresh tables and
    /// queues), with these variables set.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let mut backend = backend_env();
        backend.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env = backend;
        let mut s = Server { child: None, base: String::new(), dir, env, http: client() };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_im-server"));
        cmd.env("IM_ADDR", "127.0.0.1:0")
            .env("IM_DATA_DIR", &self.dir)
            .env("IM_LOG", "warn,im_server=info")
            .env_remove("IM_JWT_SECRET")
            .env_remove("IM_DEV_MODE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // With SIGXFSZ ignored, a write past the file-size limit fails with EFBIG instead of
        // killing the process: how `limit_file_size` simulates a full disk.
        // SAFETY: signal() is async-signal-safe, as pre_exec requires.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start im-server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keep draining the log so the server never blocks on a full pipe; show it on failure.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let addr =
                        line[i + "listening on http://".len()..].split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                if line.contains("ERROR") || line.contains("panicked") {
                    eprintln!("[server] {line}");
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("server did not report its address");
        self.base = format!("http://{addr}");
        self.child = Some(child);
    }

    /// Runs an `im-server` command (`reindex`, `redrive`, …) on this server's data and backend.
    pub fn command(&self, command: &str) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_im-server"))
            .arg(command)
            .env("IM_DATA_DIR", &self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run im-server")
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().unwrap();
        }
    }

    /// A full disk, as far as the running server can tell: no file it writes may grow past
    /// `bytes` (the soft RLIMIT_FSIZE, set from outside with prlimit); `None` lifts the limit.
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        let pid = self.child.as_ref().expect("server running").id() as libc::pid_t;
        let limit = libc::rlimit { rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY), rlim_max: libc::RLIM_INFINITY };
        // SAFETY: plain syscall on valid pointers.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }

    /// Starts the server again on the same data directory (after `kill9`).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    /// A raw request: any body bytes and content type.
    pub async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn token(&self, user_id: &str) -> String {
        let (s, v) = self.call(Method::POST, "/v1/dev/token", None, Some(json!({"user_id": user_id}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// A user with a profile.
    pub async fn user(&self, user_id: &str) -> User {
        let token = self.token(user_id).await;
        let (s, v) =
            self.call(Method::PUT, "/v1/me", Some(&token), Some(json!({"name": format!("{user_id} name")}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        User { id: user_id.to_string(), token }
    }

    /// Makes two users friends; returns their conversation id.
    pub async fn befriend(&self, a: &User, b: &User) -> String {
        let (s, v) = a.post(self, "/v1/friend-requests", json!({"to": b.id})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = b.post(self, &format!("/v1/friend-requests/{}/accept", a.id), json!({})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["conversation_id"].as_str().unwrap().to_string()
    }

    /// A group owned by `owner` with `members` named at creation; returns its id.
    pub async fn group(&self, owner: &User, members: &[&User], policy: &str) -> String {
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        let (s, v) =
            owner.post(self, "/v1/groups", json!({"name": "Team", "join_policy": policy, "members": ids})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["group_id"].as_str().unwrap().to_string()
    }

    /// Waits until `check` holds, polling; panics after `secs`.
    pub async fn eventually<F, Fut>(&self, secs: u64, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub token: String,
}

impl User {
    pub async fn get(&self, s: &Server, path: &str) -> (StatusCode, Value) {
        s.call(Method::GET, path, Some(&self.token), None).await
    }
    pub async fn post(&self, s: &Server, path: &str, body: Value) -> (StatusCode, Value) {
        s.call(Method::POST, path, Some(&self.token), Some(body)).await
    }
    pub async fn put(&self, s: &Server, path: &str, body: Value) -> (StatusCode, Value) {
        s.call(Method::PUT, path, Some(&self.token), Some(body)).await
    }
    pub async fn patch(&self, s: &Server, path: &str, body: Value) -> (StatusCode, Value) {
        s.call(Method::PATCH, path, Some(&self.token), Some(body)).await
    }
    pub async fn delete(&self, s: &Server, path: &str) -> (StatusCode, Value) {
        s.call(Method::DELETE, path, Some(&self.token), None).await
    }

    pub async fn send(&self, s: &Server, conv: &str, client_msg_id: &str, text: &str) -> (StatusCode, Value) {
        self.post(
            s,
            &format!("/v1/conversations/{conv}/messages"),
            json!({"client_msg_id": client_msg_id, "type": "text", "text": text}),
        )
        .await
    }

    /// The whole inbox after `after`, following `next_after` while `has_more`.
    pub async fn sync_from(&self, s: &Server, after: i64) -> (Vec<Value>, bool) {
        let (mut items, mut after, mut reset) = (Vec::new(), after, false);
        loop {
            let (st, v) = self.get(s, &format!("/v1/sync?after={after}&limit=500")).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            reset |= v["reset"].as_bool().unwrap();
            items.extend(v["items"].as_array().unwrap().iter().cloned());
            after = v["next_after"].as_i64().unwrap();
            if !v["has_more"].as_bool().unwrap() {
                return (items, reset);
            }
        }
    }

    /// Every message of a conversation's history, oldest first, paging back from the newest.
    pub async fn history(&self, s: &Server, conv: &str) -> Vec<Value> {
        let (mut out, mut before) = (Vec::new(), None::<i64>);
        loop {
            let path = match before {
                Some(b) => format!("/v1/conversations/{conv}/messages?limit=100&before={b}"),
                None => format!("/v1/conversations/{conv}/messages?limit=100"),
            };
            let (st, v) = self.get(s, &path).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            out.extend(v["items"].as_array().unwrap().iter().cloned());
            match v["next_before"].as_i64() {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        out.reverse();
        out
    }

    /// Message entries of one conversation in the inbox, as (seq, text).
    pub async fn inbox_messages(&self, s: &Server, conv: &str) -> Vec<(i64, String)> {
        let (items, _) = self.sync_from(s, 0).await;
        items
            .iter()
            .filter(|e| e["kind"] == "message" && e["conversation_id"] == conv)
            .map(|e| (e["message"]["seq"].as_i64().unwrap(), e["message"]["text"].as_str().unwrap().to_string()))
            .collect()
    }

    pub async fn summary(&self, s: &Server, conv: &str) -> Value {
        let (st, v) = self.get(s, "/v1/conversations?limit=200").await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["items"].as_array().unwrap().iter().find(|c| c["conversation_id"] == conv).cloned().unwrap_or(Value::Null)
    }
}

/// An HS256 token for `sub` signed with `secret`, expiring `exp_offset` seconds from now.
pub fn token_signed_with(secret: &[u8], sub: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": now + exp_offset}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// True when the suites run on DynamoDB and SQS: in the `*_on_aws` test crates, or with
/// `IM_TEST_BACKEND=aws`. (moto is slow: some tests use less data there.)
pub fn on_aws() -> bool {
    env!("CARGO_CRATE_NAME").ends_with("_on_aws") || std::env::var("IM_TEST_BACKEND").as_deref() == Ok("aws")
}

/// Where the black-box suites run: on the embedded backend, or (see [`on_aws`]) on DynamoDB
/// and SQS (a moto server: `IM_MOTO_URL`, or one started for this process), each server
/// on tables and queues of its own that `im-server provision` creates.
pub fn backend_env() -> Vec<(String, String)> {
    if let Ok(other) = std::env::var("IM_TEST_BACKEND") {
        assert!(matches!(other.as_str(), "" | "aws" | "embedded"), "IM_TEST_BACKEND={other:?}: use embedded or aws");
    }
    match on_aws() {
        false => Vec::new(),
        true => {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let prefix = format!("t{:x}{n}-", nanos % (1 << 40));
            let env = aws_env(&prefix);
            let out = Command::new(env!("CARGO_BIN_EXE_im-server"))
                .arg("provision")
                .env("IM_DATA_DIR", tempfile::tempdir().unwrap().path())
                .envs(env.iter().map(|(k, v)| (k, v)))
                .output()
                .expect("im-server provision");
            assert!(out.status.success(), "provision: {}", String::from_utf8_lossy(&out.stderr));
            env
        }
    }
}

/// The variables that put a server on the moto server's DynamoDB and SQS, under `prefix`.
pub fn aws_env(prefix: &str) -> Vec<(String, String)> {
    [
        ("IM_BACKEND", "aws".to_string()),
        ("IM_TABLE_PREFIX", prefix.to_string()),
        ("IM_QUEUE_PREFIX", prefix.to_string()),
        ("AWS_ENDPOINT_URL", moto_url()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("IM_SWEEP_INTERVAL_MS", "1000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// An SDK configuration for the moto server, with its fake credentials.
pub async fn moto_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new("test", "test", None, None, "moto"))
        .load()
        .await
}

/// The moto server's URL: given, or started once for this test process, with the python3
/// `tests/moto-python` names (which installs moto into `target/moto-venv` when python3 has none).
pub fn moto_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = std::env::var("IM_MOTO_URL").ok().filter(|u| !u.is_empty()) {
            return url;
        }
        let dir = env!("CARGO_MANIFEST_DIR");
        let python = Command::new(format!("{dir}/tests/moto-python")).output().expect("tests/moto-python");
        assert!(
            python.status.success(),
            "no python3 with moto for the AWS suites (or set IM_MOTO_URL): {}",
            String::from_utf8_lossy(&python.stderr)
        );
        let python = String::from_utf8(python.stdout).expect("a path").trim().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // The shell watches this process and stops moto when it is gone.
        let script = format!(
            "'{python}' '{dir}/tests/moto_server.py' {port} >/dev/null 2>&1 & m=$!; \
             while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $m",
            pid = std::process::id(),
        );
        // Not waited for: the shell ends by itself once this process is gone.
        #[allow(clippy::zombie_processes)]
        std::process::Command::new("sh").arg("-c").arg(script).spawn().expect("sh");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the moto server ({python}) did not start within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        format!("http://127.0.0.1:{port}")
    })
    .clone()
}
