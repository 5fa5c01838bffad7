//! A route of the WebSocket API (see `im_functions::ws`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    im_functions::lambda::ws_function(env!("CARGO_BIN_NAME")).await
}
