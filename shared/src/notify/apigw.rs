//! Notices on AWS: each recipient's open connections (the connections table), posted to through
//! API Gateway's Management API. A connection that answers 410 Gone is deleted: it was closed
//! without `$disconnect` running. Every failure is logged and swallowed (see the port).

use super::connections::Connections;
use super::{Notice, Notifier};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Recipients looked up and posted to at once.
const CONCURRENCY: usize = 16;

pub struct ApiGatewayNotifier {
    connections: Connections,
    client: aws_sdk_apigatewaymanagement::Client,
    sent: AtomicU64,
    gone: AtomicU64,
    failed: AtomicU64,
}

/// Posts so far, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostStats {
    pub sent: u64,
    /// Answered 410: the connection was forgotten.
    pub gone: u64,
    pub failed: u64,
}

impl ApiGatewayNotifier {
    /// `client` is configured with the WebSocket API's stage URL as its endpoint
    /// (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`).
    pub fn new(connections: Connections, client: aws_sdk_apigatewaymanagement::Client) -> Self {
        ApiGatewayNotifier { connections, client, sent: 0.into(), gone: 0.into(), failed: 0.into() }
    }

    /// A Management API client for the stage at `endpoint`, impatient on purpose: a notice is a
    /// hint, and a delivery waits for its notices, so an API Gateway that does not answer
    /// within a second (after one retry) costs a delivery that much and no more.
    pub fn client(sdk: &aws_config::SdkConfig, endpoint: &str) -> aws_sdk_apigatewaymanagement::Client {
        use aws_sdk_apigatewaymanagement::config::{Builder, retry::RetryConfig, timeout::TimeoutConfig};
        let config = Builder::from(sdk)
            .endpoint_url(endpoint)
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_millis(500))
                    .operation_timeout(std::time::Duration::from_secs(1))
                    .build(),
            )
            .build();
        aws_sdk_apigatewaymanagement::Client::from_conf(config)
    }

    pub fn stats(&self) -> PostStats {
        PostStats {
            sent: self.sent.load(Ordering::Relaxed),
            gone: self.gone.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Posts `frame` to one connection; `false` when it is gone (and has been forgotten).
    async fn post(&self, user: &str, connection_id: &str, frame: &str) -> bool {
        let sent = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame.as_bytes()))
            .send()
            .await;
        match sent {
            Ok(_) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_gone_exception()) => {
                self.gone.fetch_add(1, Ordering::Relaxed);
                tracing::info!(user, connection_id, "a WebSocket connection is gone; forgetting it");
                if let Err(e) = self.connections.forget(user, connection_id).await {
                    tracing::warn!(user, connection_id, error = %e, "could not forget a gone connection");
                }
                false
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let e = aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e);
                tracing::warn!(user, connection_id, error = %e, "a notice was not delivered");
                true
            }
        }
    }

    /// Every notice of one user to each of their connections, in order.
    async fn notify_user(&self, user: &str, notices: &[Notice]) {
        let ids = match self.connections.of_user(user).await {
            Ok(ids) => ids,
            Err(e) => return tracing::warn!(user, error = %e, "could not read a user's connections"),
        };
        for id in ids {
            for notice in notices {
                if !self.post(user, &id, &notice.to_frame()).await {
                    break;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Notifier for ApiGatewayNotifier {
    async fn notify(&self, notices: Vec<Notice>) {
        // Grouped by user, in their order: one lookup of a user's connections per batch.
        let mut by_user: Vec<(String, Vec<Notice>)> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for n in notices {
            let i = *index.entry(n.user_id.clone()).or_insert_with(|| {
                by_user.push((n.user_id.clone(), Vec::new()));
                by_user.len() - 1
            });
            by_user[i].1.push(n);
        }
        futures_util::stream::iter(by_user)
            .for_each_concurrent(CONCURRENCY, |(user, notices)| async move { self.notify_user(&user, &notices).await })
            .await;
    }
}
