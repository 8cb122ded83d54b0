//! Locate jobs: where in an uploaded scene a sentence or keywords apply, computed in the
//! background (crop batch by crop batch, cancellable, with progress) into
//! `results/<job-id>/` (`prob.png`, `heat.png`, `overlay.png`, `summary.json`).

use anyhow::{bail, Result};
use rand::RngExt;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::store::now;

/// At most this many jobs of one user are queued or running.
pub const QUOTA: i64 = 2;

/// What a locate job computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocateParams {
    pub query: Option<String>,
    pub keywords: Option<String>,
    /// Crop sides.
    pub steps: Vec<usize>,
    /// `vga` or `plain`.
    pub score: String,
    /// `median:251`, `gaussian:255` or `none`.
    pub filter: String,
}

/// One job as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobRow {
    pub id: String,
    #[serde(skip)]
    pub owner_id: i64,
    pub image_id: i64,
    pub params: LocateParams,
    pub status: String,
    pub done: i64,
    pub total: i64,
    pub error: Option<String>,
    /// The attention centres `[row, column]` of the map, once done.
    pub centers: Option<serde_json::Value>,
    pub created: i64,
    pub started: Option<i64>,
    pub finished: Option<i64>,
}

/// A new job id: 128 random bits in lowercase base32 (26 characters).
pub fn new_id() -> String {
    let bits = u128::from_le_bytes(rand::rng().random::<[u8; 16]>());
    (0..26).map(|k| b"abcdefghijklmnopqrstuvwxyz234567"[((bits >> (5 * k)) & 31) as usize] as char).collect()
}

/// Whether `id` has the form of a job id (checked before any storage access).
pub fn is_job_id(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

fn job_row(r: &Row) -> rusqlite::Result<JobRow> {
    let params: String = r.get(3)?;
    let centers: Option<String> = r.get(8)?;
    let parse_error =
        |e: serde_json::Error| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into());
    Ok(JobRow {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        image_id: r.get(2)?,
        params: serde_json::from_str(&params).map_err(parse_error)?,
        status: r.get(4)?,
        done: r.get(5)?,
        total: r.get(6)?,
        error: r.get(7)?,
        centers: centers.map(|c| serde_json::from_str(&c)).transpose().map_err(parse_error)?,
        created: r.get(9)?,
        started: r.get(10)?,
        finished: r.get(11)?,
    })
}

const COLUMNS: &str = "id, owner, image, params, status, done, total, error, centers, created, started, finished";

/// Refused: the owner already has [`QUOTA`] jobs queued or running.
#[derive(Debug)]
pub struct OverQuota;

impl std::fmt::Display for OverQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "at most {QUOTA} locate jobs per user may be queued or running; wait for one to finish")
    }
}

impl std::error::Error for OverQuota {}

/// Queues a job of `owner` on image `image`; an [`OverQuota`] error past the quota.
pub fn create(db: &mut Connection, owner: i64, image: i64, params: &LocateParams) -> Result<String> {
    let tx = db.transaction()?;
    let active: i64 =
        tx.query_row("SELECT COUNT(*) FROM jobs WHERE owner = ?1 AND status IN ('queued', 'running')", [owner], |r| {
            r.get(0)
        })?;
    if active >= QUOTA {
        return Err(OverQuota.into());
    }
    let id = new_id();
    tx.execute(
        "INSERT INTO jobs (id, owner, image, kind, params, status, done, total, created) \
         VALUES (?1, ?2, ?3, 'locate', ?4, 'queued', 0, 0, ?5)",
        params![id, owner, image, serde_json::to_string(params)?, now()],
    )?;
    tx.commit()?;
    Ok(id)
}

/// The job `id`, if it exists.
pub fn get(db: &Connection, id: &str) -> Result<Option<JobRow>> {
    Ok(db.query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"), [id], job_row).optional()?)
}

/// The oldest queued job ([`start`] marks it running).
pub fn next_queued(db: &Connection) -> Result<Option<JobRow>> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE status = 'queued' ORDER BY created, rowid LIMIT 1");
    Ok(db.query_row(&sql, [], job_row).optional()?)
}

