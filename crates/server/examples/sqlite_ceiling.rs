//! How fast SQLite alone commits events on this machine: Herald's schema
//! (the real migrations), WAL, `synchronous=FULL`, one transaction per group
//! of rows with the statements Herald's writer runs, on one thread, with no
//! HTTP, JSON or fan-out. Herald's durable publish rates are measured
//! against this ceiling in BENCHMARKS.md. It is an optimistic one: no
//! idempotency keys, and no readers holding WAL snapshots.
//!
//! cargo run --release -p herald-server --example sqlite_ceiling -- [ROWS_PER_COMMIT] [ROWS]

use std::{path::Path, time::Instant};

/// The migrations Herald applies, in order.
fn migrations() -> std::io::Result<Vec<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            files.push(path);
        }
    }
    files.sort();
    files.into_iter().map(std::fs::read_to_string).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let group = args.next().transpose()?.unwrap_or(100).max(1);
    let rows = args.next().transpose()?.unwrap_or(200_000).clamp(1, 10_000_000);
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let mut db = rusqlite::Connection::open(dir.path().join("herald.db"))?;
    db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
    for migration in migrations()? {
        db.execute_batch(&migration)?;
    }
    db.execute("INSERT INTO meta (key, value) VALUES ('last_seq', '0')", [])?;
    let data = "x".repeat(100);
    let started = Instant::now();
    let mut seq = 0;
    while seq < rows {
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let count = group.min(rows - seq);
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (seq, topic, event_type, data, retry_ms, time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for _ in 0..count {
                seq += 1;
                insert.execute(rusqlite::params![seq as i64, "bench", None::<&str>, data, None::<i64>, 0])?;
            }
            tx.prepare_cached(
                "INSERT INTO topics (name, events) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET events = events + excluded.events",
            )?
            .execute(rusqlite::params!["bench", count as i64])?;
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'last_seq'")?.execute([seq.to_string()])?;
        }
        tx.commit()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let commits = rows.div_ceil(group);
    println!(
        "{rows} rows in {commits} commits of {group}: {seconds:.2} s, {:.0} rows/s, {:.0} µs per commit",
        rows as f64 / seconds,
        seconds * 1e6 / commits as f64
    );
    Ok(())
}
