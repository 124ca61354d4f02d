//! AWS workload identity: a workload proves who it is with a SigV4-signed STS
//! `GetCallerIdentity` request; Sigil checks it, forwards it to STS, canonicalises the ARN STS
//! returns, matches a binding and mints a token whose `sub` is that ARN.

pub mod arn;
pub mod binding;
pub mod client;
pub mod exchange;
pub mod request;
pub mod sign;
pub mod sts;
