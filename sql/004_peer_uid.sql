-- Who asked: the uid of the process at the other end of the socket (SO_PEERCRED) when the
-- decision was made. NULL for decisions made before this column existed.
ALTER TABLE decisions ADD COLUMN peer_uid bigint;
