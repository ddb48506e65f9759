//! Integration tests: the whole HTTP API against a real SQLite file and, when
//! `FEEDLOOP_TEST_POSTGRES_URL` is set (see tests/postgres.sh), a real PostgreSQL — the same tests
//! on both backends, one module per resource. Every response any of them gets is checked against
//! the server's generated OpenAPI document (`harness::conforms`).

#[macro_use]
mod harness;

mod clients;
mod feedback;
mod hostile;
mod models;
mod openapi;
mod ops;
mod rollout;
mod rounds;
mod sealed;
mod secure;
