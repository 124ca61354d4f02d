-- AWS exchange challenges are anonymous and short-lived: expired ones are pruned by expiry on
-- every issue, and the live ones of a realm are counted against aws_max_live_challenges. Without
-- these indexes both were full scans of a table a flood could grow.
CREATE INDEX aws_challenges_expires_at ON aws_challenges (expires_at);
CREATE INDEX aws_challenges_realm_expires_at ON aws_challenges (realm, expires_at);
