//! The benchmark: the local server (embedded backend) through real HTTP on loopback, each
//! scenario next to its baseline on redb alone. Prints a table and writes it as JSON.
//!
//!     cargo run --release -p im-bench -- all
//!     cargo run --release -p im-bench -- send sync      # some scenarios
//!
//!     cargo build --release -p im-functions --bins && cargo run --release -p im-bench -- lambda
//!
//! The last prints the Lambda packages' zip sizes and each function's cold start (`lambda.rs`).
//! `IM_BENCH_SECS` (default 3) is how long each point runs; `IM_BENCH_OUT` (default
//! `target/im-bench.json`) where the JSON goes; `IM_BENCH_GROUPS` (default 10,100,1000,10000)
//! the group sizes; `IM_BENCH_PUSH_CLIENTS` (default 1000) and `IM_BENCH_PUSH_GROUPS` (default
//! 100,1000) the connected clients and group sizes of `push` (`push.rs`).

mod api;
mod baseline;
mod cost;
mod http;
mod lambda;
mod measure;
mod push;
mod scenarios;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use futures_util::FutureExt;
use im_shared::changes::ChangeFeed;
use im_shared::queue::Queue;
use im_shared::queue::names::{FANOUT, INDEX};
use im_storage::file::{COMMIT_THREAD, SYNC_THREAD};
use measure::round;
use scenarios::{Bench, Row};
use serde_json::json;
use std::time::{Duration, Instant};

const SCENARIOS: [&str; 7] = ["send", "sync", "history", "conversations", "search", "groups", "push"];

