//! The local server: every route of the API on one port, on the embedded backend (redb tables
//! and queue under `IM_DATA_DIR`), with the fan-out workers and sweepers running in-process.
//!
//! `cargo run` is all it takes; see README.md for the configuration variables.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use im_server::config::{self, Config};
use im_server::server::{provision, queue_stats, redrive, reindex, serve};

const USAGE: &str = "usage: im-server [serve | provision | redrive | queue-stats | reindex | template | openapi]
  serve        run the server (the default)
  provision    create the tables, queues and search indexes (IM_BACKEND=aws, OpenSearch)
  redrive      move dead-lettered jobs back to their queues (server stopped)
  queue-stats  print the job queues' and their dead-letter queues' depth (server stopped)
  reindex      rebuild the search indexes from the tables (server stopped)
  template     print the SAM template (template.yaml) for deploying to AWS
  openapi      print the OpenAPI document (openapi.json; also served at /v1/openapi.json)
configuration: environment variables, see README.md";

fn main() {
    im_server::alloc::keep_freed_memory();
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    // Generated documents, printed without any configuration.
    match command.as_str() {
        "template" => return print!("{}", im_functions::template::render()),
        "openapi" => return print!("{}", im_functions::openapi::render()),
        _ => {}
    }
    if !matches!(command.as_str(), "serve" | "provision" | "redrive" | "queue-stats" | "reindex") {
        let help = matches!(command.as_str(), "-h" | "--help" | "help");
        if help {
            println!("{USAGE}")
        } else {
            eprintln!("im-server: unknown command {command:?}\n{USAGE}")
        }
        std::process::exit(if help { 0 } else { 2 });
    }
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("im-server: configuration error: {e}");
            std::process::exit(2);
        }
    };
    config::init_logging(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = match command.as_str() {
        "redrive" => rt.block_on(redrive(cfg)),
        "queue-stats" => rt.block_on(queue_stats(cfg)),
        "reindex" => rt.block_on(reindex(cfg)),
        "provision" => rt.block_on(provision(cfg)),
        _ => rt.block_on(serve(cfg)),
    };
    if let Err(e) = outcome {
        tracing::error!("im-server {command}: {e}");
        std::process::exit(1);
    }
}
