//! The `images` table: uploaded images, who may see them, and their codes once encoded (Fv and,
//! for soft attention, the gate g, each `d` little-endian f32).

use anyhow::{bail, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::auth::Caller;
use super::store::now;

/// One image as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageRow {
    pub id: i64,
    pub sha256: String,
    #[serde(skip)]
    pub owner_id: i64,
    pub owner: String,
    pub visibility: String,
    pub name: String,
    pub format: String,
    pub width: i64,
    pub height: i64,
    pub bytes: i64,
    pub status: String,
    pub error: Option<String>,
    pub created: i64,
    pub encoded: Option<i64>,
}

impl ImageRow {
    /// Whether `caller` (`None`: anonymous) may see it: public, their own, or an admin.
    pub fn visible_to(&self, caller: Option<&Caller>) -> bool {
        self.visibility == "public" || caller.is_some_and(|c| c.admin || c.id == self.owner_id)
    }

    /// Whether `caller` may change or delete it: the owner or an admin.
    pub fn changeable_by(&self, caller: &Caller) -> bool {
        caller.admin || caller.id == self.owner_id
    }
}

const COLUMNS: &str = "i.id, i.sha256, i.owner, u.name, i.visibility, i.name, i.format, i.width, i.height, i.bytes, \
                       i.status, i.error, i.created, i.encoded";

fn image_row(r: &Row) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        id: r.get(0)?,
        sha256: r.get(1)?,
        owner_id: r.get(2)?,
        owner: r.get(3)?,
        visibility: r.get(4)?,
        name: r.get(5)?,
        format: r.get(6)?,
        width: r.get(7)?,
        height: r.get(8)?,
        bytes: r.get(9)?,
        status: r.get(10)?,
        error: r.get(11)?,
        created: r.get(12)?,
        encoded: r.get(13)?,
    })
}

/// The longest display name kept, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A display name: control characters dropped, at most [`MAX_NAME_CHARS`]. Never a path.
pub fn display_name(name: Option<String>, sha: &str) -> String {
    let clean: String = name.unwrap_or_default().chars().filter(|c| !c.is_control()).take(MAX_NAME_CHARS).collect();
    let clean = clean.trim();
    if clean.is_empty() {
        sha[..12].to_owned()
    } else {
        clean.to_owned()
    }
}

/// An upload to record: its blob, who sent it and what its header says.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub sha256: String,
    pub owner: i64,
    pub public: bool,
    pub name: String,
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

/// Records `image` as pending; `Ok((id, false))` when its owner already has the same bytes
/// (nothing is inserted).
pub fn insert(db: &Connection, image: &NewImage) -> Result<(i64, bool)> {
    let existing: Option<i64> = db
        .query_row("SELECT id FROM images WHERE owner = ?1 AND sha256 = ?2", params![image.owner, image.sha256], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(id) = existing {
        return Ok((id, false));
    }
    db.execute(
        "INSERT INTO images (sha256, owner, visibility, name, format, width, height, bytes, status, created) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)",
        params![
            image.sha256,
            image.owner,
            if image.public { "public" } else { "private" },
            image.name,
            image.format,
            image.width,
            image.height,
            image.bytes as i64,
            now()
        ],
    )?;
    Ok((db.last_insert_rowid(), true))
}

/// The image `id`, if it exists.
pub fn get(db: &Connection, id: i64) -> Result<Option<ImageRow>> {
    let sql = format!("SELECT {COLUMNS} FROM images i JOIN users u ON u.id = i.owner WHERE i.id = ?1");
    Ok(db.query_row(&sql, [id], image_row).optional()?)
}

/// Which images a listing shows.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub mine: bool,
    pub status: Option<String>,
    pub limit: i64,
    pub after: i64,
}

