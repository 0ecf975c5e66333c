//! mTLS: with `--tls-*` a node talks only to clients presenting a certificate signed by its
//! CA. Without one, or with one from another CA, or in plain text, the handshake fails and no
//! request reaches the service.

mod support;

use std::time::Duration;

use distlab_kv::client::{ClientOptions, KvClient};
use distlab_runtime::retry::RetryPolicy;
use distlab_runtime::tls::{self, TlsFiles};
use support::{metric, start};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

fn short_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        attempt_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(3),
        ..RetryPolicy::default()
    }
}

#[tokio::test]
async fn only_clients_with_a_certificate_from_the_ca_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::generate(&dir.path().join("good")).unwrap();
    let other = tls::generate(&dir.path().join("other")).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let node = start(&[
        "--id",
        "n1",
        "--tls-cert",
        &path(&certs.node_cert),
        "--tls-key",
        &path(&certs.node_key),
        "--tls-ca",
        &path(&certs.ca),
    ])
    .await;
    let addr = node.ready().grpc;

    // A client with a certificate from the node's CA works.
    let good = TlsFiles::read(&certs.client_cert, &certs.client_key, &certs.ca).unwrap();
    let client = KvClient::connect_lazy(
        addr,
        ClientOptions {
            policy: short_policy(),
            tls: Some(good),
        },
    )
    .unwrap();
    client.put("secret", "42").await.unwrap();
    assert_eq!(client.get("secret").await.unwrap().unwrap().value, b"42");

    // TLS, trusting the node, but presenting no certificate.
    let anonymous = ClientTlsConfig::new()
        .domain_name(tls::SERVER_NAME)
        .ca_certificate(Certificate::from_pem(std::fs::read(&certs.ca).unwrap()));
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(anonymous)
        .unwrap()
        .connect_lazy();
    let refused = KvClient::with_channel(channel, short_policy())
        .get("secret")
        .await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );

    // A certificate from another CA.
    let stranger = TlsFiles::read(&other.client_cert, &other.client_key, &certs.ca).unwrap();
    let client = KvClient::connect_lazy(
        addr,
        ClientOptions {
            policy: short_policy(),
            tls: Some(stranger),
        },
    )
    .unwrap();
    assert!(client.get("secret").await.is_err());

    // Plain text.
    let client = KvClient::connect_lazy(
        addr,
        ClientOptions {
            policy: short_policy(),
            tls: None,
        },
    )
    .unwrap();
    assert!(client.get("secret").await.is_err());

    // Only the good client's two requests were served.
    assert_eq!(
        metric(
            &node,
            r#"rpc_requests_total{method="kv.v1.Kv/Get",code="OK"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &node,
            r#"rpc_requests_total{method="kv.v1.Kv/Put",code="OK"}"#
        )
        .await,
        1.0
    );
}

#[test]
fn gen_certs_makes_a_working_set_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("certs");
    let target_str = target.to_str().unwrap();
    let out = support::kv(&["gen-certs", target_str], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "ca.pem",
        "node.pem",
        "node-key.pem",
        "client.pem",
        "client-key.pem",
    ] {
        assert!(target.join(name).exists(), "{name} written");
    }
    let again = support::kv(&["gen-certs", target_str], &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}
