//! The connections table: which API Gateway WebSocket connections each user has open. Written
//! by `$connect` and `$disconnect`, read by the notifier, pruned when API Gateway answers that a
//! connection is gone.

use crate::error::{Error, Result};
use crate::schema::{CONNECTIONS, CONNECTIONS_BY_ID};
use crate::service::{from_item, to_item};
use crate::tables::{Cond, Key, Query, Tables};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// API Gateway closes every WebSocket connection after two hours: no row needs to live longer.
pub const CONNECTION_TTL_SECS: i64 = 2 * 60 * 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub user_id: String,
    pub connection_id: String,
    /// Epoch milliseconds.
    pub connected_at: i64,
    /// Epoch seconds, the TTL attribute.
    pub expires_at: i64,
}

/// Why a connection was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("at most {0} connections per user")]
    TooMany(usize),
    #[error(transparent)]
    Store(#[from] Error),
}

#[derive(Clone)]
pub struct Connections {
    tables: Arc<dyn Tables>,
}

impl Connections {
    pub fn new(tables: Arc<dyn Tables>) -> Self {
        Connections { tables }
    }

    /// `$connect`: records `connection_id` as `user`'s, unless they have `max_per_user` open.
    /// (The count is read, not locked: two devices connecting at the same instant may both get
    /// in. The limit is against runaway clients, not an exact quota.)
    pub async fn open(
        &self,
        user: &str,
        connection_id: &str,
        max_per_user: usize,
    ) -> std::result::Result<(), ConnectError> {
        let open = self.of_user(user).await?;
        if open.len() >= max_per_user {
            return Err(ConnectError::TooMany(max_per_user));
        }
        let now = crate::time::now_ms();
        let row = ConnectionRow {
            user_id: user.to_string(),
            connection_id: connection_id.to_string(),
            connected_at: now,
            expires_at: now / 1000 + CONNECTION_TTL_SECS,
        };
        self.tables.put(&CONNECTIONS, to_item(&row), Cond::Always).await.map_err(Error::from)?;
        Ok(())
    }

    /// `$disconnect`: forgets `connection_id`, whoever it belonged to. Returns that user.
    pub async fn close(&self, connection_id: &str) -> Result<Option<String>> {
        let page =
            self.tables.query(Query::new(&CONNECTIONS, connection_id).index(CONNECTIONS_BY_ID).limit(10)).await?;
        let mut user = None;
        for item in page.items {
            let row: ConnectionRow = from_item(item)?;
            self.forget(&row.user_id, &row.connection_id).await?;
            user = Some(row.user_id);
        }
        Ok(user)
    }

    /// Removes one connection of `user` (closed, or gone from API Gateway).
    pub async fn forget(&self, user: &str, connection_id: &str) -> Result<()> {
        self.tables.delete(&CONNECTIONS, &Key::pk_sk(user, connection_id), Cond::Always).await?;
        Ok(())
    }

    /// `user`'s open connections (expired rows that the TTL has not deleted yet left out).
    pub async fn of_user(&self, user: &str) -> Result<Vec<String>> {
        let now = crate::time::now_ms() / 1000;
        let page = self.tables.query(Query::new(&CONNECTIONS, user).limit(100)).await?;
        let mut ids = Vec::new();
        for item in page.items {
            let row: ConnectionRow = from_item(item)?;
            if row.expires_at > now {
                ids.push(row.connection_id);
            }
        }
        Ok(ids)
    }
}
