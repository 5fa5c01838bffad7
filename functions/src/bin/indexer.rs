//! The search indexer, on the store and meta tables' DynamoDB streams.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    im_functions::lambda::indexer_function().await
}
