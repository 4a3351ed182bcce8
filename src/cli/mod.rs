//! The command-line tools beside the service: clients of its HTTP API (`payoutd submit`)
//! and operator commands on its database (`payoutd admin …`). They depend on the service's
//! modules; nothing in the service depends on them. (`payoutd reconcile` lives with the
//! reconciliation it runs: `reconcile::cli`.)

pub mod admin;
pub mod submit;
