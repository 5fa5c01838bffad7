//! Every deployed function: one per API operation (each entry of the route table but the
//! local-only ones), the workers, and the WebSocket API's routes.
//!
//! Two Lambda binaries run them, one for each kind of event and so each set of dependencies
//! ([`Binary`]): `im-http` every function behind the HTTP API, `im-events` the others. A
//! function's `IM_FUNCTION` variable names which function the binary is
//! ([`crate::lambda::http_main`], [`crate::lambda::events_main`]). Two builds, not one per
//! function, make a release build of every function a few minutes; two, not one, keep each
//! package to what its functions link (the workers' event types, the WebSocket functions'
//! token check), under the 4 MB budget with room to spare.

use crate::access::{Access, SearchUse, tables};
use crate::routes::ROUTES;
use crate::routing::Route;
use im_shared::queue::names::FANOUT;
use im_shared::schema::*;

/// What a function does.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// An API operation behind the HTTP API.
    Api(&'static Route),
    /// The group fan-out worker, on the fan-out queue.
    FanoutWorker,
    /// The search indexer, on the store and meta tables' streams.
    Indexer,
    /// The scheduled outbox sweep: re-enqueues fan-outs whose job was lost after the send
    /// committed.
    OutboxSweeper,
    /// A route of the WebSocket API, by its route key (`$connect`, `$disconnect`, `$default`).
    Ws(&'static str),
}

impl Role {
    /// The binary that runs a function of this role.
    pub fn binary(self) -> Binary {
        match self {
            Role::Api(_) => Binary::Http,
            _ => Binary::Events,
        }
    }
}

/// The Lambda binaries (functions/Cargo.toml's `[[bin]]`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// The API operations: HTTP API requests.
    Http,
    /// The workers and the WebSocket routes: queue, stream, schedule and WebSocket events.
    Events,
}

impl Binary {
    pub const ALL: [Binary; 2] = [Binary::Http, Binary::Events];

    pub fn name(self) -> &'static str {
        match self {
            Binary::Http => "im-http",
            Binary::Events => "im-events",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Function {
    /// The template's function, and its `IM_FUNCTION`.
    pub name: &'static str,
    pub role: Role,
    /// What it may touch (its IAM policy).
    pub access: Access,
}

/// The functions that are not API operations.
pub const OTHERS: &[Function] = &[
    Function {
        name: "fanout-worker",
        role: Role::FanoutWorker,
        access: tables(
            &[&STORE, &GROUP_RELATIONS, &INBOXES, &DELIVERIES, &CONVERSATIONS],
            &[&INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &OUTBOX],
        ),
    },
    Function {
        name: "indexer",
        role: Role::Indexer,
        access: Access { search: SearchUse::Index, ..tables(&[&STORE, &META], &[]) },
    },
    Function {
        name: "outbox-sweeper",
        role: Role::OutboxSweeper,
        access: Access { sends: &[FANOUT], ..tables(&[&OUTBOX], &[&OUTBOX]) },
    },
    Function { name: "ws-connect", role: Role::Ws("$connect"), access: tables(&[&CONNECTIONS], &[&CONNECTIONS]) },
    Function { name: "ws-disconnect", role: Role::Ws("$disconnect"), access: tables(&[&CONNECTIONS], &[&CONNECTIONS]) },
    Function { name: "ws-default", role: Role::Ws("$default"), access: tables(&[], &[]) },
];

/// Every deployed function, in the template's order: the API operations, then the others.
pub fn all() -> impl Iterator<Item = Function> {
    ROUTES
        .iter()
        .filter(|r| !r.local_only())
        .map(|r| Function { name: r.lambda, role: Role::Api(r), access: r.access })
        .chain(OTHERS.iter().copied())
}

/// The function of this name.
pub fn find(name: &str) -> Option<Function> {
    all().find(|f| f.name == name)
}
