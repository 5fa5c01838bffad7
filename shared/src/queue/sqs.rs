//! The SQS adapter of the Queue port (aws-sdk-sqs).
//!
//! Queues are named `<prefix><logical name>`; each queue with a dead letter has a redrive
//! policy (`maxReceiveCount`), so SQS itself moves a message that keeps failing. SQS counts
//! time in whole seconds: visibility timeouts and delays are rounded up. A receipt made stale
//! by a later receive never fails an acknowledgement (SQS may or may not delete with it).
//! Redrive moves dead letters back by receive, send and delete, which any SQS-compatible
//! server supports.

use super::*;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry};
use std::collections::HashMap;
use tokio::sync::RwLock;

pub struct SqsQueue {
    client: Client,
    prefix: String,
    defs: HashMap<String, QueueDef>,
    urls: RwLock<HashMap<String, String>>,
}

fn map_err<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(e: SdkError<E, R>) -> QueueError {
    match &e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or_default();
            let msg = format!("sqs {code}: {}", s.err().message().unwrap_or_default());
            if code.contains("Throttl")
                || code == "RequestThrottled"
                || code.contains("InternalError")
                || code == "ServiceUnavailable"
            {
                QueueError::Unavailable(msg)
            } else {
                QueueError::Internal(msg)
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            QueueError::Unavailable(format!("sqs unreachable: {e:?}"))
        }
        _ => QueueError::Internal(format!("sqs: {e:?}")),
    }
}

fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// Seconds, rounded up, within SQS's limits.
fn secs(d: Duration, max: u64) -> i32 {
    d.as_millis().div_ceil(1000).min(max as u128) as i32
}

impl SqsQueue {
    pub fn new(client: Client, prefix: impl Into<String>, defs: Vec<QueueDef>) -> Self {
        SqsQueue {
            client,
            prefix: prefix.into(),
            defs: defs.into_iter().map(|d| (d.name.clone(), d)).collect(),
            urls: RwLock::new(HashMap::new()),
        }
    }

    fn physical(&self, queue: &str) -> String {
        format!("{}{queue}", self.prefix)
    }

    async fn url(&self, queue: &str) -> Result<String, QueueError> {
        if !self.defs.contains_key(queue) {
            return Err(QueueError::Internal(format!("unknown queue {queue}")));
        }
        if let Some(u) = self.urls.read().await.get(queue) {
            return Ok(u.clone());
        }
        let out = self.client.get_queue_url().queue_name(self.physical(queue)).send().await.map_err(map_err)?;
        let url = out.queue_url.ok_or_else(|| QueueError::Internal("sqs: no queue url".into()))?;
        self.urls.write().await.insert(queue.to_string(), url.clone());
        Ok(url)
    }

    /// Creates the queues (dead-letter queues first, then the queues that redrive into them).
    pub async fn create_queues(&self) -> Result<(), QueueError> {
        let mut defs: Vec<&QueueDef> = self.defs.values().collect();
        defs.sort_by_key(|d| d.dead_letter.is_some());
        for d in defs {
            let mut req = self.client.create_queue().queue_name(self.physical(&d.name));
            if let Some(dlq) = &d.dead_letter {
                let dlq_url = self.url(dlq).await?;
                let attrs = self
                    .client
                    .get_queue_attributes()
                    .queue_url(dlq_url)
                    .attribute_names(QueueAttributeName::QueueArn)
                    .send()
                    .await
                    .map_err(map_err)?;
                let arn = attrs
                    .attributes
                    .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                    .ok_or_else(|| QueueError::Internal("sqs: no queue arn".into()))?;
                let policy =
                    serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": d.max_receives.to_string()})
                        .to_string();
                req = req.attributes(QueueAttributeName::RedrivePolicy, policy);
            }
            let out = req.send().await.map_err(map_err)?;
            if let Some(url) = out.queue_url {
                self.urls.write().await.insert(d.name.clone(), url);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(&self, queue: &str, bodies: Vec<String>) -> Result<(), QueueError> {
        let url = self.url(queue).await?;
        for chunk in bodies.chunks(10) {
            let mut pending: Vec<(usize, &String)> = chunk.iter().enumerate().collect();
            for attempt in 0..6u32 {
                let entries = pending
                    .iter()
                    .map(|(i, b)| {
                        SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(b.as_str()).build()
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| QueueError::Internal(format!("sqs: {e}")))?;
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(map_err)?;
                let failed: Vec<String> = out.failed.iter().map(|f| f.id.clone()).collect();
                if failed.is_empty() {
                    break;
                }
                if attempt == 5 {
                    return Err(QueueError::Unavailable(format!(
                        "sqs: {} message(s) of a batch kept failing",
                        failed.len()
                    )));
                }
                pending.retain(|(i, _)| failed.contains(&i.to_string()));
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
        Ok(())
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let url = self.url(queue).await?;
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(secs(visibility, 43_200))
            .wait_time_seconds(secs(wait, 20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(map_err)?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| Delivery {
                receive_count: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                id: m.message_id.unwrap_or_default(),
                receipt: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
            })
            .collect())
    }

    async fn ack(&self, queue: &str, receipt: &str) -> Result<(), QueueError> {
        let url = self.url(queue).await?;
        match self.client.delete_message().queue_url(url).receipt_handle(receipt).send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(code(&e), Some("ReceiptHandleIsInvalid" | "InvalidParameterValue")) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn retry_after(&self, queue: &str, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        let url = self.url(queue).await?;
        match self
            .client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(delay, 43_200))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Stale or no longer in flight: it becomes visible on its own.
            Err(e)
                if matches!(
                    code(&e),
                    Some("ReceiptHandleIsInvalid" | "MessageNotInflight" | "InvalidParameterValue")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(map_err(e)),
        }
    }

    async fn redrive(&self, queue: &str) -> Result<usize, QueueError> {
        let dlq = self
            .defs
            .get(queue)
            .and_then(|d| d.dead_letter.clone())
            .ok_or_else(|| QueueError::Internal(format!("queue {queue} has no dead-letter queue")))?;
        let mut moved = 0;
        loop {
            let batch = self.receive(&dlq, 10, Duration::from_secs(60), Duration::ZERO).await?;
            if batch.is_empty() {
                break;
            }
            // Sent before deleted: a crash in between duplicates a job, never loses one.
            self.send_batch(queue, batch.iter().map(|d| d.body.clone()).collect()).await?;
            for d in &batch {
                self.ack(&dlq, &d.receipt).await?;
            }
            moved += batch.len();
        }
        tracing::info!(queue, moved, "redrove dead letters");
        Ok(moved)
    }

    async fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        let url = self.url(queue).await?;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(map_err)?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |n: QueueAttributeName| attrs.get(&n).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        Ok(Depth {
            waiting: get(QueueAttributeName::ApproximateNumberOfMessages)
                + get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}
