//! envoi's integration tests, one crate (`cargo test --test it`) so that `support/` is built
//! once. Unix only: the outbox crash tests SIGKILL envoi, and the out-of-process peers are
//! found through /proc and unix permissions.
#![cfg(unix)]

mod support;

mod action;
mod api;
mod api_reach;
mod attachments;
mod batch;
mod bulk;
mod check;
mod config;
mod data;
mod deadline;
mod dkim;
mod docs;
mod guides;
mod harness;
mod install;
mod interop;
mod ledger;
mod log;
mod oauth;
mod outbox;
mod policy;
mod reach;
mod reference;
mod reliability;
mod routes;
mod send;
mod sendmail;
mod sent_copy;
mod spam;
mod spine;
mod spool;
mod trust;
mod wire;
mod workers;