fn main() {
    im_server::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let chosen: Vec<&str> = if args.is_empty() || args.iter().any(|a| a == "all") {
        SCENARIOS.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    if let Some(bad) = chosen.iter().find(|c| !SCENARIOS.contains(c) && !matches!(**c, "lambda" | "cost")) {
        eprintln!("im-bench: unknown scenario {bad:?}; choose from all {}", SCENARIOS.join(" "));
        std::process::exit(2);
    }
    if std::env::var_os("IM_LOG").is_none() {
        // SAFETY: no other thread exists yet to read the environment.
        unsafe { std::env::set_var("IM_LOG", "warn") };
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let separate = match args.first().map(String::as_str) {
        Some("lambda") => Some(rt.block_on(lambda_figures())),
        Some("cost") => Some(rt.block_on(cost_model())),
        _ => None,
    };
    if let Some(outcome) = separate {
        if let Err(e) = outcome {
            eprintln!("im-bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = rt.block_on(run(&chosen)) {
        eprintln!("im-bench: {e}");
        std::process::exit(1);
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("{name}={v:?} is not valid")),
        Err(_) => Ok(default),
    }
}

/// A comma-separated list of sizes.
fn env_sizes(name: &str, default: &str) -> Result<Vec<usize>, String> {
    env_or(name, default.to_string())?
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("{name}: {s:?} is not a size")))
        .collect()
}

async fn run(chosen: &[&str]) -> Result<(), String> {
    let secs: f64 = env_or("IM_BENCH_SECS", 3.0)?;
    let out_path: String = env_or("IM_BENCH_OUT", "target/im-bench.json".to_string())?;
    let sizes = env_sizes("IM_BENCH_GROUPS", "10,100,1000,10000")?;
    let push_clients: usize = env_or("IM_BENCH_PUSH_CLIENTS", 1000)?;
    let push_groups = env_sizes("IM_BENCH_PUSH_GROUPS", "100,1000")?;
    let dir = std::env::temp_dir().join(format!("im-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    // The server as `cargo run` starts it, minus what would measure something else: no send
    // rate limit, room for the largest group, logs at warn.
    let mut cfg = im_server::config::Config::from_env()?;
    cfg.backend = im_server::config::Backend::Embedded;
    cfg.opensearch = None;
    cfg.data_dir = dir.join("server");
    cfg.addr = "127.0.0.1:0".into();
    cfg.service.send_rate_per_sec = 0.0;
    cfg.service.max_group_members = cfg.service.max_group_members.max(sizes.iter().copied().max().unwrap_or(0) as i64);
    cfg.service.max_friends_per_user = cfg.service.max_friends_per_user.max(1000);
    im_functions::env::init_logging(false);
    let server = im_server::server::start(cfg).await?;
    let (tables, queue) = match (&server.tables, &server.queue) {
        (Some(t), Some(q)) => (t.clone(), q.clone()),
        _ => return Err("the benchmark runs on the embedded backend".into()),
    };
    let feed = tables.clone();
    let quiesce = move || {
        let (queue, feed) = (queue.clone(), feed.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let mut busy = 0;
                for name in [FANOUT, INDEX] {
                    let d = queue.depth(name).await.map_err(|e| e.to_string())?;
                    busy += d.waiting + d.in_flight;
                }
                // Changes not yet indexed (the search index's feed).
                busy += feed.changes(None, 1).await.map_err(|e| e.to_string())?.len();
                if busy == 0 {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!("{busy} jobs still queued after 300 s"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        .boxed()
    };
    let direct = baseline::Direct::open(&dir.join("baseline.redb"))?;
    let mut bench = Bench::new(
        api::Api::new(server.addr),
        Duration::from_secs_f64(secs),
        direct,
        Box::new(move || tables.commit_stats()),
        Box::new(quiesce),
    );

    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    for &name in SCENARIOS.iter().filter(|s| chosen.contains(s)) {
        eprintln!("im-bench: {name}...");
        let t = Instant::now();
        let new = match name {
            "send" => bench.send().await?,
            "sync" => bench.sync().await?,
            "history" => bench.history().await?,
            "conversations" => bench.conversations().await?,
            "search" => bench.search().await?,
            "groups" => bench.groups(&sizes).await?,
            "push" => bench.push(push_clients, &push_groups).await?,
            _ => unreachable!("checked in main"),
        };
        eprintln!("im-bench: {name} took {:.0} s", t.elapsed().as_secs_f64());
        print_rows(&new, rows.is_empty());
        rows.extend(new);
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);

    let report = json!({
        "secs_per_point": secs,
        "total_secs": round(started.elapsed().as_secs_f64()),
        "results": rows.iter().map(|r| json!({
            "scenario": r.scenario,
            "clients": r.clients,
            "ours": r.ours.json(),
            "baseline": r.baseline.as_ref().map(|b| b.json()),
            "ratio": r.ratio().map(round),
            "writes_per_commit": r.commits.map(|c| round(c.writes)),
            "pages_per_sync": r.commits.map(|c| round(c.pages_per_sync)),
            "sync_ms": r.commits.map(|c| round(c.sync_ms)),
        })).collect::<Vec<_>>(),
    });
    write_report(&out_path, report)
}

/// `im-bench cost`: the AWS cost model, measured on the moto server at `IM_MOTO_URL`, or on
/// a fresh one per conversation size started here (`tests/moto_server.py`, with the python3
/// `tests/moto-python` names). `IM_BENCH_COST_SIZES` (default 2,100,1000) sets the sizes.
async fn cost_model() -> Result<(), String> {
    let out_path: String = env_or("IM_BENCH_OUT", "target/im-bench-cost.json".to_string())?;
    let sizes = env_sizes("IM_BENCH_COST_SIZES", "2,100,1000")?;
    let work = std::env::temp_dir().join(format!("im-bench-cost-{}", std::process::id()));
    let mut rows = Vec::new();
    cost::CostRun::header();
    for size in sizes {
        let dir = work.join(size.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (url, moto) = match std::env::var("IM_MOTO_URL").ok().filter(|u| !u.is_empty()) {
            Some(url) => (url, None),
            None => start_moto()?,
        };
        let outcome = async { cost::CostRun::connect(&url, &dir).await?.run(size).await }.await;
        if let Some(mut moto) = moto {
            let _ = moto.kill();
            let _ = moto.wait();
        }
        rows.extend(outcome?);
    }
    let _ = std::fs::remove_dir_all(&work);
    let report = json!({
        "prices_per_million": {"write_unit": cost::WRITE_UNIT, "read_unit": cost::READ_UNIT, "sqs_request": cost::SQS_REQUEST},
        "operations": rows,
    });
    write_report(&out_path, report)
}

fn start_moto() -> Result<(String, Option<std::process::Child>), String> {
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests");
    // A python3 with moto: python3's own, or the project's (installed into target/ once).
    let python = std::process::Command::new(format!("{tests}/moto-python"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{tests}/moto-python: {e}"))?;
    if !python.status.success() {
        return Err("no python3 with moto (see above), or set IM_MOTO_URL".into());
    }
    let python = String::from_utf8_lossy(&python.stdout).trim().to_string();
    let script = format!("{tests}/moto_server.py");
    let child = std::process::Command::new(&python)
        .arg(&script)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{python} {script}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("the moto server ({python}) did not start within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((format!("http://127.0.0.1:{port}"), Some(child)))
}

/// `im-bench lambda`: the packages' zips and the functions' cold starts, from the binaries next
/// to this one (or in `IM_LAMBDA_DIR`); all functions, or those named in `IM_LAMBDA_FUNCTIONS`.
async fn lambda_figures() -> Result<(), String> {
    let functions = lambda::chosen(&std::env::var("IM_LAMBDA_FUNCTIONS").unwrap_or_default())?;
    let dir = match std::env::var_os("IM_LAMBDA_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            std::env::current_exe().map_err(|e| e.to_string())?.parent().ok_or("no binary directory")?.to_path_buf()
        }
    };
    let out_path: String = env_or("IM_BENCH_OUT", "target/im-bench-lambda.json".to_string())?;
    let work = std::env::temp_dir().join(format!("im-bench-lambda-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let rows = lambda::run(&dir, &work, &functions).await;
    let _ = std::fs::remove_dir_all(&work);
    write_report(&out_path, rows?)
}

/// Writes a report as JSON, with the machine's cores and the commit it measured.
fn write_report(out_path: &str, mut report: serde_json::Value) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = git_commit();
    report["cores"] = cores.into();
    report["commit"] = commit.clone().into();
    if let Some(parent) = std::path::Path::new(out_path).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(out_path, serde_json::to_string_pretty(&report).expect("JSON"))
        .map_err(|e| format!("{out_path}: {e}"))?;
    println!("\n{cores} cores, commit {commit}; written to {out_path}");
    Ok(())
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The CPU per operation of the files' commit and sync threads together.
fn commit_cpu(m: &measure::Samples) -> Option<f64> {
    let (commit, sync) = (m.cpu_us_per_op(COMMIT_THREAD), m.cpu_us_per_op(SYNC_THREAD));
    commit.map(|c| c + sync.unwrap_or(0.0))
}

fn print_rows(rows: &[Row], header: bool) {
    if header {
        println!(
            "| scenario | clients | ops/s | p50 ms | p99 ms | baseline ops/s | baseline p50 ms | ratio | writes/commit | pages/sync | sync ms | commit CPU µs/op |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    }
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{}", round(v)));
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.clients,
            round(r.ours.per_sec()),
            round(r.ours.quantile_ms(0.5)),
            round(r.ours.quantile_ms(0.99)),
            f(r.baseline.as_ref().map(|b| b.per_sec())),
            f(r.baseline.as_ref().map(|b| b.quantile_ms(0.5))),
            f(r.ratio()),
            f(r.commits.map(|c| c.writes)),
            f(r.commits.map(|c| c.pages_per_sync)),
            f(r.commits.map(|c| c.sync_ms)),
            // Only where the row's own operations write: while others write (sync during sends),
            // the commit threads' CPU is theirs. The sync threads' counts too: what an fdatasync
            // costs the kernel is charged to whichever of the two threads ran it.
            f(r.commits.and(commit_cpu(&r.ours))),
        );
    }
}
