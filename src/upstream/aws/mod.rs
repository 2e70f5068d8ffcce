//! Amazon Web Services as an upstream's identity provider: the standard credential chain
//! and ECR authorization tokens. Only what ECR needs, signed with `aws-sigv4`, instead of
//! the whole SDK (its runtime, HTTP stack and per-service crates).

pub mod chain;
pub mod ecr;
