-- Mercure updates (the Mercure door stores each as one event of its own topic).
--   events.mercure  the update's routing facts as JSON: {"topics": [canonical,
--                   alternates…], "private"?: true, "id"?: publisher's id};
--                   NULL for every other event
-- mercure_ids: the newest retained event of each (topic, publisher-chosen id),
-- written in the same transaction as the event, so that a subscriber resumes
-- from the id it was given. Ids may be reused: the latest event wins. Rows go
-- with their events when retention trims the topic.
ALTER TABLE events ADD COLUMN mercure TEXT;

CREATE TABLE mercure_ids (
    topic TEXT    NOT NULL,
    id    TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    PRIMARY KEY (topic, id)
) STRICT, WITHOUT ROWID;

CREATE INDEX mercure_ids_by_seq ON mercure_ids (topic, seq);
