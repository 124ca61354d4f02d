//! The hosted pages of interactive sign-in for customers and staff, and their handlers: the
//! authorization request, sign-in, app confirmation, enrolment and the account page. The rules
//! they apply live in `identity`.

pub mod account;
pub mod account_totp;
pub mod authorize;
pub mod common;
pub mod consent;
pub mod enrol;
pub mod i18n;
pub mod logout;
pub mod pages_support;
pub mod passkeys;
pub mod pending;
pub mod reauth;
pub mod sealed;
pub mod session;
pub mod sign_in;
pub mod totp_view;
pub mod when;
