//! Integration tests: the real application on a random loopback port, on SQLite and (when
//! TEST_DATABASE_URL is set) PostgreSQL.

mod helpers;
#[path = "../support/jose.rs"]
mod jose;
#[path = "../support/pki.rs"]
mod pki;
#[path = "../support/soft_passkey.rs"]
mod soft_passkey;

mod admin_api;
mod attacks;
mod audit;
mod aws;
mod backchannel_logout;
mod cli;
mod client_credentials;
mod connections;
mod database;
mod declarative;
mod discovery_jwks;
mod failover;
mod hardening;
mod kek_rotation;
mod limits;
mod login;
mod logout;
mod memory;
mod passkey;
mod policies;
mod revocation;
mod revocation_feed;
mod rotation;
mod sender_constrained;
mod startup;
mod step_up;
mod tls;
mod validator_e2e;
