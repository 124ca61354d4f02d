//! The evaluation rules, table-driven.

use serde_json::{Value, json};

use super::*;

const ISS: &str = "https://id.bank.example/realms/ledger";
const ROLE: &str = "arn:aws:iam::123456789012:role/ledger-reconciler";

fn claims(v: Value) -> Claims {
    let mut base =
        json!({"iss": ISS, "aud": "ledger", "exp": 2_000_000_000, "token_use": "access"});
    if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
        for (k, x) in extra {
            b.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(base).expect("claims")
}

fn service() -> Claims {
    claims(json!({"sub": "ach-processor", "client_id": "ach-processor"}))
}
fn officer() -> Claims {
    claims(json!({"sub": "u-7", "client_id": "teller-ui", "groups": ["compliance_officer"]}))
}
fn role() -> Claims {
    claims(json!({"sub": ROLE, "client_id": ROLE, "aws_arn": ROLE, "aws_account": "123456789012"}))
}

fn policy(
    name: &str,
    principal: Principal,
    effect: Effect,
    actions: &[&str],
    resources: &[&str],
    assertions: &[&str],
) -> PolicySpec {
    PolicySpec {
        name: name.into(),
        principal,
        effect,
        actions: actions.iter().map(|s| (*s).to_owned()).collect(),
        resources: resources.iter().map(|s| (*s).to_owned()).collect(),
        assertions: assertions.iter().map(|s| (*s).to_owned()).collect(),
        description: None,
    }
}

fn ledger_policies() -> Vec<PolicySpec> {
    use Effect::*;
    vec![
        policy(
            "ach-insert",
            Principal::Client("ach-processor".into()),
            Allow,
            &["db:Insert"],
            &["financial.ledger.document.*"],
            &["context.document.amount <= 10000"],
        ),
        policy(
            "ach-select",
            Principal::Client("ach-processor".into()),
            Allow,
            &["db:Select"],
            &["financial.ledger.*"],
            &[],
        ),
        policy(
            "ach-no-delete",
            Principal::Client("ach-processor".into()),
            Deny,
            &["db:Delete"],
            &["*"],
            &[],
        ),
        policy(
            "compliance-select",
            Principal::Group("compliance_officer".into()),
            Allow,
            &["db:Select"],
            &["*"],
            &[],
        ),
        policy(
            "compliance-status",
            Principal::Group("compliance_officer".into()),
            Allow,
            &["db:Update"],
            &["financial.ledger.document.status"],
            &[],
        ),
        policy(
            "aws-all",
            Principal::Aws("arn:aws:iam::123456789012:role/*".into()),
            Allow,
            &["db:*"],
            &["financial.ledger.*"],
            &[],
        ),
        policy(
            "aws-reconciler-no-write",
            Principal::Aws("arn:aws:iam::123456789012:role/ledger-reconciler".into()),
            Deny,
            &["db:Insert", "db:Update", "db:Delete"],
            &["*"],
            &[],
        ),
        policy(
            "issuer-health",
            Principal::Issuer(ISS.into()),
            Allow,
            &["svc:Health?"],
            &["health"],
            &[],
        ),
        policy(
            "broken-amount",
            Principal::Client("ach-processor".into()),
            Allow,
            &["db:Update"],
            &["financial.ledger.document.memo"],
            &["context.document.amount / 0 == 1"],
        ),
    ]
}

#[test]
fn the_rules_table() {
    let set = PolicySet::new(1, "groups", ledger_policies()).expect("compiles");
    let doc = |amount: i64| json!({"amount": amount, "status": "pending"});
    let allow = |p: &str| Decision::Allow { policy: p.into() };
    let deny = |p: Option<&str>, reason| Decision::Deny {
        policy: p.map(str::to_owned),
        reason,
    };
    use DenyReason::*;
    let cases: Vec<(&str, Claims, &str, &str, Value, Decision)> = vec![
        (
            "no matching policy",
            service(),
            "db:Truncate",
            "financial.ledger.document.tx",
            doc(1),
            deny(None, NoMatchingPolicy),
        ),
        (
            "one ALLOW",
            service(),
            "db:Select",
            "financial.ledger.document.balance",
            Value::Null,
            allow("ach-select"),
        ),
        (
            "assertion holds",
            service(),
            "db:Insert",
            "financial.ledger.document.tx",
            doc(10_000),
            allow("ach-insert"),
        ),
        (
            "false assertion skips its policy",
            service(),
            "db:Insert",
            "financial.ledger.document.tx",
            doc(10_001),
            deny(None, NoMatchingPolicy),
        ),
        (
            "DENY with no ALLOW",
            service(),
            "db:Delete",
            "financial.ledger.document.tx",
            doc(1),
            deny(Some("ach-no-delete"), DenyPolicy),
        ),
        (
            "erroring assertion denies",
            service(),
            "db:Update",
            "financial.ledger.document.memo",
            doc(1),
            deny(Some("broken-amount"), AssertionError),
        ),
        (
            "missing field errors, denies",
            service(),
            "db:Insert",
            "financial.ledger.document.tx",
            json!({"memo": "x"}),
            deny(Some("ach-insert"), AssertionError),
        ),
        (
            "group * resource",
            officer(),
            "db:Select",
            "financial.ledger.document.balance",
            Value::Null,
            allow("compliance-select"),
        ),
        (
            "group may update status",
            officer(),
            "db:Update",
            "financial.ledger.document.status",
            doc(1),
            allow("compliance-status"),
        ),
        (
            "group may not update amount",
            officer(),
            "db:Update",
            "financial.ledger.document.amount",
            doc(1),
            deny(None, NoMatchingPolicy),
        ),
        (
            "ALLOW + DENY: DENY wins over a wildcard",
            role(),
            "db:Insert",
            "financial.ledger.document.tx",
            doc(1),
            deny(Some("aws-reconciler-no-write"), DenyPolicy),
        ),
        (
            "wildcard ALLOW for the role",
            role(),
            "db:Select",
            "financial.ledger.document.tx",
            Value::Null,
            allow("aws-all"),
        ),
        (
            "? matches one character",
            service(),
            "svc:HealthZ",
            "health",
            Value::Null,
            allow("issuer-health"),
        ),
        (
            "? matches exactly one",
            service(),
            "svc:Health",
            "health",
            Value::Null,
            deny(None, NoMatchingPolicy),
        ),
        (
            "a client policy is not a user's",
            claims(json!({"sub": "u-1", "client_id": "ach-processor"})),
            "db:Select",
            "financial.ledger.x",
            Value::Null,
            deny(None, NoMatchingPolicy),
        ),
        (
            "a user's groups do not make a client",
            claims(json!({"sub": "svc", "client_id": "svc", "groups": ["compliance_officer"]})),
            "db:Select",
            "x",
            Value::Null,
            deny(None, NoMatchingPolicy),
        ),
        (
            "an ARN-named client is not an AWS principal",
            claims(json!({"sub": ROLE, "client_id": ROLE})),
            "db:Select",
            "financial.ledger.x",
            Value::Null,
            deny(None, NoMatchingPolicy),
        ),
        (
            "the role's name folds case",
            claims(
                json!({"sub": "arn:aws:iam::123456789012:role/Ledger-Reconciler", "client_id": "arn:aws:iam::123456789012:role/Ledger-Reconciler", "aws_arn": "x", "aws_account": "123456789012"}),
            ),
            "db:Delete",
            "financial.ledger.x",
            Value::Null,
            deny(Some("aws-reconciler-no-write"), DenyPolicy),
        ),
        (
            "document too wide",
            service(),
            "db:Select",
            "financial.ledger.x",
            Value::Array(vec![json!(0); 20_000]),
            deny(None, DocumentTooLarge),
        ),
    ];
    for (name, c, action, resource, document, want) in cases {
        assert_eq!(
            set.evaluate(&c, action, resource, &document),
            want,
            "{name}"
        );
    }
}

#[test]
fn an_erroring_allow_denies_even_beside_a_holding_one() {
    let set = PolicySet::new(
        1,
        "groups",
        vec![
            policy(
                "ok",
                Principal::Client("c".into()),
                Effect::Allow,
                &["a"],
                &["r"],
                &[],
            ),
            policy(
                "bad",
                Principal::Client("c".into()),
                Effect::Allow,
                &["a"],
                &["r"],
                &["context.document.x == 1"],
            ),
        ],
    )
    .expect("compiles");
    let c = claims(json!({"sub": "c", "client_id": "c"}));
    let d = set.evaluate(&c, "a", "r", &json!({}));
    assert_eq!(d.policy(), Some("bad"));
    assert!(!d.is_allowed());
}

#[test]
fn claims_reach_assertions() {
    let set = PolicySet::new(
        1,
        "groups",
        vec![policy(
            "own",
            Principal::Issuer(ISS.into()),
            Effect::Allow,
            &["db:Update"],
            &["*"],
            &[
                "context.auth.claims.sub == context.document.owner",
                "context.auth.claims.aud == 'ledger'",
                "'compliance_officer' in context.auth.claims.groups",
            ],
        )],
    )
    .expect("compiles");
    assert!(
        set.evaluate(&officer(), "db:Update", "x", &json!({"owner": "u-7"}))
            .is_allowed()
    );
    assert!(
        !set.evaluate(&officer(), "db:Update", "x", &json!({"owner": "u-8"}))
            .is_allowed()
    );
}

#[test]
fn specs_are_checked() {
    let ok = policy(
        "p",
        Principal::Client("c".into()),
        Effect::Allow,
        &["db:*"],
        &["a.b.*"],
        &[],
    );
    assert!(ok.check().is_ok());
    let mut bad = Vec::new();
    let mut p = ok.clone();
    p.name = "a b".into();
    bad.push(p);
    let mut p = ok.clone();
    p.actions = vec![];
    bad.push(p);
    let mut p = ok.clone();
    p.actions = vec!["db Insert".into()];
    bad.push(p);
    let mut p = ok.clone();
    p.resources = vec!["a\nb".into()];
    bad.push(p);
    let mut p = ok.clone();
    p.principal = Principal::Client("*".into());
    bad.push(p);
    let mut p = ok.clone();
    p.principal = Principal::Aws("role/x".into());
    bad.push(p);
    let mut p = ok.clone();
    p.principal = Principal::Issuer("ftp://x".into());
    bad.push(p);
    let mut p = ok.clone();
    p.assertions = vec!["context.request.ip == '1'".into()];
    bad.push(p);
    let mut p = ok.clone();
    p.assertions = vec!["true".into(); MAX_ASSERTIONS + 1];
    bad.push(p);
    for p in bad {
        assert!(p.check().is_err(), "{p:?} passed");
    }
    // A bundle with one bad policy is refused whole.
    let mut broken = ok.clone();
    broken.assertions = vec!["[1].all(x, x > 0)".into()];
    assert!(PolicySet::new(1, "groups", vec![ok, broken]).is_err());
}
