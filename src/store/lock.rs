//! One run at a time: a lock document with a lease, judged by the server's clock.
//!
//! Taking the lock is one atomic upsert on `_id: "run"` that only matches an expired lease: a
//! live holder makes the insert collide on `_id` (duplicate key), so exactly one of several
//! racing runs wins. The holder renews the lease by heartbeat; a run that fails to renew has
//! lost the lock and must stop its step. Server time (`$$NOW`) is used throughout, so clock
//! skew between machines cannot make two runs both believe they hold it.

use std::time::Duration;

use bson::{doc, Document};
use serde::Deserialize;

use super::journal::Actor;
use super::{error_code, mongo_error, Store, JOURNAL_SCHEMA, LOCK};
use crate::error::{Error, Result};

const LOCK_ID: &str = "run";

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

fn lease_pipeline(actor: &Actor, lease: Duration) -> Result<Vec<Document>> {
    let holder = bson::to_bson(actor).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(vec![doc! { "$set": {
        "schema": JOURNAL_SCHEMA,
        "holder": holder,
        "acquired_at": "$$NOW",
        "lease_until": { "$dateAdd": { "startDate": "$$NOW", "unit": "millisecond", "amount": lease.as_millis() as i64 } },
    }}])
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

    pub async fn current(&self) -> Result<Option<LockDoc>> {
        let found = self
            .store
            .db
            .collection::<LockDoc>(LOCK)
            .find_one(doc! { "_id": LOCK_ID })
            .await
            .map_err(|e| self.err(e))?;
        Ok(found)
    }

    /// One attempt to take the lock.
    ///
    /// A single-document update decides on the server, with the server's clock, whether the
    /// current lease has expired (or there is none) and only then writes us in; reading the
    /// document back tells who holds it. (`$expr` is not allowed in an upsert's filter, so the
    /// condition lives in the update pipeline.)
    pub async fn try_acquire(&self, actor: &Actor, lease: Duration) -> Result<Acquire> {
        let before = self.current().await?;
        let holder = bson::to_bson(actor).map_err(|e| Error::Internal(e.to_string()))?;
        let expired = doc! { "$or": [
            { "$eq": [{ "$type": "$lease_until" }, "missing"] },
            { "$lt": ["$lease_until", "$$NOW"] },
        ]};
        let pick = |new: bson::Bson, old: &str| doc! { "$cond": [expired.clone(), new, old] };
        let update = vec![doc! { "$set": {
            "schema": JOURNAL_SCHEMA,
            "holder": pick(doc! { "$literal": holder }.into(), "$holder"),
            "acquired_at": pick("$$NOW".into(), "$acquired_at"),
            "lease_until": pick(
                doc! { "$dateAdd": { "startDate": "$$NOW", "unit": "millisecond", "amount": lease.as_millis() as i64 } }.into(),
                "$lease_until",
            ),
        }}];
        let result = self
            .coll()
            .update_one(doc! { "_id": LOCK_ID }, update)
            .upsert(true)
            .await;
        match result {
            Ok(_) => {}
            // Two first-ever acquisitions raced to insert the document: the other one won.
            Err(e) if error_code(&e) == Some(11000) => {}
            Err(e) => return Err(self.err(e)),
        }
        match self.current().await? {
            Some(now) if now.holder.run_id == actor.run_id => Ok(Acquire::Acquired {
                took_over: before.filter(|b| b.holder.run_id != actor.run_id),
            }),
            Some(now) => Ok(Acquire::Held(now)),
            None => Err(Error::Locked(
                "the run lock changed hands while upstep tried to take it; try again".into(),
            )),
        }
    }

    /// Take the lock from a holder known to be dead (same host, process gone), without
    /// waiting for its lease to expire. Only succeeds if that holder still has it.
    pub async fn take_over(&self, dead: &LockDoc, actor: &Actor, lease: Duration) -> Result<bool> {
        let r = self
            .coll()
            .update_one(
                doc! { "_id": LOCK_ID, "holder.run_id": &dead.holder.run_id },
                lease_pipeline(actor, lease)?,
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.matched_count == 1)
    }

    /// Renew our lease. `false`: we no longer hold the lock (it expired and was taken).
    pub async fn renew(&self, actor: &Actor, lease: Duration) -> Result<bool> {
        let r = self
            .coll()
            .update_one(
                doc! { "_id": LOCK_ID, "holder.run_id": &actor.run_id },
                vec![doc! { "$set": {
                    "lease_until": { "$dateAdd": { "startDate": "$$NOW", "unit": "millisecond", "amount": lease.as_millis() as i64 } },
                }}],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.matched_count == 1)
    }

    /// Release our lock (a no-op if we no longer hold it).
    pub async fn release(&self, actor: &Actor) -> Result<()> {
        self.coll()
            .delete_one(doc! { "_id": LOCK_ID, "holder.run_id": &actor.run_id })
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Remove the lock whoever holds it (`upstep unlock`). Returns the removed holder.
    pub async fn force_unlock(&self) -> Result<Option<LockDoc>> {
        let current = self.current().await?;
        self.coll()
            .delete_one(doc! { "_id": LOCK_ID })
            .await
            .map_err(|e| self.err(e))?;
        Ok(current)
    }
}