/// Marks a queued job running with `total` crops; false when it is no longer queued.
pub fn start(db: &Connection, id: &str, total: usize) -> Result<bool> {
    let changed = db.execute(
        "UPDATE jobs SET status = 'running', done = 0, total = ?1, started = ?2 WHERE id = ?3 AND status = 'queued'",
        params![total as i64, now(), id],
    )?;
    Ok(changed == 1)
}

/// Records progress; false when the job is no longer running (cancelled or deleted).
pub fn progress(db: &Connection, id: &str, done: usize) -> Result<bool> {
    let changed =
        db.execute("UPDATE jobs SET done = ?1 WHERE id = ?2 AND status = 'running'", params![done as i64, id])?;
    Ok(changed == 1)
}

/// Marks a running job done with its attention centres; false when it is no longer running.
pub fn finish(db: &Connection, id: &str, centers: &serde_json::Value) -> Result<bool> {
    let changed = db.execute(
        "UPDATE jobs SET status = 'done', done = total, centers = ?1, finished = ?2 WHERE id = ?3 AND status = 'running'",
        params![centers.to_string(), now(), id],
    )?;
    Ok(changed == 1)
}

/// Marks a job failed with the reason.
pub fn fail(db: &Connection, id: &str, error: &str) -> Result<()> {
    db.execute(
        "UPDATE jobs SET status = 'failed', error = ?1, finished = ?2 WHERE id = ?3 AND status IN ('queued', 'running')",
        params![error, now(), id],
    )?;
    Ok(())
}

/// Deletes a job (cancelling it when queued or running); false when there was none.
pub fn delete(db: &Connection, id: &str) -> Result<bool> {
    Ok(db.execute("DELETE FROM jobs WHERE id = ?1", [id])? == 1)
}

