-- Appends a batch to the audit chain in one statement, so the chain's head row is locked only for
-- the time the server needs to chain, insert and commit: no network round trip happens while it is
-- held. Locks the head, gives each row the next seq and its hash (the SHA-256 of src/audit/chain.rs
-- `row_hash`: hex(sha256(prev_hash || '[' || seq || ',' || tail)), where `tail` is the row's
-- canonical JSON after its seq, computed by the caller), inserts the rows, raises the signing keys'
-- max_exp, and moves the head. Returns the first new seq and how long the head lock took (µs).
CREATE FUNCTION sigil_audit_append(
    p_ts        BIGINT[],
    p_realm     TEXT[],
    p_kind      TEXT[],
    p_actor     TEXT[],
    p_subject   TEXT[],
    p_detail    TEXT[],
    p_tail      TEXT[],
    p_key_realm TEXT[],
    p_key_kid   TEXT[],
    p_key_exp   BIGINT[],
    OUT first_seq    BIGINT,
    OUT lock_wait_us BIGINT
) LANGUAGE plpgsql AS $$
DECLARE
    started   TIMESTAMPTZ := clock_timestamp();
    head_seq  BIGINT;
    head_hash TEXT;
    n         INT := coalesce(array_length(p_ts, 1), 0);
    seqs      BIGINT[] := '{}';
    prevs     TEXT[] := '{}';
    hashes    TEXT[] := '{}';
    h         TEXT;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit_head row missing';
    END IF;
    lock_wait_us := floor(extract(epoch FROM clock_timestamp() - started) * 1000000)::BIGINT;
    first_seq := head_seq + 1;
    FOR i IN 1..n LOOP
        head_seq := head_seq + 1;
        h := encode(sha256(convert_to(head_hash || '[' || head_seq::TEXT || ',' || p_tail[i], 'UTF8')), 'hex');
        seqs := seqs || head_seq;
        prevs := prevs || head_hash;
        hashes := hashes || h;
        head_hash := h;
    END LOOP;
    INSERT INTO audit_log (seq, ts, realm, kind, actor, subject, detail, prev_hash, hash)
    SELECT * FROM unnest(seqs, p_ts, p_realm, p_kind, p_actor, p_subject, p_detail, prevs, hashes);
    UPDATE signing_keys k SET max_exp = u.exp
      FROM unnest(p_key_realm, p_key_kid, p_key_exp) AS u(realm, kid, exp)
     WHERE k.realm = u.realm AND k.kid = u.kid AND k.max_exp < u.exp;
    UPDATE audit_head SET seq = head_seq, hash = head_hash WHERE id = 1;
END;
$$;
