-- Features as bytes. Every ROUTE logs its features (64 by default), and the batch function
-- parsed each of them from text into a real[]: the largest part of decoding a batch. As bytea
-- they arrive as hex and are stored as they come. The format: IEEE 754 binary32, big-endian
-- (the byte order of float4send), 4 bytes per feature.
CREATE FUNCTION seqroute_features_bytes(v real[]) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT coalesce(string_agg(float4send(x), ''::bytea ORDER BY i), ''::bytea)
      FROM unnest(v) WITH ORDINALITY AS u (x, i)
$$;
ALTER TABLE decisions ALTER COLUMN features TYPE bytea USING seqroute_features_bytes(features),
    ADD CONSTRAINT decisions_features_binary32 CHECK (length(features) % 4 = 0);
-- The batch's new key: fb, the features as bytea's hex text. Daemons of the previous release
-- still send f, a real[] literal, which seqroute_apply() converts with the function above.
ALTER TYPE seqroute_op ADD ATTRIBUTE fb bytea;
