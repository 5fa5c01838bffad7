//! The scheduled outbox sweep: re-enqueues fan-outs whose job was lost.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    im_functions::lambda::sweeper_function().await
}
