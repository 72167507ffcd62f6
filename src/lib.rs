//! usage-authz: an Envoy `ext_authz` gRPC service that lets a request reach a
//! paid inference API only when its API key may run inference and its
//! workspace can still spend credits.
//!
//! The modules follow one `Check` call from the wire to the answer:
//!
//! - [`request`] reads the HTTP attributes Envoy forwards (method, path,
//!   query, headers, body) without interpreting them.
//! - [`routes`] decides whether a route is exempt from the check.
//! - [`keys`] finds the one API key the upstream will read, or says why there
//!   is none.
//! - [`usage_check`] asks the platform's usage-check API about a key and
//!   parses its answer into a [`decision::Verdict`].
//! - [`cache`] keeps verdicts per key digest, with one call per key under
//!   concurrency and expiry by outcome.
//! - [`decision`] holds the outcome types and the pure function that turns
//!   the request into a [`decision::Decision`].
//! - [`response`] renders a decision as Envoy's `CheckResponse`.
//! - [`service`] is the gRPC `Authorization` implementation wiring them up.
//! - [`server`] binds the listeners (Check and health, metrics, admin) and
//!   drains them on shutdown; [`config`], [`cli`] and [`telemetry`] are
//!   start-up.
//!
//! Around the request path: [`metrics`] counts decisions, cache lookups and
//! usage-check calls; [`http_endpoints`] serves them with the probes;
//! [`admin`] invalidates cache entries on request, and [`admin_cli`] is its
//! command-line client.

pub mod admin;
pub mod admin_cli;
pub mod cache;
pub mod cli;
pub mod config;
pub mod decision;
pub mod http_endpoints;
pub mod keys;
pub mod metrics;
pub mod request;
pub mod response;
pub mod routes;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod usage_check;
