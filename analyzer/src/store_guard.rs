//! Notices a damaged or lost store, and makes backups.
//!
//! SQLite in WAL mode keeps recent commits in `<db>-wal` until a checkpoint. If that file is
//! deleted, or the database file is truncated or replaced, the store opens without complaint and
//! with fewer incidents (often none), and the analyzer would carry on as if nothing had ever
//! happened. So next to the database sits a small marker, `<db>.guard`, rewritten (and fsynced)
//! after every recorded change: how many incidents the store held and the next incident number.
//! At start the store must hold at least that much, and pass SQLite's `quick_check`; otherwise the
//! analyzer refuses to start unless told `--allow-empty-store`.
//!
//! Backups: `faultline-analyzer backup --db DB DEST` writes a consistent copy with `VACUUM INTO`
//! while the analyzer runs (readers never block the writer in WAL mode).

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// What the guard file remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub incidents: u64,
    pub next_incident_id: u64,
}

/// Why the store looks damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error(
        "the store {db} holds {found_incidents} incidents (next id {found_next}) but {guard} says it held {want_incidents} (next id {want_next}): \
         its WAL was lost or the file was truncated or replaced. Restore a backup, or start with --allow-empty-store to accept the loss"
    )]
    Shrunk { db: PathBuf, guard: PathBuf, found_incidents: u64, found_next: u64, want_incidents: u64, want_next: u64 },
    #[error(
        "the store {db} is missing but {guard} shows it held {incidents} incidents. Restore a backup, or start with --allow-empty-store"
    )]
    Missing { db: PathBuf, guard: PathBuf, incidents: u64 },
    #[error(
        "the store {db} fails SQLite's quick_check: {message}. Restore a backup, or start with --allow-empty-store"
    )]
    Corrupt { db: PathBuf, message: String },
}

/// The guard file of a database.
pub fn guard_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".guard");
    PathBuf::from(s)
}

/// Reads the guard; None when there is none (a new store, or one from before the guard existed).
pub fn read(db: &Path) -> Option<Mark> {
    let text = std::fs::read_to_string(guard_path(db)).ok()?;
    let mut m = Mark::default();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let Some((k, v)) = line.split_once('=') else { continue };
        let Ok(v) = v.trim().parse::<u64>() else { continue };
        match k.trim() {
            "incidents" => m.incidents = v,
            "next_incident_id" => m.next_incident_id = v,
            _ => {}
        }
    }
    Some(m)
}

/// Rewrites the guard (temp file, fsync, rename).
pub fn write(db: &Path, m: Mark) -> std::io::Result<()> {
    let path = guard_path(db);
    let tmp = path.with_extension("guard.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    write!(
        f,
        "# faultline store guard: what {} held; see store_guard.rs\nincidents={}\nnext_incident_id={}\n",
        db.display(),
        m.incidents,
        m.next_incident_id
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// Before opening: a guard without its database means the database was lost.
pub fn check_exists(db: &Path) -> Result<(), Damage> {
    if let Some(m) = read(db)
        && m.incidents > 0
        && !db.exists()
    {
        return Err(Damage::Missing { db: db.to_path_buf(), guard: guard_path(db), incidents: m.incidents });
    }
    Ok(())
}

/// After opening: the database passes `quick_check` and holds at least what the guard remembers.
pub fn check(db: &Path, conn: &Connection, found: Mark) -> Result<(), Damage> {
    let verdict: Result<String, _> = conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
    match verdict {
        Ok(v) if v == "ok" => {}
        Ok(v) => return Err(Damage::Corrupt { db: db.to_path_buf(), message: v }),
        Err(e) => return Err(Damage::Corrupt { db: db.to_path_buf(), message: e.to_string() }),
    }
    if let Some(want) = read(db)
        && (found.incidents < want.incidents || found.next_incident_id < want.next_incident_id)
    {
        return Err(Damage::Shrunk {
            db: db.to_path_buf(),
            guard: guard_path(db),
            found_incidents: found.incidents,
            found_next: found.next_incident_id,
            want_incidents: want.incidents,
            want_next: want.next_incident_id,
        });
    }
    Ok(())
}

/// Writes a consistent copy of the open database to `dest` (which must not exist yet).
pub fn backup(conn: &Connection, dest: &Path) -> Result<(), rusqlite::Error> {
    let dest = dest.to_string_lossy().to_string();
    conn.execute("VACUUM INTO ?1", [dest])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.db");
        assert_eq!(read(&db), None);
        let m = Mark { incidents: 3, next_incident_id: 7 };
        write(&db, m).unwrap();
        assert_eq!(read(&db), Some(m));
    }

    #[test]
    fn a_store_holding_less_than_its_guard_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.db");
        write(&db, Mark { incidents: 3, next_incident_id: 7 }).unwrap();
        let conn = Connection::open(&db).unwrap();
        let e = check(&db, &conn, Mark { incidents: 0, next_incident_id: 1 }).unwrap_err();
        assert!(e.to_string().contains("--allow-empty-store"), "{e}");
        assert!(check(&db, &conn, Mark { incidents: 3, next_incident_id: 7 }).is_ok());
        std::fs::remove_file(&db).unwrap();
        assert!(matches!(check_exists(&db), Err(Damage::Missing { .. })));
    }
}
