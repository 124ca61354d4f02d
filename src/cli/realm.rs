//! `sigil realm`: create, list and show realms, and set their sign-in policy.

use clap::Subcommand;

use crate::admin;
use crate::clock::UnixTime;
use crate::config::Config;
use crate::keys::{Alg, open_configured};

use super::{CliError, base_url, open_admin_store, print_json};

#[derive(Debug, Subcommand)]
pub enum RealmCommand {
    /// Create a realm with a fresh signing key.
    Create {
        /// The realm's name (1-64 of a-z 0-9 - _).
        name: String,
        /// Signing algorithm: ES256, RS256 or EdDSA.
        #[arg(long, default_value = "ES256")]
        alg: Alg,
        /// Access token lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        token_ttl: i64,
        /// The name the hosted pages show.
        #[arg(long)]
        display_name: Option<String>,
        /// Seconds a key signs before the next one takes over (default 30 days).
        #[arg(long, default_value_t = admin::realms::DEFAULT_ROTATION_PERIOD)]
        rotation_period: i64,
        /// Seconds a next key is published before it signs (default 24 h; at least the JWKS max-age).
        #[arg(long, default_value_t = admin::realms::DEFAULT_PREPUBLISH)]
        prepublish: i64,
    },
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    Show {
        /// The realm's name (1-64 of a-z 0-9 - _).
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The CAs this realm's tls_client_auth clients chain to (PEM; several files or several
    /// certificates per file allowed). Replaces the realm's current CAs.
    SetMtls {
        /// The realm's name (1-64 of a-z 0-9 - _).
        name: String,
        /// A PEM file of CA certificates (repeat for several).
        #[arg(long = "ca-file", required_unless_present = "clear")]
        ca_files: Vec<std::path::PathBuf>,
        /// Remove every CA: the realm's tls_client_auth clients are refused until CAs are set.
        #[arg(long, conflicts_with = "ca_files")]
        clear: bool,
    },
    /// Declare the realm's user attributes and how each is kept: `internal` (plain, as any
    /// undeclared attribute) or `pii_high` (encrypted column by column, with a blind index for
    /// exact lookups; never in logs or audit details). Replaces the realm's declarations; values
    /// of attributes that become pii_high are encrypted at once. A pii_high attribute holding
    /// values stays pii_high.
    SetAttributes {
        /// The realm's name (1-64 of a-z 0-9 - _).
        name: String,
        /// NAME:CLASS with CLASS internal or pii_high (repeat for several; none clears).
        #[arg(long = "attr")]
        attrs: Vec<String>,
    },
    /// Four-eyes: --require-approval makes key revocation and removing a user's second factors
    /// (and a KEK rotation) wait for a second admin's approval (on by default for the admin
    /// realm); --protected does the same for a client's credentials, deleting a client and
    /// writing or deleting a principal policy. Only the flags given change; lowering one is itself
    /// a request while it is up. With no flag, prints the guard.
    SetApproval {
        /// The realm's name (1-64 of a-z 0-9 - _).
        name: String,
        /// true or false.
        #[arg(long)]
        require_approval: Option<bool>,
        /// true or false.
        #[arg(long)]
        protected: Option<bool>,
    },
    /// Sign-in policy: lifetimes, the password + TOTP fallback, claim names.
    SetLogin {
        /// The realm's name (1-64 of a-z 0-9 - _).
        name: String,
        /// Refresh token lifetime in seconds.
        #[arg(long)]
        refresh_ttl: Option<i64>,
        /// Seconds a session may stay unused before it ends.
        #[arg(long)]
        session_idle: Option<i64>,
        /// Seconds a session lasts at most, used or not.
        #[arg(long)]
        session_absolute: Option<i64>,
        /// true or false.
        #[arg(long)]
        allow_fallback: Option<bool>,
        /// The claim that carries the user's groups (e.g. cognito:groups).
        #[arg(long)]
        groups_claim: Option<String>,
        /// attribute=claim (repeatable), e.g. party_id=custom:party_id.
        #[arg(long = "attr-claim")]
        attr_claims: Vec<String>,
        /// An https:// image shown at the top of the pages.
        #[arg(long)]
        logo_url: Option<String>,
        /// The pages' language when the browser asks for none Sigil speaks: en or de.
        #[arg(long)]
        default_locale: Option<String>,
        /// The pages' time zone (IANA name, e.g. Europe/Berlin) until the browser has told its own.
        #[arg(long)]
        default_time_zone: Option<String>,
        /// The brand colour of the pages' buttons, #rrggbb (text on it is black or white,
        /// whichever contrasts more).
        #[arg(long)]
        primary_color: Option<String>,
        /// true or false: remember a user's "continue" for a public app (RFC 8252 §8.6 advises
        /// against it; off by default).
        #[arg(long)]
        remember_consent: Option<bool>,
        /// Start from the defaults instead of the stored policy (needed when the stored one is
        /// unusable).
        #[arg(long)]
        reset: bool,
    },
}

pub(super) async fn run(
    cmd: RealmCommand,
    mut config: Config,
    now: UnixTime,
    actor: &str,
) -> Result<i32, CliError> {
    let store = open_admin_store(&mut config).await?;
    let base = base_url(&config);
    match cmd {
        RealmCommand::Create {
            name,
            alg,
            token_ttl,
            display_name,
            rotation_period,
            prepublish,
        } => {
            let (kek, created) = open_configured(&config, store.as_ref()).await?;
            if created && !matches!(config.kek, crate::config::KekSpec::AwsKms(_)) {
                eprintln!(
                    "warning: created a new key-encryption key at {}; production must provide its own",
                    config.kek
                );
            }
            let req = admin::realms::NewRealm {
                name,
                alg,
                access_token_ttl: token_ttl,
                display_name,
                rotation_period_secs: rotation_period,
                prepublish_secs: prepublish,
                jwks_max_age_secs: config.jwks_max_age_secs as i64,
            };
            let view =
                admin::realms::create(store.as_ref(), kek.as_ref(), &base, req, now, actor).await?;
            print_json(&view);
        }
        RealmCommand::List { json } => {
            let realms = admin::realms::list(store.as_ref(), &base).await?;
            if json {
                print_json(&realms);
            } else {
                for r in realms {
                    println!("{}\t{}\t{}", r.name, r.alg, r.issuer);
                }
            }
        }
        RealmCommand::SetMtls {
            name,
            ca_files,
            clear,
        } => {
            if admin::changes::credential_change_needs_approval(
                store.as_ref(),
                config.admin_realm.as_deref(),
                &name,
                "",
            )
            .await?
            {
                return Err(CliError::Other(format!(
                    "realm {name} is protected: the CAs its clients' certificates chain to are \
                     credentials, not replaced by one admin (lower the guard through a four-eyes \
                     request first)"
                )));
            }
            let pem = if clear {
                None
            } else {
                let mut all = String::new();
                for f in &ca_files {
                    let text = std::fs::read_to_string(f).map_err(|e| {
                        CliError::Other(format!("cannot read {}: {e}", f.display()))
                    })?;
                    all.push_str(&text);
                    all.push('\n');
                }
                Some(all)
            };
            let view =
                admin::realms::set_mtls(store.as_ref(), &name, pem.as_deref(), now, actor).await?;
            print_json(&view);
        }
        RealmCommand::SetApproval {
            name,
            require_approval,
            protected,
        } => {
            if store.realm(&name).await?.is_none() {
                return Err(admin::AdminError::NotFound(format!("realm {name}")).into());
            }
            let current =
                admin::changes::guard(store.as_ref(), config.admin_realm.as_deref(), &name).await?;
            // Only the bits this changes: one already at the value asked for is left out, so
            // writing it cannot undo another admin's change made meanwhile.
            let bits = crate::store::GuardBits {
                require_approval: require_approval.filter(|v| *v != current.require_approval),
                protected: protected.filter(|v| *v != current.protected),
            };
            // A raise takes effect at once, also beside a lowering, which is filed on its own.
            let part = |on: bool| crate::store::GuardBits {
                require_approval: bits.require_approval.filter(|v| *v == on),
                protected: bits.protected.filter(|v| *v == on),
            };
            let (raise, lower) = (part(true), part(false));
            let mut now_guard = current;
            if !raise.is_empty() {
                now_guard =
                    admin::changes::change_guard(store.as_ref(), &name, raise, current, now, actor)
                        .await?;
            }
            if !lower.is_empty() {
                let change = admin::changes::Change::RealmGuard {
                    realm: name.clone(),
                    require_approval: lower.require_approval,
                    protected: lower.protected,
                };
                if !super::change::gate(store.as_ref(), &config, &change, actor, now).await? {
                    if !raise.is_empty() {
                        eprintln!(
                            "raised at once: {}",
                            serde_json::to_string(&raise).unwrap_or_default()
                        );
                    }
                    return Ok(0);
                }
                now_guard = admin::changes::change_guard(
                    store.as_ref(),
                    &name,
                    lower,
                    now_guard,
                    now,
                    actor,
                )
                .await?;
            }
            print_json(&serde_json::json!({
                "realm": name,
                "require_approval": now_guard.require_approval,
                "protected": now_guard.protected,
            }));
        }
        RealmCommand::SetAttributes { name, attrs } => {
            let mut declarations = Vec::new();
            for a in &attrs {
                let (attr, class) = a.rsplit_once(':').ok_or_else(|| {
                    CliError::Other(format!("--attr {a:?}: use NAME:internal or NAME:pii_high"))
                })?;
                let class =
                    crate::identity::pii::Classification::parse(class).ok_or_else(|| {
                        CliError::Other(format!("--attr {a:?}: the class is internal or pii_high"))
                    })?;
                declarations.push((attr.to_owned(), class));
            }
            let (kek, _) = open_configured(&config, store.as_ref()).await?;
            let moved = admin::users::declare_attributes(
                store.as_ref(),
                kek.as_ref(),
                &name,
                &declarations,
                now,
                actor,
            )
            .await?;
            let now_declared = admin::users::declared_attributes(store.as_ref(), &name).await?;
            let map: std::collections::BTreeMap<String, String> =
                now_declared.into_iter().collect();
            print_json(
                &serde_json::json!({"realm": name, "attributes": map, "encrypted_now": moved}),
            );
        }
        RealmCommand::SetLogin {
            name,
            refresh_ttl,
            session_idle,
            session_absolute,
            allow_fallback,
            groups_claim,
            attr_claims,
            logo_url,
            default_locale,
            default_time_zone,
            primary_color,
            remember_consent,
            reset,
        } => {
            let realm = store
                .realm(&name)
                .await?
                .ok_or_else(|| CliError::Other(format!("realm {name} not found")))?;
            let mut ls = if reset {
                crate::identity::settings::LoginSettings::default()
            } else {
                crate::identity::settings::LoginSettings::parse(&realm.login_settings).map_err(
                    |e| CliError::Other(format!("{e}; pass --reset to start from the defaults")),
                )?
            };
            if let Some(v) = remember_consent {
                ls.remember_consent = v;
            }
            if let Some(v) = refresh_ttl {
                ls.refresh_token_ttl = v;
            }
            if let Some(v) = session_idle {
                ls.session_idle_secs = v;
            }
            if let Some(v) = session_absolute {
                ls.session_absolute_secs = v;
            }
            if let Some(v) = allow_fallback {
                ls.allow_password_fallback = v;
            }
            if let Some(v) = groups_claim {
                ls.groups_claim = v;
            }
            for kv in attr_claims {
                let (a, c) = admin::users::parse_attr(&kv)?;
                ls.attribute_claims.insert(a, c);
            }
            if let Some(u) = logo_url {
                // Stored as the URL parser writes it; validation refuses anything not https.
                ls.logo_url = Some(url::Url::parse(&u).map(|p| p.to_string()).unwrap_or(u));
            }
            if let Some(v) = default_locale {
                ls.default_locale = v;
            }
            if let Some(v) = default_time_zone {
                ls.default_time_zone = v;
            }
            if let Some(v) = primary_color {
                ls.primary_color = Some(v);
            }
            admin::users::set_login_settings(store.as_ref(), &name, &ls, now, actor).await?;
            print_json(&ls);
        }
        RealmCommand::Show { name, json } => {
            let r = admin::realms::show(store.as_ref(), &base, &name).await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "realm:   {}\nissuer:  {}\nalg:     {}\nttl:     {}s",
                    r.name, r.issuer, r.alg, r.access_token_ttl
                );
                for k in r.keys {
                    println!("key:     {} {} {}", k.kid, k.alg, k.state);
                }
            }
        }
    }
    Ok(0)
}
