//! Group commit: registrations and validated updates go to one writer task per process, which
//! stores whatever has queued up meanwhile in one transaction and answers each request only after
//! that transaction committed. An acknowledgement still means "durably stored" (the commit is
//! fsynced under `synchronous = FULL`), but one commit — one write lock, one fsync, a few
//! statements — serves a whole batch instead of one request, which is what bounds ingest on
//! SQLite (a single writer) and on PostgreSQL (a WAL flush per commit).
//!
//! Each request's outcome is the one it would get alone: a round that is no longer open refuses
//! all of its batch, a client or payload already in the round (or earlier in the same batch) is
//! refused, the others are stored. If the batch's transaction fails (e.g. another replica stored
//! the same client's update between the checks and the insert), it is rolled back and every
//! request of it is retried on its own, so one conflict never fails its neighbours.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::db::{is_unique_violation, Store};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The most requests one transaction stores.
const MAX_BATCH: usize = 512;
/// Requests waiting for the writer; further ones wait to enqueue (back-pressure).
const QUEUE: usize = 4096;

/// One request for the writer.
enum Write {
    Client {
        client_id: String,
        deployment: String,
        now: i64,
        reply: oneshot::Sender<Result<()>>,
    },
    Update {
        round_id: i64,
        client_id: String,
        payload_base64: String,
        digest: String,
        now: i64,
        reply: oneshot::Sender<Result<i64>>,
    },
}

/// The handle requests use; the writer stops when the last handle is dropped.
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::Sender<Write>,
}

impl Ingest {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(store: Store, metrics: Arc<Metrics>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(store, metrics, rx));
        Self { queue }
    }

    /// Stores a new client; returns after the commit.
    pub async fn register(&self, client_id: String, deployment: String, now: i64) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Write::Client {
            client_id,
            deployment,
            now,
            reply,
        })
        .await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Stores one validated update; returns how many updates the round holds after the commit.
    pub async fn update(
        &self,
        round_id: i64,
        client_id: String,
        payload_base64: String,
        digest: String,
        now: i64,
    ) -> Result<i64> {
        let (reply, answer) = oneshot::channel();
        self.send(Write::Update {
            round_id,
            client_id,
            payload_base64,
            digest,
            now,
            reply,
        })
        .await?;
        answer.await.map_err(|_| stopped())?
    }

    async fn send(&self, write: Write) -> Result<()> {
        self.queue.send(write).await.map_err(|_| stopped())
    }
}

fn stopped() -> Error {
    Error::internal("the ingest writer stopped")
}

// The refusals, the same whether an update is stored in a batch or alone.
fn round_closed(round_id: i64) -> Error {
    Error::conflict(
        "round_closed",
        format!("round {round_id} closed before the update arrived"),
    )
}

pub(super) fn duplicate(round_id: i64) -> Error {
    Error::conflict(
        "duplicate_update",
        format!("this client already submitted an update to round {round_id}"),
    )
}

pub(super) fn replayed() -> Error {
    Error::conflict(
        "replayed_update",
        "this exact payload was already submitted to this round",
    )
}

async fn writer(store: Store, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let writes = std::mem::take(&mut batch);
        metrics.ingest_batches.fetch_add(1, Ordering::Relaxed);
        metrics
            .ingest_writes
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        if writes.len() == 1 {
            alone(&store, writes.into_iter().next().expect("one")).await;
            continue;
        }
        if let Err(writes) = together(&store, writes).await {
            for w in writes {
                alone(&store, w).await;
            }
        }
    }
}

/// A write's outcome, decided inside the transaction and sent once it committed.
enum Outcome {
    ClientStored,
    Update(Result<i64>),
}

/// The whole batch in one transaction. On a database error nothing was stored and the writes
/// come back, to be retried one by one.
async fn together(store: &Store, writes: Vec<Write>) -> std::result::Result<(), Vec<Write>> {
    match plan_and_commit(store, &writes).await {
        Ok(outcomes) => {
            for (write, outcome) in writes.into_iter().zip(outcomes) {
                match (write, outcome) {
                    (Write::Client { reply, .. }, Outcome::ClientStored) => {
                        let _ = reply.send(Ok(()));
                    }
                    (Write::Update { reply, .. }, Outcome::Update(result)) => {
                        let _ = reply.send(result);
                    }
                    _ => unreachable!("outcomes follow the writes"),
                }
            }
            Ok(())
        }
        Err(e) => {
            tracing::debug!(error = %e, size = writes.len(), "group commit failed; retrying one by one");
            Err(writes)
        }
    }
}

