//! IAM ARNs from STS: parsing and canonicalisation. An assumed-role session becomes its role
//! (`arn:aws:sts::ACCT:assumed-role/ROLE/SESSION` → `arn:aws:iam::ACCT:role/ROLE`); users and the
//! account root stay as they are; anything else is refused. STS does not report a role's path, so
//! the canonical role ARN has none.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The ARN tokens carry as `sub` and bindings match.
    pub canonical: String,
    pub account: String,
    /// `role`, `user` or `root`.
    pub kind: &'static str,
    /// For an assumed role, the session name STS reported.
    pub session: Option<String>,
}

fn is_partition(p: &str) -> bool {
    // aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, ...
    p == "aws"
        || p.strip_prefix("aws-").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .split('-')
                    .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        })
}

fn is_account(a: &str) -> bool {
    a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())
}

/// IAM names: letters, digits and `+=,.@_-` (1-128).
fn is_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// Canonicalises an ARN as STS returns it in `GetCallerIdentity`.
pub fn canonicalise(arn: &str) -> Result<Principal, String> {
    if arn.len() > 512 {
        return Err("ARN too long".into());
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return Err("not an ARN".into());
    };
    if prefix != "arn" || !is_partition(partition) || !region.is_empty() || !is_account(account) {
        return Err("not an IAM principal ARN".into());
    }
    match service {
        "sts" => {
            let mut it = resource.split('/');
            match (it.next(), it.next(), it.next(), it.next()) {
                (Some("assumed-role"), Some(role), Some(session), None)
                    if is_name(role) && is_name(session) =>
                {
                    Ok(Principal {
                        canonical: format!("arn:{partition}:iam::{account}:role/{role}"),
                        account: account.to_owned(),
                        kind: "role",
                        session: Some(session.to_owned()),
                    })
                }
                _ => Err("unsupported STS principal (only assumed-role sessions)".into()),
            }
        }
        "iam" if resource == "root" => Ok(Principal {
            canonical: arn.to_owned(),
            account: account.to_owned(),
            kind: "root",
            session: None,
        }),
        "iam" => {
            let rest = resource
                .strip_prefix("user/")
                .ok_or("unsupported IAM principal")?;
            let segments: Vec<&str> = rest.split('/').collect();
            if segments.iter().all(|s| is_name(s)) {
                Ok(Principal {
                    canonical: arn.to_owned(),
                    account: account.to_owned(),
                    kind: "user",
                    session: None,
                })
            } else {
                Err("malformed IAM user ARN".into())
            }
        }
        _ => Err("not an IAM or STS ARN".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_roles_become_roles_and_users_stay_users() {
        let p = canonicalise("arn:aws:sts::123456789012:assumed-role/ledger-writer/i-0abc")
            .expect("role");
        assert_eq!(p.canonical, "arn:aws:iam::123456789012:role/ledger-writer");
        assert_eq!(p.session.as_deref(), Some("i-0abc"));
        let p = canonicalise("arn:aws-us-gov:iam::123456789012:user/ops/alice").expect("user");
        assert_eq!(
            p.canonical,
            "arn:aws-us-gov:iam::123456789012:user/ops/alice"
        );
        assert_eq!(p.kind, "user");
        assert!(canonicalise("arn:aws:iam::123456789012:root").is_ok());
    }

    #[test]
    fn anything_unparseable_is_refused() {
        for bad in [
            "",
            "arn:aws:sts::123456789012:federated-user/bob",
            "arn:aws:sts::123456789012:assumed-role/r",
            "arn:aws:sts::123456789012:assumed-role/r/s/extra",
            "arn:aws:sts::12345:assumed-role/r/s",
            "arn:aws:s3:::bucket",
            "arn:evil:iam::123456789012:user/x",
            "arn:aws:iam:us-east-1:123456789012:user/x",
            "arn:aws:iam::123456789012:user/a*b",
            "arn:aws:iam::123456789012:group/admins",
        ] {
            assert!(canonicalise(bad).is_err(), "{bad}");
        }
    }
}
