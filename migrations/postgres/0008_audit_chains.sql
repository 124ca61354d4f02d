-- One audit chain per node (or per group of nodes) instead of one per deployment: each chain has
-- its own head row, so nodes on different chains never wait for each other's commits. Rows are
-- keyed by (chain, seq); the existing rows form the chain 'main', the default. Checkpoint records
-- (kind 'audit.checkpoint') bind the chains together; `sigil audit verify` walks them all.
ALTER TABLE audit_log ADD COLUMN chain TEXT NOT NULL DEFAULT 'main';
ALTER TABLE audit_log DROP CONSTRAINT audit_log_pkey;
ALTER TABLE audit_log ADD PRIMARY KEY (chain, seq);
CREATE INDEX audit_by_seq ON audit_log (seq);

CREATE TABLE audit_heads (
    chain TEXT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_heads (chain, seq, hash) SELECT 'main', seq, hash FROM audit_head;
-- Gone, so a node still running the previous version fails its appends instead of forking 'main'.
DROP TABLE audit_head;

DROP FUNCTION sigil_audit_append(BIGINT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[]);

-- As before (0007), on the chain `p_chain`, created at its genesis on first use. Each row's hash is
-- hex(sha256(prev_hash || p_prefix || seq || ',' || tail)): `p_prefix` is '[' on 'main' and
-- '["<chain>",' on any other chain (src/audit/chain.rs `row_hash`).
CREATE FUNCTION sigil_audit_append(
    p_chain     TEXT,
    p_prefix    TEXT,
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
    SELECT seq, hash INTO head_seq, head_hash FROM audit_heads WHERE chain = p_chain FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO audit_heads (chain, seq, hash)
        VALUES (p_chain, 0, '0000000000000000000000000000000000000000000000000000000000000000')
        ON CONFLICT (chain) DO NOTHING;
        SELECT seq, hash INTO head_seq, head_hash FROM audit_heads WHERE chain = p_chain FOR UPDATE;
    END IF;
    lock_wait_us := floor(extract(epoch FROM clock_timestamp() - started) * 1000000)::BIGINT;
    first_seq := head_seq + 1;
    FOR i IN 1..n LOOP
        head_seq := head_seq + 1;
        h := encode(sha256(convert_to(head_hash || p_prefix || head_seq::TEXT || ',' || p_tail[i], 'UTF8')), 'hex');
        seqs := seqs || head_seq;
        prevs := prevs || head_hash;
        hashes := hashes || h;
        head_hash := h;
    END LOOP;
    INSERT INTO audit_log (chain, seq, ts, realm, kind, actor, subject, detail, prev_hash, hash)
    SELECT p_chain, * FROM unnest(seqs, p_ts, p_realm, p_kind, p_actor, p_subject, p_detail, prevs, hashes);
    UPDATE signing_keys k SET max_exp = u.exp
      FROM unnest(p_key_realm, p_key_kid, p_key_exp) AS u(realm, kid, exp)
     WHERE k.realm = u.realm AND k.kid = u.kid AND k.max_exp < u.exp;
    UPDATE audit_heads SET seq = head_seq, hash = head_hash WHERE chain = p_chain;
END;
$$;