/// The ids of the jobs on image `image` (their results go with it).
pub fn of_image(db: &Connection, image: i64) -> Result<Vec<String>> {
    let mut statement = db.prepare("SELECT id FROM jobs WHERE image = ?1")?;
    let rows = statement.query_map([image], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Running jobs back to the queue, from zero (at start-up: the process that ran them is gone);
/// returns their ids.
pub fn requeue_running(db: &Connection) -> Result<Vec<String>> {
    let mut statement = db.prepare("SELECT id FROM jobs WHERE status = 'running'")?;
    let ids: Vec<String> = statement.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    db.execute("UPDATE jobs SET status = 'queued', done = 0, started = NULL WHERE status = 'running'", [])?;
    Ok(ids)
}

/// Every job id.
pub fn all_ids(db: &Connection) -> Result<std::collections::HashSet<String>> {
    let mut statement = db.prepare("SELECT id FROM jobs")?;
    let rows = statement.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Job counts by status.
pub fn counts(db: &Connection) -> Result<Vec<(String, i64)>> {
    let mut statement = db.prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status")?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Checks a job's parameters: a query or keywords, 1 to 4 steps of 64 to 4096, a known score
/// and filter. The error names the field.
pub fn check(params: &LocateParams) -> std::result::Result<(), (&'static str, String)> {
    if params.query.is_none() && params.keywords.is_none() {
        return Err(("query", "give a query, keywords or both".into()));
    }
    if params.steps.is_empty() || params.steps.len() > 4 || params.steps.iter().any(|s| !(64..=4096).contains(s)) {
        return Err(("steps", "steps are 1 to 4 crop sides, each 64 to 4096".into()));
    }
    if !["vga", "plain"].contains(&params.score.as_str()) {
        return Err(("score", "score is vga or plain".into()));
    }
    crate::locate::map::Filter::parse(&params.filter).map_err(|e| ("filter", e))?;
    Ok(())
}

/// The map settings of a job, within the service's pixel limit.
pub fn settings(params: &LocateParams, max_pixels: u64) -> Result<crate::locate::map::MapSettings> {
    use crate::locate::map::{Filter, MapSettings, ScoreKind};
    let Ok(filter) = Filter::parse(&params.filter) else { bail!("filter {:?}", params.filter) };
    Ok(MapSettings {
        steps: params.steps.clone(),
        crop_resize: crate::locate::crops::CropResize::Cubic,
        score: if params.score == "plain" { ScoreKind::Plain } else { ScoreKind::Vga },
        filter,
        max_pixels,
        batch_size: 32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_base32_and_checked() {
        let (a, b) = (new_id(), new_id());
        assert!(is_job_id(&a) && is_job_id(&b) && a != b, "{a} {b}");
        for bad in ["", "../../etc/passwd", &"a".repeat(27), "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxy1"]
        {
            assert!(!is_job_id(bad), "{bad}");
        }
    }

    #[test]
    fn at_most_two_active_jobs_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::store::open(&dir.path().join("db"), true).unwrap();
        db.execute_batch(
            "INSERT INTO users (id, name, role, created) VALUES (1, 'a', 'user', 0), (2, 'b', 'user', 0);
             INSERT INTO images (id, sha256, owner, visibility, name, format, width, height, bytes, status, created)
             VALUES (1, 'x', 1, 'public', 'x', 'png', 1, 1, 1, 'ready', 0);",
        )
        .unwrap();
        let params = LocateParams {
            query: Some("boat".into()),
            keywords: None,
            steps: vec![64],
            score: "vga".into(),
            filter: "none".into(),
        };
        let first = create(&mut db, 1, 1, &params).unwrap();
        let second = create(&mut db, 1, 1, &params).unwrap();
        assert!(create(&mut db, 1, 1, &params).unwrap_err().is::<OverQuota>());
        create(&mut db, 2, 1, &params).expect("another user's quota");
        assert_eq!(next_queued(&db).unwrap().unwrap().id, first, "oldest first");
        assert!(start(&db, &first, 10).unwrap() && !start(&db, &first, 10).unwrap());
        assert!(progress(&db, &first, 4).unwrap());
        assert_eq!(requeue_running(&db).unwrap(), std::slice::from_ref(&first));
        assert_eq!(get(&db, &first).unwrap().unwrap().status, "queued");
        fail(&db, &second, "broken").unwrap();
        let third = create(&mut db, 1, 1, &params).expect("a failed job frees its place");
        assert!(start(&db, &third, 3).unwrap() && finish(&db, &third, &serde_json::json!([[1, 2]])).unwrap());
        let done = get(&db, &third).unwrap().unwrap();
        assert_eq!((done.status.as_str(), done.done, done.centers), ("done", 3, Some(serde_json::json!([[1, 2]]))));
        db.execute("DELETE FROM images WHERE id = 1", []).unwrap();
        assert!(all_ids(&db).unwrap().is_empty(), "jobs go with their image");
    }

    #[test]
    fn parameters_are_checked_field_by_field() {
        let good = LocateParams {
            query: Some("red boat".into()),
            keywords: None,
            steps: vec![256, 512],
            score: "vga".into(),
            filter: "median:251".into(),
        };
        assert_eq!(check(&good), Ok(()));
        let field = |change: &dyn Fn(&mut LocateParams)| {
            let mut p = good.clone();
            change(&mut p);
            check(&p).unwrap_err().0
        };
        assert_eq!(field(&|p| p.query = None), "query");
        assert_eq!(field(&|p| p.steps = vec![32]), "steps");
        assert_eq!(field(&|p| p.steps = vec![64; 5]), "steps");
        assert_eq!(field(&|p| p.steps.clear()), "steps");
        assert_eq!(field(&|p| p.score = "best".into()), "score");
        assert_eq!(field(&|p| p.filter = "median:250".into()), "filter");
    }
}
