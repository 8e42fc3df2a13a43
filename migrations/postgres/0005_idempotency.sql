-- The digest of the request that first used an idempotency key: the same
-- key with another request is refused instead of answered as a replay.
-- Keys stored before this column have none and replay as before.
ALTER TABLE processed ADD COLUMN fingerprint TEXT;
