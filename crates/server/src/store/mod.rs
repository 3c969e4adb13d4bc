//! Storage adapters behind herald-core's `EventStore`: SQLite (the default),
//! Redis (several nodes sharing topics) and, from herald-core, memory.

mod redis;
mod sqlite;

pub use self::redis::{Durability, RedisSettings, RedisStore, redacted};

pub use sqlite::{DATABASE_FILE, SqliteOpenError, SqliteStore, Synchronous};
