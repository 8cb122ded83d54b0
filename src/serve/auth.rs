//! Users and their bearer tokens: a token is 256 random bits shown once; only its SHA-256 is
//! stored, looked up by that hash and compared in constant time.

use anyhow::{bail, Result};
use rand::RngExt;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::store::now;

/// Who makes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: i64,
    pub name: String,
    pub admin: bool,
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

/// The SHA-256 of a token, as stored.
fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A user name: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn check_user_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        bail!("--user {name:?}: a user name is 1 to 64 letters, digits, '.', '_' or '-'");
    }
    Ok(())
}

/// Gives `user` a new token (creating the user, with `role` or as a plain user; an existing
/// user's role changes only when `role` is given) and returns it: the only time it is shown.
pub fn add_token(db: &mut Connection, user: &str, role: Option<Role>, label: &str) -> Result<String> {
    check_user_name(user)?;
    let token = format!("amfmn_{}", crate::fsutil::hex(&rand::rng().random::<[u8; 32]>()));
    let tx = db.transaction()?;
    let existing: Option<i64> =
        tx.query_row("SELECT id FROM users WHERE name = ?1", [user], |r| r.get(0)).optional()?;
    let id = match existing {
        Some(id) => {
            if let Some(role) = role {
                tx.execute("UPDATE users SET role = ?1 WHERE id = ?2", params![role.as_str(), id])?;
            }
            id
        }
        None => {
            let role = role.unwrap_or(Role::User).as_str();
            tx.execute("INSERT INTO users (name, role, created) VALUES (?1, ?2, ?3)", params![user, role, now()])?;
            tx.last_insert_rowid()
        }
    };
    tx.execute(
        "INSERT INTO tokens (hash, user_id, label, created) VALUES (?1, ?2, ?3, ?4)",
        params![&token_hash(&token)[..], id, label, now()],
    )?;
    tx.commit()?;
    Ok(token)
}

/// Revokes every token of `user`; returns how many were active.
pub fn revoke_tokens(db: &Connection, user: &str) -> Result<usize> {
    let revoked = db.execute(
        "UPDATE tokens SET revoked = ?1 WHERE revoked IS NULL AND user_id = (SELECT id FROM users WHERE name = ?2)",
        params![now(), user],
    )?;
    if revoked == 0 {
        bail!("--user {user}: no such user, or no token of theirs is active");
    }
    Ok(revoked)
}

/// Whether at least one token is active.
pub fn any_token(db: &Connection) -> Result<bool> {
    Ok(db.query_row("SELECT EXISTS (SELECT 1 FROM tokens WHERE revoked IS NULL)", [], |r| r.get(0))?)
}

/// The caller a presented token stands for: `None` when it is unknown or revoked.
pub fn authenticate(db: &Connection, token: &str) -> Result<Option<Caller>> {
    let hash = token_hash(token);
    let found = db
        .query_row(
            "SELECT t.hash, u.id, u.name, u.role FROM tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.hash = ?1 AND t.revoked IS NULL",
            [&hash[..]],
            |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?)),
        )
        .optional()?;
    Ok(found.and_then(|(stored, id, name, role)| {
        bool::from(stored.ct_eq(&hash)).then_some(Caller { id, name, admin: role == "admin" })
    }))
}

/// Records that a token was used (callers do this at most once a minute per token).
pub fn touch(db: &Connection, token: &str) -> Result<()> {
    db.execute("UPDATE tokens SET last_used = ?1 WHERE hash = ?2", params![now(), &token_hash(token)[..]])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::store::open(&dir.path().join("db"), true).unwrap();
        assert!(!any_token(&db).unwrap());
        let a = add_token(&mut db, "ana", Some(Role::Admin), "cli").unwrap();
        let b = add_token(&mut db, "bo", None, "cli").unwrap();
        assert_eq!(a.len(), 6 + 64);
        assert_ne!(a, b);
        let ana = authenticate(&db, &a).unwrap().unwrap();
        assert_eq!((ana.name.as_str(), ana.admin), ("ana", true));
        assert!(!authenticate(&db, &b).unwrap().unwrap().admin);
        assert_eq!(authenticate(&db, "amfmn_00").unwrap(), None);
        let stored: Vec<u8> = db.query_row("SELECT hash FROM tokens LIMIT 1", [], |r| r.get(0)).unwrap();
        assert_eq!(stored.len(), 32, "only the hash is kept");
        assert_eq!(revoke_tokens(&db, "bo").unwrap(), 1);
        assert_eq!(authenticate(&db, &b).unwrap(), None);
        assert!(revoke_tokens(&db, "bo").is_err(), "nothing left to revoke");
        assert!(add_token(&mut db, "../x", None, "cli").is_err());
        let again = add_token(&mut db, "bo", None, "cli").unwrap();
        assert_eq!(authenticate(&db, &again).unwrap().unwrap().name, "bo");
    }
}
