//! Integration tests of herald-server's HTTP API: the real server on a real
//! socket (in this process, on 127.0.0.1 and a port of its own), real HTTP
//! clients (reqwest, raw TCP), SSE parsed by the independent
//! `eventsource-stream` crate; the `herald` binary as a subprocess; and
//! npm's `eventsource` (the browser's EventSource) under node.
//!
//! Test keys under `tests/keys/` were made once with openssl:
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`,
//! `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`,
//! `openssl genpkey -algorithm ED25519`, each public key with
//! `openssl pkey -pubout`.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod bad_input;
mod batch;
mod browser;
mod cli;
mod https;
mod idempotency;
mod limits;
mod publish;
mod resume;
mod streams;
mod topics;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use common::*;
use futures::StreamExt as _;
use herald_server::config::JwtKey;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

const HOUR: Duration = Duration::from_secs(3600);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
