-- The delivery worker's claim runs after every send. Threads taken over by
-- a person are few: found by their state, their pending automated messages
-- are found by lead (outbox_lead), not by visiting every pending message.
CREATE INDEX threads_state ON threads (state);
