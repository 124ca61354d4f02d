//! `*` / `?` globs: `*` matches any run of characters (including none, and `/` or `.`), `?`
//! exactly one. Linear-time backtracking with a single remembered star (no exponential blow-up on
//! patterns such as `*a*a*a*b`).

/// Whether `pattern` matches the whole of `text`, exactly (case-sensitive).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob_match_from(pattern, text, usize::MAX)
}

/// Matches a pattern over an IAM principal ARN against a canonical ARN. IAM makes role and user
/// names unique regardless of case (`Temp-Admin` and `temp-admin` cannot both exist), so the
/// resource part (`role/NAME`, `user/PATH/NAME`, `root`) compares case-insensitively: otherwise a
/// role named `Temp-Admin` would slip past a DENY on `role/temp-*`. The structure before it
/// (`arn:PARTITION:iam::ACCOUNT:`) stays exact.
pub fn principal_match(pattern: &str, arn: &str) -> bool {
    // The resource starts after the fifth `:`; a canonical ARN always has one.
    let resource_start = arn
        .match_indices(':')
        .nth(4)
        .map_or(usize::MAX, |(i, _)| i + 1);
    let resource_start = arn[..resource_start.min(arn.len())].chars().count();
    glob_match_from(pattern, arn, resource_start)
}

/// The matcher: characters of `text` at index `fold_from` (in chars) and after compare
/// ASCII-case-insensitively, those before exactly. ASCII input (the usual case) is matched on its
/// bytes without allocating.
fn glob_match_from(pattern: &str, text: &str, fold_from: usize) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        return run(pattern.as_bytes(), text.as_bytes(), fold_from, |b| {
            b as char
        });
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    run(&p, &t, fold_from, |c| c)
}

fn run<T: Copy>(p: &[T], t: &[T], fold_from: usize, ch: impl Fn(T) -> char) -> bool {
    let same = |pc: char, ti: usize| {
        let tc = ch(t[ti]);
        if ti >= fold_from {
            pc.eq_ignore_ascii_case(&tc)
        } else {
            pc == tc
        }
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (ch(p[pi]) == '?' || same(ch(p[pi]), ti)) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && ch(p[pi]) == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && ch(p[pi]) == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        let cases = [
            ("db:Insert", "db:Insert", true),
            ("db:*", "db:Insert", true),
            ("db:*", "db:", true),
            ("db:*", "dc:Insert", false),
            ("db:?nsert", "db:Insert", true),
            ("db:?nsert", "db:nsert", false),
            ("*", "", true),
            (
                "financial.ledger.*",
                "financial.ledger.document.balance",
                true,
            ),
            ("financial.ledger.*", "financial.ledgers", false),
            (
                "financial.ledger.document.?????",
                "financial.ledger.document.owner",
                true,
            ),
            (
                "financial.ledger.document.?????",
                "financial.ledger.document.status",
                false,
            ),
            (
                "*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac",
                false,
            ),
            ("DB:INSERT", "db:Insert", false),
            ("ré?ume.*", "résume.pdf", true),
            ("r?sum?", "résumé", true),
            ("r?sum", "résumé", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn arn_resource_part_folds_case() {
        let arn = "arn:aws:iam::123456789012:role/Temp-Admin";
        assert!(principal_match(
            "arn:aws:iam::123456789012:role/temp-*",
            arn
        ));
        assert!(!principal_match(
            "ARN:aws:iam::123456789012:role/temp-*",
            arn
        ));
        assert!(!principal_match("arn:aws:iam::123456789013:role/*", arn));
    }
}
