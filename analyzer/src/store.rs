//! Durable state: incidents, their timelines, the notification outbox and a little metadata, in one
//! SQLite file (WAL, `synchronous=FULL`), so every incident once recorded survives `kill -9`.
//!
//! **Architecture Invariant:** an incident change and the notifications it causes are written in the
//! same transaction (`Store::record`), so a crash can never keep one without the other.

use std::path::{Path, PathBuf};

use faultline_proto::remediation::ActionRecord;
use faultline_proto::{Incident, IncidentStatus, TimelineEntry};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::engine::IncidentChange;

/// The schema this code writes. Bump it together with a migration in `migrate`.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a writer waits for another connection's lock before giving up, milliseconds. Only the
/// analyzer itself writes, so this only covers an operator's `sqlite3` shell holding a read.
const BUSY_TIMEOUT_MS: u64 = 5_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id         TEXT PRIMARY KEY,
    json       TEXT NOT NULL,
    status     TEXT NOT NULL,
    root       TEXT NOT NULL,
    class      TEXT NOT NULL,
    opened_s   REAL NOT NULL,
    updated_s  REAL NOT NULL,
    resolved_s REAL
);
CREATE INDEX IF NOT EXISTS incidents_by_status ON incidents(status, opened_s);
CREATE INDEX IF NOT EXISTS incidents_by_update ON incidents(updated_s);
CREATE INDEX IF NOT EXISTS incidents_by_root ON incidents(root);
CREATE TABLE IF NOT EXISTS timeline (
    incident_id TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    at_s        REAL NOT NULL,
    what        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    PRIMARY KEY (incident_id, idx)
);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver        TEXT NOT NULL,
    incident_id     TEXT NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_s  REAL NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    last_error      TEXT,
    created_s       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_s);
CREATE INDEX IF NOT EXISTS outbox_by_receiver ON outbox(receiver, state, id);
CREATE TABLE IF NOT EXISTS actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_s        REAL NOT NULL,
    incident_id TEXT,
    node        TEXT NOT NULL,
    action      TEXT NOT NULL,
    result      TEXT NOT NULL,
    json        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_by_incident ON actions(incident_id, id);
";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {error}")]
    Open { path: PathBuf, error: rusqlite::Error },
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
    #[error(
        "database schema version {found} is newer than this analyzer understands ({SCHEMA_VERSION}); run a newer analyzer"
    )]
    TooNew { found: i64 },
    #[error("incident {id} in the database is not readable: {message}")]
    Corrupt { id: String, message: String },
    #[error("cannot encode incident {id}: {message}")]
    Encode { id: String, message: String },
    #[error(transparent)]
    Damaged(#[from] crate::store_guard::Damage),
}

// By hand rather than `#[from]`, so the SQLite message is printed once, not again as a source.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

/// A notification to enqueue together with an incident change.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutbox {
    /// Receiver name from the notifier config.
    pub receiver: String,
    pub incident_id: String,
    /// `opened`, `updated`, `resolved`.
    pub event: String,
    /// The body to send, already encoded.
    pub payload: String,
    /// Unique per (receiver, incident, event, version): enqueueing it twice keeps one row.
    pub idempotency_key: String,
    /// Unix seconds of the first attempt.
    pub next_attempt_s: f64,
}

/// Turns an incident change into the notifications to enqueue with it in the same transaction
/// (`notify::Planner`).
pub trait OutboxPlanner: Send + Sync + std::fmt::Debug + 'static {
    fn plan(&self, change: &IncidentChange, now_s: f64) -> Vec<NewOutbox>;
}

/// State of one outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Sent,
    /// Failed for good: refused by the receiver (4xx), or still undelivered when retrying stopped.
    Dead,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "sent" => Self::Sent,
            "dead" => Self::Dead,
            _ => Self::Pending,
        }
    }
}

/// One stored notification.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub receiver: String,
    pub incident_id: String,
    pub event: String,
    pub payload: String,
    pub idempotency_key: String,
    pub attempts: u32,
    pub next_attempt_s: f64,
    pub state: OutboxState,
    pub last_error: Option<String>,
    /// Unix seconds the row was recorded (with its incident change).
    pub created_s: f64,
}

