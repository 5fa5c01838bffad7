//! The Lambda binary of the workers and the WebSocket routes: the function its `IM_FUNCTION`
//! names (`im_functions::lambda::events_main`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    im_functions::lambda::events_main().await
}
