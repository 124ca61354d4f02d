//! Interactive sign-in for customers and staff: realm policy, users' credentials (password,
//! TOTP, recovery codes, passkeys), sessions, and the hosted pages.

pub mod settings;
