//! Tokens verified lately, by their full text: a client sends the same
//! token with every request, and checking its signature and parsing its
//! claims each time cost an eighth of a publish's CPU. An entry is good
//! until the token's `exp` plus the leeway (for ever without one: a fresh
//! check would say the same); only tokens that passed are kept. Bounded:
//! past [`VERIFIED_LIMIT`] entries it forgets them all.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;

use crate::auth::{AuthError, now_secs};

/// Most tokens remembered.
pub const VERIFIED_LIMIT: usize = 10_000;

/// What a token allows, once checked, and when it expires.
pub trait Verified {
    /// The token's `exp`, if it has one (seconds since the Unix epoch).
    fn expires_at(&self) -> Option<u64>;
}

/// Tokens verified lately, with what each allows.
#[derive(Debug)]
pub struct VerifiedTokens<T> {
    entries: Mutex<HashMap<Box<str>, Arc<T>>>,
    /// Seconds past `exp` a token stays good (the clock-skew leeway).
    leeway: u64,
}

impl<T: Verified> VerifiedTokens<T> {
    /// An empty cache whose tokens stay good `leeway` seconds past `exp`.
    pub fn new(leeway: u64) -> Self {
        Self { entries: Mutex::default(), leeway }
    }

    /// What `token` allows: remembered, or `check`ed and remembered.
    pub fn get_or_check(&self, token: &str, check: impl FnOnce() -> Result<T, AuthError>) -> Result<Arc<T>, AuthError> {
        let now = now_secs();
        let mut entries = self.entries.lock();
        if let Some(found) = entries.get(token) {
            if found.expires_at().is_none_or(|exp| exp.saturating_add(self.leeway) >= now) {
                return Ok(Arc::clone(found));
            }
            entries.remove(token);
        }
        drop(entries);
        let checked = Arc::new(check()?);
        let mut entries = self.entries.lock();
        if entries.len() >= VERIFIED_LIMIT {
            entries.clear();
        }
        entries.insert(token.into(), Arc::clone(&checked));
        Ok(checked)
    }
}