const OUTBOX_COLUMNS: &str = "id, receiver, incident_id, event, payload, idempotency_key, attempts, next_attempt_s, state, last_error, created_s";

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        receiver: r.get(1)?,
        incident_id: r.get(2)?,
        event: r.get(3)?,
        payload: r.get(4)?,
        idempotency_key: r.get(5)?,
        attempts: r.get::<_, i64>(6)?.clamp(0, i64::from(u32::MAX)) as u32,
        next_attempt_s: r.get(7)?,
        state: OutboxState::parse(&r.get::<_, String>(8)?),
        last_error: r.get(9)?,
        created_s: r.get(10)?,
    })
}

/// Which incidents a list returns.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentQuery {
    /// `None` means open and resolved.
    pub status: Option<IncidentStatus>,
    /// Only incidents active at some point at or after this Unix second: still open, or updated
    /// (which includes resolved) at or after it.
    pub since_s: Option<f64>,
    /// The newest `limit` matches are returned, oldest first.
    pub limit: usize,
}

/// Counts for the start-up log and `/api/v1/summary`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub incidents: u64,
    pub open: u64,
    pub outbox_pending: u64,
}

/// The SQLite store. One connection; callers serialize access (the server keeps it in a mutex).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// The database file (None in memory): its guard is rewritten after every recorded change.
    path: Option<PathBuf>,
}

fn status_str(s: IncidentStatus) -> &'static str {
    match s {
        IncidentStatus::Open => "open",
        IncidentStatus::Resolved => "resolved",
    }
}

