//! Lambda packaging figures: the deployment packages (each Lambda binary, `im-http` and
//! `im-events`, as `bootstrap`, zipped as `sam build` packages it; every function ships one of
//! them) and each function's cold start, measured as the time from process start until the binary asks the Lambda
//! runtime API for its first event. A small stand-in for the runtime API listens on loopback;
//! the function is configured as the template configures it (its `IM_FUNCTION` among the
//! rest), with fake credentials. A cold start makes no network call (see
//! `LambdaEnv::service`) but the indexer's, which creates its search indexes: the stand-in
//! answers for OpenSearch too.

use crate::measure::round;
use im_functions::function::{self, Binary};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Cold starts measured per function; the median and the slowest are reported.
const STARTS: usize = 7;
const NEXT_EVENT: &str = "GET /2018-06-01/runtime/invocation/next";
/// The performance issue's budget for a deployment package. A zip at or over it fails the run
/// (CI builds one API function in release to check it). The cold-start budget, 30 ms, is only
/// reported: a time on a shared machine is a figure, not a pass or fail.
pub const ZIP_BUDGET_BYTES: u64 = 4_000_000;

/// The functions `names` picks (a comma-separated list; all of them when empty), in the
/// template's order; an unknown name is an error.
pub fn chosen(names: &str) -> Result<Vec<&'static str>, String> {
    let all: Vec<&'static str> = function::all().map(|f| f.name).collect();
    let wanted: Vec<&str> = names.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
    if let Some(unknown) = wanted.iter().find(|n| !all.contains(n)) {
        return Err(format!("IM_LAMBDA_FUNCTIONS: no function named {unknown:?} (the functions: {})", all.join(", ")));
    }
    Ok(all.into_iter().filter(|n| wanted.is_empty() || wanted.contains(n)).collect())
}

/// The packages' sizes, then each function's cold starts; fails when a zip is over budget.
pub async fn run(dir: &Path, work: &Path, functions: &[&str]) -> Result<Value, String> {
    let mut packages = Vec::new();
    let mut over = Vec::new();
    println!("| binary | functions | binary MB | zip MB | zip bytes |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for binary in Binary::ALL {
        let name = binary.name();
        let path = dir.join(name);
        if !path.exists() {
            return Err(format!(
                "{} is missing: build the Lambda binaries first (cargo build --release -p im-functions --bins)",
                path.display()
            ));
        }
        let zip = zip_size(&path, work)?;
        let size = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
        let count = function::all().filter(|f| f.role.binary() == binary).count();
        let mb = |b: u64| round(b as f64 / 1e6);
        println!("| {name} | {count} | {} | {} | {zip} |", mb(size), mb(zip));
        if zip >= ZIP_BUDGET_BYTES {
            over.push(over_budget(name, zip));
        }
        packages.push(json!({"binary": name, "functions": count, "binary_bytes": size, "zip_bytes": zip}));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let api = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    let mut rows = Vec::new();
    println!("\n| function | binary | cold start p50 ms | cold start max ms |");
    println!("| --- | --- | ---: | ---: |");
    for &name in functions {
        let binary = function::find(name).ok_or_else(|| format!("no function {name}"))?.role.binary().name();
        let mut starts = Vec::new();
        for _ in 0..STARTS {
            starts.push(cold_start(&dir.join(binary), name, &listener, &api).await?);
        }
        starts.sort_unstable();
        let (p50, max) = (ms(starts[STARTS / 2]), ms(starts[STARTS - 1]));
        println!("| {name} | {binary} | {p50} | {max} |");
        rows.push(json!({"function": name, "binary": binary, "cold_start_p50_ms": p50, "cold_start_max_ms": max}));
    }
    if !over.is_empty() {
        return Err(over.join("; "));
    }
    let largest = packages.iter().filter_map(|p| p["zip_bytes"].as_u64()).max().unwrap_or(0);
    println!("\nevery zip is under the budget: the largest is {largest} bytes, {} under", ZIP_BUDGET_BYTES - largest);
    Ok(json!({"packages": packages, "functions": rows}))
}

/// Why a package of `zip` bytes fails the budget.
fn over_budget(binary: &str, zip: u64) -> String {
    format!("the {binary} zip is {zip} bytes: at or over the {ZIP_BUDGET_BYTES}-byte budget")
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e3)
}

/// The size of the deployment package: the binary as `bootstrap`, zipped at the highest level.
fn zip_size(binary: &Path, work: &Path) -> Result<u64, String> {
    let staging = work.join("package");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    std::fs::copy(binary, staging.join("bootstrap")).map_err(|e| e.to_string())?;
    let zip: PathBuf = staging.join("function.zip");
    let status = Command::new("zip")
        .args(["-q", "-9", "-j"])
        .arg(&zip)
        .arg(staging.join("bootstrap"))
        .status()
        .map_err(|e| format!("zip (install it: apt-get install zip): {e}"))?;
    if !status.success() {
        return Err(format!("zip failed for {}", binary.display()));
    }
    Ok(std::fs::metadata(&zip).map_err(|e| e.to_string())?.len())
}

/// One cold start: from spawning the process to its first request for an event.
async fn cold_start(binary: &Path, name: &str, listener: &TcpListener, api: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", api),
            ("AWS_LAMBDA_FUNCTION_NAME", name),
            (im_functions::lambda::FUNCTION_VAR, name),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "bench"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "bench"),
            ("AWS_SECRET_ACCESS_KEY", "bench"),
            ("AWS_SESSION_TOKEN", "bench"),
            ("IM_TABLE_PREFIX", "bench-"),
            ("IM_QUEUE_PREFIX", "bench-"),
            ("IM_OPENSEARCH_URL", &format!("http://{api}")),
            ("IM_WS_ENDPOINT", &format!("http://{api}/live")),
            // ws-connect's token check (its keys are fetched on the first connection, not here).
            ("IM_JWT_ISSUER", "https://issuer.example"),
            ("IM_JWT_AUDIENCE", "bench"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{name}: {e}"))?;
    let asked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (mut conn, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            if head.starts_with(NEXT_EVENT.as_bytes()) {
                return Ok::<_, String>(started.elapsed());
            }
            // Anything else is the indexer creating its search indexes at cold start: the
            // stand-in answers for OpenSearch too, as an existing index would.
            let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
            conn.write_all(ok).await.map_err(|e| e.to_string())?;
        }
    })
    .await;
    let _ = child.kill();
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    match asked {
        Ok(took) => took,
        Err(_) => Err(format!(
            "{name} did not ask for an event within 10 s; its log:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_names_picks_those_functions_and_an_unknown_name_is_refused() {
        let all = chosen("").unwrap();
        assert!(all.len() > 30 && all.contains(&"health") && all.contains(&"fanout-worker"), "{all:?}");
        assert_eq!(chosen(" fanout-worker, health ").unwrap(), ["health", "fanout-worker"]);
        let err = chosen("health,helth").unwrap_err();
        assert!(err.contains("\"helth\""), "{err}");
    }

    #[test]
    fn a_zip_of_the_budget_or_more_is_refused_with_its_size() {
        assert!(over_budget("im-http", ZIP_BUDGET_BYTES).contains("im-http zip is 4000000 bytes"));
    }
}
