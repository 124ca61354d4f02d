//! Sigil: a self-hosted OpenID Connect issuer. `startup::Application` is the entry point shared by
//! `sigil serve` and the integration tests.

pub mod admin;
pub mod admin_api;
pub mod audit;
pub mod aws;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod directory;
pub mod health;
pub mod identity;
pub mod keys;
pub mod login;
pub mod metrics;
pub mod oauth;
pub mod oidc;
pub mod outbound;
pub mod private_files;
pub mod proxy;
pub mod random;
pub mod ratelimit;
pub mod routes;
pub mod secrets;
pub mod serve;
pub mod startup;
pub mod state;
pub mod store;
pub mod tls;

pub use startup::Application;
