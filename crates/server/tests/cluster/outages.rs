//! Redis restarts, loses its data, or is cut off from a node: nothing
//! acknowledged is lost without a `herald.gap` saying so.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_redis_without_a_shared_signing_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path(), Persistence::None);
    let mut command = common::herald_command();
    command.args(["serve", "--listen", "127.0.0.1:0", "--store", &redis.url()]).current_dir(dir.path());
    let output = command.output().expect("run herald");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--jwt-secret or --jwt-public-key"), "{stderr}");
}