/// The images `caller` may see, by id, after the cursor `listing.after`.
pub fn list(db: &Connection, caller: Option<&Caller>, listing: &Listing) -> Result<Vec<ImageRow>> {
    let (id, admin) = caller.map_or((-1, false), |c| (c.id, c.admin));
    let sql = format!(
        "SELECT {COLUMNS} FROM images i JOIN users u ON u.id = i.owner WHERE i.id > ?1 \
         AND (?2 OR i.owner = ?3 OR (i.visibility = 'public' AND NOT ?4)) AND (?5 IS NULL OR i.status = ?5) \
         ORDER BY i.id LIMIT ?6"
    );
    let mut statement = db.prepare(&sql)?;
    let rows = statement.query_map(
        params![listing.after, admin && !listing.mine, id, listing.mine, listing.status, listing.limit],
        image_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Sets an image's visibility; false when it no longer exists.
pub fn set_visibility(db: &Connection, id: i64, public: bool) -> Result<bool> {
    let visibility = if public { "public" } else { "private" };
    Ok(db.execute("UPDATE images SET visibility = ?1 WHERE id = ?2", params![visibility, id])? == 1)
}

/// Deletes an image in one transaction; returns its SHA-256 when no other row still refers to
/// that blob (the caller removes the blob after the commit), `None` when nothing was deleted.
pub fn delete(db: &mut Connection, id: i64) -> Result<Option<(String, bool)>> {
    let tx = db.transaction()?;
    let sha: Option<String> = tx.query_row("SELECT sha256 FROM images WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    let Some(sha) = sha else { return Ok(None) };
    tx.execute("DELETE FROM images WHERE id = ?1", [id])?;
    let shared: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM images WHERE sha256 = ?1)", [&sha], |r| r.get(0))?;
    tx.commit()?;
    Ok(Some((sha, !shared)))
}

/// The oldest pending images, at most `limit`: (id, SHA-256).
pub fn pending(db: &Connection, limit: i64) -> Result<Vec<(i64, String)>> {
    let mut statement = db.prepare("SELECT id, sha256 FROM images WHERE status = 'pending' ORDER BY id LIMIT ?1")?;
    let rows = statement.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// f32 values of little-endian bytes; an error unless there are exactly `d` of them.
pub fn f32_values(bytes: &[u8], d: usize) -> Result<Vec<f32>> {
    if bytes.len() != 4 * d {
        bail!("a code of {} bytes where {d} values were expected", bytes.len());
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Stores a pending image's codes and marks it ready; false when it is no longer pending
/// (deleted meanwhile).
pub fn mark_ready(db: &Connection, id: i64, fv: &[f32], gate: Option<&[f32]>, checkpoint: &str) -> Result<bool> {
    let changed = db.execute(
        "UPDATE images SET status = 'ready', error = NULL, fv = ?1, gate = ?2, checkpoint_sha256 = ?3, encoded = ?4 \
         WHERE id = ?5 AND status = 'pending'",
        params![f32_bytes(fv), gate.map(f32_bytes), checkpoint, now(), id],
    )?;
    Ok(changed == 1)
}

/// Marks a pending image failed, with the reason.
pub fn mark_failed(db: &Connection, id: i64, error: &str) -> Result<()> {
    db.execute(
        "UPDATE images SET status = 'failed', error = ?1 WHERE id = ?2 AND status = 'pending'",
        params![error, id],
    )?;
    Ok(())
}

/// A ready image's place in the search: who owns it, whether it is public, its codes.
#[derive(Debug, Clone)]
pub struct Coded {
    pub id: i64,
    pub owner: i64,
    pub public: bool,
    pub fv: Vec<f32>,
    pub gate: Option<Vec<f32>>,
}

/// Every ready image with its codes, by id.
pub fn ready_codes(db: &Connection, d: usize) -> Result<Vec<Coded>> {
    let mut statement =
        db.prepare("SELECT id, owner, visibility, fv, gate FROM images WHERE status = 'ready' ORDER BY id")?;
    let mut rows = statement.query([])?;
    let mut coded = Vec::new();
    while let Some(r) = rows.next()? {
        let gate: Option<Vec<u8>> = r.get(4)?;
        coded.push(Coded {
            id: r.get(0)?,
            owner: r.get(1)?,
            public: r.get::<_, String>(2)? == "public",
            fv: f32_values(&r.get::<_, Vec<u8>>(3)?, d)?,
            gate: gate.map(|g| f32_values(&g, d)).transpose()?,
        });
    }
    Ok(coded)
}

/// Every pending or ready image back to pending with no codes (codes of another checkpoint);
/// returns how many.
pub fn forget_codes(db: &Connection) -> Result<usize> {
    Ok(db.execute(
        "UPDATE images SET status = 'pending', fv = NULL, gate = NULL, encoded = NULL WHERE status != 'failed'",
        [],
    )?)
}

/// Image counts by status.
pub fn counts(db: &Connection) -> Result<Vec<(String, i64)>> {
    let mut statement = db.prepare("SELECT status, COUNT(*) FROM images GROUP BY status ORDER BY status")?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The SHA-256 of every image's blob.
pub fn referenced_blobs(db: &Connection) -> Result<std::collections::HashSet<String>> {
    let mut statement = db.prepare("SELECT DISTINCT sha256 FROM images")?;
    let rows = statement.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