/// The number in `inc-000123`, if the id has that shape.
pub fn incident_number(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("inc-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Store {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    /// Refuses a store that looks damaged (`store_guard`): lost WAL, truncated or missing file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_checked(path, false)
    }

    /// Like `open`; with `allow_damage` a damaged store is opened anyway (logged loudly) and its
    /// guard is reset to what it now holds.
    pub fn open_checked(path: &Path, allow_damage: bool) -> Result<Self, StoreError> {
        let missing = crate::store_guard::check_exists(path);
        let conn = Connection::open(path).map_err(|error| StoreError::Open { path: path.to_path_buf(), error })?;
        let mut store = Self::init(conn).map_err(|e| match e {
            StoreError::Sql(error) => StoreError::Open { path: path.to_path_buf(), error },
            other => other,
        })?;
        store.path = Some(path.to_path_buf());
        let found = store.mark()?;
        let verdict = missing.and_then(|()| crate::store_guard::check(path, &store.conn, found));
        match verdict {
            Ok(()) => {}
            Err(e) if allow_damage => {
                tracing::error!(error = %e, "STORE DAMAGED; starting anyway (--allow-empty-store): what was lost is gone");
                store.write_guard();
            }
            Err(e) => return Err(e.into()),
        }
        Ok(store)
    }

    /// How many incidents the store holds and the next incident number, for the guard.
    fn mark(&self) -> Result<crate::store_guard::Mark, StoreError> {
        let incidents: i64 = self.conn.query_row("SELECT COUNT(*) FROM incidents", [], |r| r.get(0))?;
        Ok(crate::store_guard::Mark {
            incidents: u64::try_from(incidents).unwrap_or(0),
            next_incident_id: self.next_incident_id()?,
        })
    }

    fn write_guard(&self) {
        let Some(path) = &self.path else { return };
        let result = self
            .mark()
            .map_err(|e| e.to_string())
            .and_then(|m| crate::store_guard::write(path, m).map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::warn!(db = %path.display(), error = %e, "cannot update the store guard file");
        }
    }

    /// Writes a consistent copy of the database to `dest` (`VACUUM INTO`), safe while serving.
    pub fn backup(&self, dest: &Path) -> Result<(), StoreError> {
        crate::store_guard::backup(&self.conn, dest).map_err(StoreError::Sql)
    }

    /// A throwaway database for tests and the simulator.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        // WAL: readers never block the writer; FULL: a committed incident is on disk, not just in
        // the OS cache, before `record` returns (incident writes are rare, so the fsync is cheap).
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL;")?;
        let mut store = Self { conn, path: None };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        let found: Option<String> =
            tx.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).optional()?;
        match found.and_then(|v| v.parse::<i64>().ok()) {
            Some(v) if v > SCHEMA_VERSION => return Err(StoreError::TooNew { found: v }),
            Some(_) => {}
            None => {
                tx.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?1)",
                    params![SCHEMA_VERSION.to_string()],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes incident changes and the notifications they cause in one transaction: all or nothing.
    pub fn record(&mut self, changes: &[IncidentChange], outbox: &[NewOutbox], now_s: f64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for change in changes {
            let inc = match change {
                IncidentChange::Opened(i) | IncidentChange::Updated(i) | IncidentChange::Resolved(i) => i,
            };
            upsert_incident(&tx, inc)?;
        }
        for o in outbox {
            tx.execute(
                "INSERT OR IGNORE INTO outbox(receiver, incident_id, event, payload, idempotency_key, next_attempt_s, created_s)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![o.receiver, o.incident_id, o.event, o.payload, o.idempotency_key, o.next_attempt_s, now_s],
            )?;
        }
        tx.commit()?;
        if !changes.is_empty() {
            self.write_guard();
        }
        Ok(())
    }

    /// Open incidents, oldest first, for `Analyzer::restore` after a restart. A row that no longer
    /// decodes is skipped and logged rather than blocking start-up; the rest are returned.
    pub fn load_open(&self) -> Result<Vec<Incident>, StoreError> {
        let mut stmt =
            self.conn.prepare("SELECT id, json FROM incidents WHERE status = 'open' ORDER BY opened_s, id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            match decode(&id, &json) {
                Ok(i) => out.push(i),
                Err(e) => tracing::error!(incident = %id, error = %e, "skipping unreadable incident"),
            }
        }
        Ok(out)
    }

    /// The number the next new incident should get: one past the highest ever recorded, so ids are
    /// never reused even after incidents are deleted by hand.
    pub fn next_incident_id(&self) -> Result<u64, StoreError> {
        let from_meta: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'next_incident_id'", [], |r| r.get(0))
            .optional()?;
        let from_meta = from_meta.and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
        let mut stmt = self.conn.prepare("SELECT id FROM incidents")?;
        let mut max = 0u64;
        for id in stmt.query_map([], |r| r.get::<_, String>(0))? {
            if let Some(n) = incident_number(&id?) {
                max = max.max(n);
            }
        }
        Ok(from_meta.max(max.saturating_add(1)))
    }

    /// One incident by id.
    pub fn get(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        let json: Option<String> =
            self.conn.query_row("SELECT json FROM incidents WHERE id = ?1", params![id], |r| r.get(0)).optional()?;
        json.map(|j| decode(id, &j).and_then(|i| self.with_actions(i))).transpose()
    }

    /// Incidents matching `q`, oldest first. Rows that no longer decode are left out (see
    /// `list_skipping`).
    pub fn list(&self, q: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        self.list_skipping(q).map(|(list, _)| list)
    }

    /// Incidents matching `q`, oldest first, and the ids of rows left out because they no longer
    /// decode: one bad row never breaks a listing.
    pub fn list_skipping(&self, q: &IncidentQuery) -> Result<(Vec<Incident>, Vec<String>), StoreError> {
        let status = q.status.map(status_str);
        let mut stmt = self.conn.prepare(
            "SELECT id, json FROM incidents
             WHERE (?1 IS NULL OR status = ?1)
               AND (?2 IS NULL OR status = 'open' OR updated_s >= ?2)
             ORDER BY opened_s DESC, id DESC
             LIMIT ?3",
        )?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![status, q.since_s, limit], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for row in rows {
            let (id, json) = row?;
            match decode(&id, &json) {
                Ok(i) => out.push(self.with_actions(i)?),
                Err(e) => {
                    tracing::error!(incident = %id, error = %e, "stored incident does not decode; left out of the listing");
                    skipped.push(id);
                }
            }
        }
        out.reverse();
        Ok((out, skipped))
    }

    /// Every incident (open or resolved) rooted at `root`, oldest first.
    pub fn by_root(&self, root: &str) -> Result<Vec<Incident>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id, json FROM incidents WHERE root = ?1 ORDER BY opened_s, id")?;
        let rows = stmt.query_map(params![root], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            match decode(&id, &json) {
                Ok(i) => out.push(self.with_actions(i)?),
                Err(e) => tracing::error!(incident = %id, error = %e, "stored incident does not decode; left out"),
            }
        }
        Ok(out)
    }

    /// The stored timeline of one incident, in order.
    pub fn timeline(&self, id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let mut stmt =
            self.conn.prepare("SELECT at_s, what, detail FROM timeline WHERE incident_id = ?1 ORDER BY idx")?;
        let rows =
            stmt.query_map(params![id], |r| Ok(TimelineEntry { at_s: r.get(0)?, what: r.get(1)?, detail: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let (incidents, open): (i64, i64) =
            self.conn.query_row("SELECT COUNT(*), COALESCE(SUM(status = 'open'), 0) FROM incidents", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let pending: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM outbox WHERE state = 'pending'", [], |r| r.get(0))?;
        Ok(StoreCounts {
            incidents: incidents.max(0) as u64,
            open: open.max(0) as u64,
            outbox_pending: pending.max(0) as u64,
        })
    }

    /// Pending notifications whose time has come, oldest first.
    pub fn outbox_due(&self, now_s: f64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt_s <= ?1 ORDER BY id LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![now_s, limit], outbox_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The oldest pending notification of one receiver, due or not: the receiver's later rows wait
    /// for it, so each receiver gets events in order.
    pub fn outbox_head(&self, receiver: &str) -> Result<Option<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE receiver = ?1 AND state = 'pending' ORDER BY id LIMIT 1"
        ))?;
        Ok(stmt.query_row(params![receiver], outbox_row).optional()?)
    }

    /// Every notification of one receiver (sent, pending and failed), oldest first.
    pub fn outbox_rows(&self, receiver: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt =
            self.conn.prepare(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE receiver = ?1 ORDER BY id"))?;
        let rows = stmt.query_map(params![receiver], outbox_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes sent and failed notifications recorded before `before_s`; pending ones stay whatever
    /// their age. Returns how many went.
    pub fn outbox_prune(&mut self, before_s: f64) -> Result<usize, StoreError> {
        Ok(self.conn.execute("DELETE FROM outbox WHERE state != 'pending' AND created_s < ?1", params![before_s])?)
    }

    /// Pending notifications per receiver (receivers with none are absent).
    pub fn outbox_depth(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT receiver, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY receiver ORDER BY receiver",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks a notification delivered.
    pub fn outbox_sent(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE outbox SET state = 'sent', attempts = attempts + 1, last_error = NULL WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// Records a failed attempt: retry at `next_attempt_s`, or give up (`dead`) when `None`.
    pub fn outbox_failed(&mut self, id: i64, error: &str, next_attempt_s: Option<f64>) -> Result<(), StoreError> {
        let state = if next_attempt_s.is_some() { OutboxState::Pending } else { OutboxState::Dead };
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, state = ?3,
                 next_attempt_s = COALESCE(?4, next_attempt_s) WHERE id = ?1",
            params![id, error, state.as_str(), next_attempt_s],
        )?;
        Ok(())
    }
}

/// Remediation actions (`remediate`): every drain, resume, suggestion and block, kept apart from the
/// incident rows the engine writes and shown in the incident's timeline when it is read.
impl Store {
    /// Records one action; returns its row id.
    pub fn record_action(&mut self, a: &ActionRecord) -> Result<u64, StoreError> {
        let json =
            serde_json::to_string(a).map_err(|e| StoreError::Encode { id: a.node.clone(), message: e.to_string() })?;
        self.conn.execute(
            "INSERT INTO actions(at_s, incident_id, node, action, result, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![a.at_s, a.incident, a.node, a.action.as_str(), a.result.as_str(), json],
        )?;
        Ok(u64::try_from(self.conn.last_insert_rowid()).unwrap_or(0))
    }

    fn actions_where(&self, sql_tail: &str, p: impl rusqlite::Params) -> Result<Vec<ActionRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT id, json FROM actions {sql_tail}"))?;
        let rows = stmt.query_map(p, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            match serde_json::from_str::<ActionRecord>(&json) {
                Ok(mut a) => {
                    a.id = u64::try_from(id).unwrap_or(0);
                    out.push(a);
                }
                Err(e) => tracing::error!(action_row = id, error = %e, "skipping unreadable action row"),
            }
        }
        Ok(out)
    }

    /// Every recorded action, oldest first (to rebuild remediation state after a restart).
    pub fn actions_all(&self) -> Result<Vec<ActionRecord>, StoreError> {
        self.actions_where("ORDER BY id", [])
    }

    /// The newest `limit` actions, oldest first.
    pub fn actions_recent(&self, limit: usize) -> Result<Vec<ActionRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut v = self.actions_where("ORDER BY id DESC LIMIT ?1", params![limit])?;
        v.reverse();
        Ok(v)
    }

    /// Actions taken about one incident, oldest first.
    pub fn actions_for_incident(&self, id: &str) -> Result<Vec<ActionRecord>, StoreError> {
        self.actions_where("WHERE incident_id = ?1 ORDER BY id", params![id])
    }

    /// The incident with its actions merged into the timeline (`what: "action"`), in time order.
    fn with_actions(&self, mut inc: Incident) -> Result<Incident, StoreError> {
        let actions = self.actions_for_incident(&inc.id)?;
        if actions.is_empty() {
            return Ok(inc);
        }
        inc.timeline.extend(actions.into_iter().map(|a| TimelineEntry {
            at_s: a.at_s,
            what: "action".into(),
            detail: a.detail,
        }));
        inc.timeline.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        Ok(inc)
    }
}

fn decode(id: &str, json: &str) -> Result<Incident, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt { id: id.to_string(), message: e.to_string() })
}

fn upsert_incident(tx: &Transaction<'_>, inc: &Incident) -> Result<(), StoreError> {
    // An id that already belongs to an incident opened at another time means the engine's numbering
    // went back (started without `restore`). Keep the recorded incident: history is never overwritten.
    let existing: Option<f64> =
        tx.query_row("SELECT opened_s FROM incidents WHERE id = ?1", params![inc.id], |r| r.get(0)).optional()?;
    if let Some(opened_s) = existing
        && (opened_s - inc.opened_s).abs() > 1e-3
    {
        tracing::error!(
            incident = %inc.id,
            recorded_opened_s = opened_s,
            new_opened_s = inc.opened_s,
            root = %inc.root,
            "incident id reused for a different incident; keeping the recorded one"
        );
        return Ok(());
    }
    let json =
        serde_json::to_string(inc).map_err(|e| StoreError::Encode { id: inc.id.clone(), message: e.to_string() })?;
    tx.execute(
        "INSERT INTO incidents(id, json, status, root, class, opened_s, updated_s, resolved_s)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(id) DO UPDATE SET json = excluded.json, status = excluded.status, root = excluded.root,
             class = excluded.class, updated_s = excluded.updated_s, resolved_s = excluded.resolved_s",
        params![
            inc.id,
            json,
            status_str(inc.status),
            inc.root.to_string(),
            inc.class.as_str(),
            inc.opened_s,
            inc.updated_s,
            inc.resolved_s
        ],
    )?;
    for (idx, t) in inc.timeline.iter().enumerate() {
        tx.execute(
            "INSERT OR IGNORE INTO timeline(incident_id, idx, at_s, what, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![inc.id, idx as i64, t.at_s, t.what, t.detail],
        )?;
    }
    if let Some(n) = incident_number(&inc.id) {
        let next = n.saturating_add(1).to_string();
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('next_incident_id', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value
             WHERE CAST(excluded.value AS INTEGER) > CAST(meta.value AS INTEGER)",
            params![next],
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
