//! One run at a time: a lock document with a lease, judged by the server's clock.
//!
//! Taking the lock is one atomic upsert on `_id: "run"` that only matches an expired lease: a
//! live holder makes the insert collide on `_id` (duplicate key), so exactly one of several
//! racing runs wins. The holder renews the lease by heartbeat; a run that fails to renew has
//! lost the lock and must stop its step. Server time (`$$NOW`) is used throughout, so clock
//! skew between machines cannot make two runs both believe they hold it.

use std::time::Duration;

use bson::{doc, Bson, Document};
use serde::Deserialize;

use super::journal::Actor;
use super::{
    error_code, mongo_error, newer_schema_error, schema_of, server_now_plus, Store, JOURNAL_SCHEMA,
    LOCK,
};
use crate::error::{Error, Result};

const LOCK_ID: &str = "run";
/// How often `try_acquire` tries again when the holder released the lock mid-attempt.
const RELEASED_MEANWHILE_RETRIES: usize = 5;

#[derive(Debug, Clone, Deserialize)]
pub struct LockDoc {
    pub holder: Actor,
    pub acquired_at: bson::DateTime,
    pub lease_until: bson::DateTime,
}

impl LockDoc {
    /// "run 65f... by alice on host-1 (pid 123) since 2026-11-21T22:00:00Z"
    pub fn describe(&self) -> String {
        format!(
            "run {} by {} on {} (pid {}, upstep {}) since {}, lease until {}",
            self.holder.run_id,
            self.holder.user,
            self.holder.host,
            self.holder.pid,
            self.holder.upstep_version,
            self.acquired_at.try_to_rfc3339_string().unwrap_or_default(),
            self.lease_until.try_to_rfc3339_string().unwrap_or_default(),
        )
    }
}

#[derive(Debug)]
pub enum Acquire {
    /// The lock is ours; `took_over` names the holder whose lease had expired, if any.
    Acquired { took_over: Option<LockDoc> },
    /// A live holder has it.
    Held(LockDoc),
}

/// The lock document's filter (`_id` is the one lock).
pub(crate) fn lock_filter() -> Document {
    doc! { "_id": LOCK_ID }
}

/// The lock document while `run_id` holds it.
pub(crate) fn held_by_filter(run_id: &str) -> Document {
    doc! { "_id": LOCK_ID, "holder.run_id": run_id }
}

/// A lease from the server's clock: now + `lease`.
fn lease_until(lease: Duration) -> Bson {
    server_now_plus(lease)
}

/// Writes `actor` in as the holder, unconditionally (taking over a dead holder).
pub(crate) fn lease_pipeline(actor: &Actor, lease: Duration) -> Result<Vec<Document>> {
    let holder = bson::to_bson(actor).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(vec![doc! { "$set": {
        "schema": JOURNAL_SCHEMA,
        "holder": { "$literal": holder },
        "acquired_at": "$$NOW",
        "lease_until": lease_until(lease),
    }}])
}

/// Writes `actor` in only if the current lease has expired (or there is none); otherwise
/// leaves the holder as it is. Decided on the server, with the server's clock.
pub(crate) fn acquire_pipeline(actor: &Actor, lease: Duration) -> Result<Vec<Document>> {
    let holder = bson::to_bson(actor).map_err(|e| Error::Internal(e.to_string()))?;
    let expired = doc! { "$or": [
        { "$eq": [{ "$type": "$lease_until" }, "missing"] },
        { "$lt": ["$lease_until", "$$NOW"] },
    ]};
    let pick = |new: Bson, old: &str| doc! { "$cond": [expired.clone(), new, old] };
    Ok(vec![doc! { "$set": {
        "schema": pick(JOURNAL_SCHEMA.into(), "$schema"),
        "holder": pick(doc! { "$literal": holder }.into(), "$holder"),
        "acquired_at": pick("$$NOW".into(), "$acquired_at"),
        "lease_until": pick(lease_until(lease), "$lease_until"),
    }}])
}

/// The fields a renewal reads back.
pub(crate) fn lease_projection() -> Document {
    doc! { "lease_until": 1 }
}

/// Extends the holder's lease to now + `lease`.
pub(crate) fn renew_pipeline(lease: Duration) -> Vec<Document> {
    vec![doc! { "$set": { "lease_until": lease_until(lease) } }]
}

pub struct RunLock {
    store: Store,
}

impl RunLock {
    pub fn new(store: &Store) -> RunLock {
        RunLock {
            store: store.clone(),
        }
    }

    fn coll(&self) -> mongodb::Collection<Document> {
        self.store.db.collection(LOCK)
    }

    fn err(&self, e: mongodb::error::Error) -> Error {
        mongo_error(&e, &self.store.redacted_uri, "")
    }

