//! Secure transport, for real: a deployment whose every process reaches Kafka over SASL_SSL (SCRAM-SHA-256, a CA of
//! the fixtures' own) and Redis over TLS as an ACL user, through `mesh up` as a user would run it. It converges and
//! decides, and neither password shows anywhere a person or another user can read: the state file, the event log,
//! the logs, `mesh status`. A wrong password is refused by the broker and said so in the process's log.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_fixtures::{
    KafkaBroker, KafkaOptions, RedisOptions, RedisServer, RedisTls, SaslSslListener, TestCertificates,
};

use crate::supervisor::{DownOnDrop, files_open_to_others, inspected_topology, mesh, text, wait_until};
use crate::support::{EndsWithTest, FAST};

/// Every file under `dir` whose bytes contain `needle`, except the private files that hold secrets by design.
fn files_containing(dir: &Path, needle: &str, allowed: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        if path.is_dir() {
            todo.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if allowed.contains(&name) {
            continue;
        }
        if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes())) {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn a_deployment_over_sasl_ssl_and_redis_tls_keeps_its_passwords_to_itself() {
    let tmp = tempfile::tempdir().expect("tmp");
    let certs = TestCertificates::generate(&tmp.path().join("certs")).expect("certificates");
    let kafka_password = format!("kafka-pw-{:x}", rand::random::<u64>());
    let redis_password = format!("redis-pw-{:x}", rand::random::<u64>());
    let broker = KafkaBroker::start(KafkaOptions {
        sasl_ssl: Some(SaslSslListener {
            port: None,
            username: "mesh".into(),
            password: kafka_password.clone(),
            keystore_pem: certs.server_keystore_pem.clone(),
        }),
        ..KafkaOptions::default()
    })
    .expect("a broker with a SASL_SSL listener");
    let redis = RedisServer::start(RedisOptions {
        tls: Some(RedisTls {
            port: None,
            username: "mesh".into(),
            password: redis_password.clone(),
            certificates: certs.clone(),
        }),
        ..RedisOptions::default()
    })
    .expect("a redis-server with TLS and an ACL user");
    let kafka = broker.sasl_ssl_bootstrap().expect("SASL_SSL listener");
    let redis_url = redis.tls_url().expect("TLS port");
    let ca = certs.ca_pem.display().to_string();
    let secure_flags = [
        "--kafka",
        kafka.as_str(),
        "--kafka-security-protocol",
        "sasl_ssl",
        "--kafka-sasl-username",
        "mesh",
        "--kafka-ca-file",
        ca.as_str(),
        "--redis",
        redis_url.as_str(),
        "--redis-username",
        "mesh",
        "--redis-ca-file",
        ca.as_str(),
    ];

    let dir = tmp.path().join("state");
    let _down = DownOnDrop(&dir);
    let mut up = Command::new(env!("CARGO_BIN_EXE_mesh"));
    up.args(["up", "-d", "--state-dir"])
        .arg(&dir)
        .args(secure_flags)
        .envs(FAST.iter().copied())
        .env("MESH_KAFKA_SASL_PASSWORD", &kafka_password)
        .env("MESH_REDIS_PASSWORD", &redis_password)
        .stdin(Stdio::null());
    let out = up.output().expect("mesh up runs");
    assert!(
        out.status.success(),
        "mesh up -d over TLS:\n{}\n{}",
        text(&out),
        std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default()
    );

    // It works: the managers' snapshots in the TLS Redis show four live agents and decisions, read by `mesh inspect`
    // from the deployment's own record of where its store is and which CA it trusts.
    wait_until("four live agents and a decision, over TLS", Duration::from_secs(60), || {
        let inspect = mesh(&dir, &["inspect", "--json"]);
        assert!(inspect.status.success(), "mesh inspect: {}", text(&inspect));
        let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
        inspected_topology(&json).agents == Some(4) && json["decisions_stored"].as_u64().is_some_and(|n| n > 0)
    });
    let status = mesh(&dir, &["status"]);
    assert!(status.status.success(), "{}", text(&status));
    let shown = text(&status);
    assert!(shown.contains("rediss://mesh:***@"), "the store shown without its password: {shown}");
    assert!(shown.contains("mesh: 4 live agents"), "health read from the TLS store: {shown}");

    // Neither password is in anything but the two private files that carry them to the processes.
    for password in [&kafka_password, &redis_password] {
        assert!(!shown.contains(password.as_str()), "mesh status shows a password");
        let leaks = files_containing(&dir, password, &["kafka.properties", "store.url"]);
        assert!(leaks.is_empty(), "a password is written in {leaks:?}");
    }
    let open = files_open_to_others(&dir);
    assert!(open.is_empty(), "readable by others: {open:?}");

    // A wrong password: the broker refuses it, and the process says why instead of waiting in silence.
    let log = tmp.path().join("wrong.log");
    let file = std::fs::File::create(&log).expect("log");
    let mut wrong = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["agent", "--name", "intruder", "--role", "sales"])
        .args(secure_flags)
        .env("MESH_KAFKA_SASL_PASSWORD", "not-the-password")
        .env("MESH_REDIS_PASSWORD", &redis_password)
        .env("MESH_SECRET_FILE", dir.join("secret"))
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .ends_with_test()
        .spawn()
        .expect("mesh agent runs");
    wait_until("the authentication failure reported", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Authentication failed"))
    });
    let _ = wrong.kill();
    let _ = wrong.wait();
    assert!(!std::fs::read_to_string(&log).unwrap_or_default().contains("not-the-password"), "the password is logged");
    let down = mesh(&dir, &["down"]);
    assert!(down.status.success(), "{}", text(&down));
}
