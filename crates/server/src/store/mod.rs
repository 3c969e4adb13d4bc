//! Storage adapters behind herald-core's `EventStore`: SQLite (the default)
//! and, from herald-core, memory.

mod sqlite;

pub use sqlite::{DATABASE_FILE, SqliteOpenError, SqliteStore, Synchronous};