/// Decides every write's outcome inside one transaction and commits it.
async fn plan_and_commit(store: &Store, writes: &[Write]) -> Result<Vec<Outcome>> {
    let started = std::time::Instant::now();
    let mut tx = store.begin_ingest().await?;
    let begun = started.elapsed();
    let mut outcomes: Vec<Option<Outcome>> = (0..writes.len()).map(|_| None).collect();

    // Updates, round by round (nearly always one round): the round's row first (its lock, and
    // whether it is still open), then one read of what it already holds, one insert, one count.
    let mut by_round: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, w) in writes.iter().enumerate() {
        if let Write::Update { round_id, .. } = w {
            by_round.entry(*round_id).or_default().push(i);
        }
    }
    for (round_id, indices) in &by_round {
        let updates: Vec<(&str, &str, &str, i64)> = indices
            .iter()
            .map(|&i| match &writes[i] {
                Write::Update {
                    client_id,
                    payload_base64,
                    digest,
                    now,
                    ..
                } => (
                    client_id.as_str(),
                    payload_base64.as_str(),
                    digest.as_str(),
                    *now,
                ),
                Write::Client { .. } => unreachable!("indexed updates"),
            })
            .collect();
        if !Store::bump_received_by(&mut tx, *round_id, 0).await? {
            for &i in indices {
                outcomes[i] = Some(Outcome::Update(Err(round_closed(*round_id))));
            }
            continue;
        }
        let clients: Vec<&str> = updates.iter().map(|u| u.0).collect();
        let digests: Vec<&str> = updates.iter().map(|u| u.2).collect();
        let (held_clients, held_digests) =
            Store::already_in_round(&mut tx, *round_id, &clients, &digests).await?;
        let mut batch_clients = HashSet::new();
        let mut batch_digests = HashSet::new();
        let mut accepted = Vec::new();
        for (&i, u) in indices.iter().zip(&updates) {
            // Only an accepted update claims its client and payload for the rest of the batch.
            let refused = if held_clients.contains(u.0) || batch_clients.contains(u.0) {
                Some(duplicate(*round_id))
            } else if held_digests.contains(u.2) || batch_digests.contains(u.2) {
                Some(replayed())
            } else {
                None
            };
            match refused {
                Some(e) => outcomes[i] = Some(Outcome::Update(Err(e))),
                None => {
                    batch_clients.insert(u.0);
                    batch_digests.insert(u.2);
                    accepted.push((i, *u));
                }
            }
        }
        if accepted.is_empty() {
            continue;
        }
        let now = accepted.iter().map(|(_, u)| u.3).max().unwrap_or_default();
        let rows: Vec<(&str, &str, &str)> = accepted.iter().map(|(_, u)| (u.0, u.1, u.2)).collect();
        Store::insert_updates(&mut tx, *round_id, &rows, now).await?;
        Store::bump_received_by(&mut tx, *round_id, accepted.len() as i64).await?;
        let received = Store::received(&mut tx, *round_id).await?;
        let first = received - accepted.len() as i64;
        for (k, (i, _)) in accepted.iter().enumerate() {
            outcomes[*i] = Some(Outcome::Update(Ok(first + k as i64 + 1)));
        }
    }

    // New clients: one insert.
    let clients: Vec<(usize, &str, &str, i64)> = writes
        .iter()
        .enumerate()
        .filter_map(|(i, w)| match w {
            Write::Client {
                client_id,
                deployment,
                now,
                ..
            } => Some((i, client_id.as_str(), deployment.as_str(), *now)),
            Write::Update { .. } => None,
        })
        .collect();
    if !clients.is_empty() {
        let now = clients.iter().map(|c| c.3).max().unwrap_or_default();
        let rows: Vec<(&str, &str)> = clients.iter().map(|c| (c.1, c.2)).collect();
        Store::insert_clients(&mut tx, &rows, now).await?;
        for c in &clients {
            outcomes[c.0] = Some(Outcome::ClientStored);
        }
    }
    let planned = started.elapsed();
    tx.commit().await?;
    tracing::trace!(
        writes = writes.len(),
        begin_us = begun.as_micros() as u64,
        statements_us = (planned - begun).as_micros() as u64,
        commit_us = (started.elapsed() - planned).as_micros() as u64,
        "group commit"
    );
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every write has an outcome"))
        .collect())
}

/// One write in its own transaction (a batch of one, or the retry of a failed batch).
async fn alone(store: &Store, write: Write) {
    match write {
        Write::Client {
            client_id,
            deployment,
            now,
            reply,
        } => {
            let _ = reply.send(
                store
                    .insert_client_on_ingest(&client_id, &deployment, now)
                    .await,
            );
        }
        Write::Update {
            round_id,
            client_id,
            payload_base64,
            digest,
            now,
            reply,
        } => {
            let result =
                update_alone(store, round_id, &client_id, &payload_base64, &digest, now).await;
            let _ = reply.send(result);
        }
    }
}

async fn update_alone(
    store: &Store,
    round_id: i64,
    client_id: &str,
    payload_base64: &str,
    digest: &str,
    now: i64,
) -> Result<i64> {
    let mut tx = store.begin_ingest().await?;
    if !Store::bump_received(&mut tx, round_id).await? {
        return Err(round_closed(round_id));
    }
    if Store::client_has_update(&mut tx, round_id, client_id).await? {
        return Err(duplicate(round_id));
    }
    if Store::payload_seen(&mut tx, round_id, digest).await? {
        return Err(replayed());
    }
    let inserted =
        Store::insert_update(&mut tx, round_id, client_id, payload_base64, digest, now).await;
    if let Err(e) = inserted {
        return Err(if is_unique_violation(&e) {
            Error::conflict(
                "duplicate_update",
                "a concurrent submission with this client or payload won",
            )
        } else {
            e
        });
    }
    let received = Store::received(&mut tx, round_id).await?;
    tx.commit().await?;
    Ok(received)
}
