//! The Lambda binary of every function behind the HTTP API: the API operation its
//! `IM_FUNCTION` names (`im_functions::lambda::http_main`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    im_functions::lambda::http_main().await
}
