-- Herald's history: every event, the topics they went to, and the store's
-- identity. Applied automatically at start; never edit an applied migration,
-- add a new one.

-- Key/value facts about this store:
--   epoch     random id of this history; a new database is a new epoch, so
--             ids from a wiped data dir are recognised as foreign
--   last_seq  highest sequence number ever assigned; kept here (not derived
--             from events) so that ids are never reused, even when retention
--             deletes the newest events' predecessors or all of them
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row per event. `seq` is the hub-wide sequence number (the id without
-- its epoch). The SSE frame is rebuilt from these fields on replay.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    topic      TEXT    NOT NULL,
    event_type TEXT,
    data       TEXT    NOT NULL,
    retry_ms   INTEGER,
    time_ms    INTEGER NOT NULL   -- publish time, ms since the Unix epoch
) STRICT;

-- Replay of one topic after a position.
CREATE INDEX events_by_topic ON events (topic, seq);

-- Per-topic bookkeeping for retention and gap reports.
--   events           rows of this topic in `events`
--   trimmed_through  highest seq of this topic removed by retention: a reader
--                    resuming before it gets a herald.gap notice
CREATE TABLE topics (
    name            TEXT PRIMARY KEY,
    events          INTEGER NOT NULL DEFAULT 0,
    trimmed_through INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