    /// The lock as it is now. A lock written by a newer upstep is refused, not misread.
    pub async fn current(&self) -> Result<Option<LockDoc>> {
        let Some(raw) = self
            .coll()
            .find_one(lock_filter())
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let schema = schema_of(&raw);
        if schema > i64::from(super::JOURNAL_SCHEMA_READ) {
            let writer = raw.get_document("holder").ok().map(|h| {
                format!(
                    "upstep {} on {}",
                    h.get_str("upstep_version").unwrap_or("?"),
                    h.get_str("host").unwrap_or("?")
                )
            });
            return Err(newer_schema_error("run lock", schema, writer.as_deref()));
        }
        bson::from_document(raw).map(Some).map_err(|e| {
            Error::Preflight(format!(
                "upstep's run lock in {} cannot be read ({e})\n  fix: if no upstep runs against this database, remove it with `upstep unlock`",
                self.store.redacted_uri
            ))
        })
    }

    /// One attempt to take the lock.
    ///
    /// A single-document update decides on the server, with the server's clock, whether the
    /// current lease has expired (or there is none) and only then writes us in; reading the
    /// document back tells who holds it. (`$expr` is not allowed in an upsert's filter, so the
    /// condition lives in the update pipeline.)
    pub async fn try_acquire(&self, actor: &Actor, lease: Duration) -> Result<Acquire> {
        // The holder may release between our update and the read-back: the lock is then free,
        // so the next attempt takes it (or sees whoever beat us to it).
        for _ in 0..RELEASED_MEANWHILE_RETRIES {
            if let Some(acquire) = self.acquire_once(actor, lease).await? {
                return Ok(acquire);
            }
        }
        Err(Error::Locked(
            "the run lock changed hands repeatedly while upstep tried to take it; try again".into(),
        ))
    }

    /// One upsert and read-back; `None` when the lock document vanished in between.
    async fn acquire_once(&self, actor: &Actor, lease: Duration) -> Result<Option<Acquire>> {
        let before = self.current().await?;
        let update = acquire_pipeline(actor, lease)?;
        let result = self
            .coll()
            .update_one(lock_filter(), update)
            .upsert(true)
            .await;
        match result {
            Ok(_) => {}
            // Two first-ever acquisitions raced to insert the document: the other one won.
            Err(e) if error_code(&e) == Some(11000) => {}
            Err(e) => return Err(self.err(e)),
        }
        Ok(match self.current().await? {
            Some(now) if now.holder.run_id == actor.run_id => Some(Acquire::Acquired {
                took_over: before.filter(|b| b.holder.run_id != actor.run_id),
            }),
            Some(now) => Some(Acquire::Held(now)),
            None => None,
        })
    }

    /// Take the lock from a holder known to be dead (same host, process gone), without
    /// waiting for its lease to expire. Only succeeds if that holder still has it.
    pub async fn take_over(&self, dead: &LockDoc, actor: &Actor, lease: Duration) -> Result<bool> {
        let r = self
            .coll()
            .update_one(
                held_by_filter(&dead.holder.run_id),
                lease_pipeline(actor, lease)?,
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.matched_count == 1)
    }

    /// Renew our lease. `false`: we no longer hold the lock (it expired and was taken).
    pub async fn renew(&self, actor: &Actor, lease: Duration) -> Result<bool> {
        Ok(self.renew_lease(actor, lease).await?.is_some())
    }

    /// Renew our lease and return its new end (server time); `None`: we no longer hold the
    /// lock. The running step's heartbeat is set to the same end, so it never outlives it.
    pub async fn renew_lease(
        &self,
        actor: &Actor,
        lease: Duration,
    ) -> Result<Option<bson::DateTime>> {
        let renewed = self
            .coll()
            .find_one_and_update(held_by_filter(&actor.run_id), renew_pipeline(lease))
            .return_document(mongodb::options::ReturnDocument::After)
            .projection(lease_projection())
            .await
            .map_err(|e| self.err(e))?;
        match renewed {
            None => Ok(None),
            Some(doc) => doc
                .get_datetime("lease_until")
                .map(|d| Some(*d))
                .map_err(|e| Error::Internal(format!("the renewed lock has no lease_until: {e}"))),
        }
    }

    /// Release our lock (a no-op if we no longer hold it).
    pub async fn release(&self, actor: &Actor) -> Result<()> {
        self.coll()
            .delete_one(held_by_filter(&actor.run_id))
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Remove the lock whoever holds it (`upstep unlock`). Returns the removed holder.
    pub async fn force_unlock(&self) -> Result<Option<LockDoc>> {
        let current = self.current().await?;
        self.coll()
            .delete_one(lock_filter())
            .await
            .map_err(|e| self.err(e))?;
        Ok(current)
    }
}
