//! The group fan-out worker, on the fan-out SQS queue.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    im_functions::lambda::fanout_function().await
}
