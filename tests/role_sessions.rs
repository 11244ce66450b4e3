//! Attributable calls: through a connection with a role, each object's KMS calls run under a
//! role session of its own. The STS AssumeRole requests and the KMS requests are captured on
//! the wire (a local HTTP stand-in answers both; LocalStack runs no STS): session name, session
//! tags and ExternalId as sent, which credentials sign which object's calls, and how often STS
//! is asked.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::test_util::infallible_client_fn;
use aws_smithy_types::date_time::{DateTime, Format};
use keyfleet::kms::{Connection, KmsClients, Requester};

const ROLE: &str = "arn:aws:iam::111122223333:role/platform/keyfleet";
const OPERATOR_KEY_ID: &str = "AKIAOPERATOR";

/// What the stand-in saw: every AssumeRole form (decoded pairs) and, per KMS call, the access
/// key id that signed it.
#[derive(Default)]
struct Wire {
    assume_role: Vec<Vec<(String, String)>>,
    kms_signed_by: Vec<String>,
}

impl Wire {
    fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answers sts:AssumeRole with fresh credentials (`ASIASESSION<n>`, valid for `lifetime`) and
/// every KMS call with an empty ListKeys page, recording both.
fn stand_in(wire: Arc<Mutex<Wire>>, lifetime: Duration) -> SdkConfig {
    let http = infallible_client_fn(move |request| {
        let body = request.body().bytes().unwrap_or_default().to_vec();
        let mut wire = wire.lock().unwrap();
        let form = parse_form(&body);
        if Wire::field(&form, "Action") == Some("AssumeRole") {
            wire.assume_role.push(form.clone());
            let n = wire.assume_role.len();
            let session = Wire::field(&form, "RoleSessionName").unwrap_or_default();
            let expiry = DateTime::from(SystemTime::now() + lifetime)
                .fmt(Format::DateTime)
                .unwrap();
            let xml = format!(
                r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser>
      <AssumedRoleId>AROAEXAMPLE:{session}</AssumedRoleId>
      <Arn>arn:aws:sts::111122223333:assumed-role/keyfleet/{session}</Arn>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIASESSION{n}</AccessKeyId>
      <SecretAccessKey>secret{n}</SecretAccessKey>
      <SessionToken>token{n}</SessionToken>
      <Expiration>{expiry}</Expiration>
    </Credentials>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>r{n}</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#
            );
            return http::Response::builder()
                .status(200)
                .header("content-type", "text/xml")
                .body(xml)
                .unwrap();
        }
        // AWS4-HMAC-SHA256 Credential=<access key id>/<date>/<region>/kms/aws4_request, ...
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let key_id = authorization
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .unwrap_or_default()
            .to_string();
        wire.kms_signed_by.push(key_id);
        http::Response::builder()
            .status(200)
            .header("content-type", "application/x-amz-json-1.1")
            .body(r#"{"Keys":[],"Truncated":false}"#.to_string())
            .unwrap()
    });
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .http_client(http)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            OPERATOR_KEY_ID,
            "operator-secret",
            None,
            None,
            "test",
        )))
        .build()
}

/// `application/x-www-form-urlencoded` pairs (the AWS query protocol STS speaks).
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    std::str::from_utf8(body)
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn connection(version: &str, spec: serde_json::Value) -> Connection {
    Connection {
        name: "team-a".into(),
        version: Some(version.into()),
        spec: serde_json::from_value(spec).unwrap(),
    }
}

fn role_connection(version: &str) -> Connection {
    connection(
        version,
        serde_json::json!({
            "allowedNamespaces": {"from": "All"},
            "roleArn": ROLE,
            "externalId": "ext-7f3a",
        }),
    )
}

/// One reconcile's worth of KMS: the client for the object, one call through it.
async fn reconcile(clients: &KmsClients, connection: &Connection, requester: &Requester) {
    clients
        .client(connection, "us-east-1", requester)
        .await
        .list_keys()
        .send()
        .await
        .expect("ListKeys through the stand-in");
}

#[tokio::test]
async fn each_object_gets_its_own_tagged_session_and_keeps_it() {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let clients = KmsClients::from_config(stand_in(wire.clone(), Duration::from_secs(3600)));
    let conn = role_connection("1");
    let orders = Requester::new("payments", "orders");
    let ledger = Requester::new("payments", "ledger");

    // Two reconciles of one object, then another object.
    reconcile(&clients, &conn, &orders).await;
    reconcile(&clients, &conn, &orders).await;
    reconcile(&clients, &conn, &ledger).await;

    let wire = wire.lock().unwrap();
    assert_eq!(
        wire.assume_role.len(),
        2,
        "one AssumeRole per object: {:?}",
        wire.assume_role
    );
    for (form, (namespace, name)) in wire
        .assume_role
        .iter()
        .zip([("payments", "orders"), ("payments", "ledger")])
    {
        let field = |n| Wire::field(form, n);
        assert_eq!(field("RoleArn"), Some(ROLE));
        assert_eq!(
            field("RoleSessionName"),
            Some(format!("kf.{namespace}.{name}").as_str())
        );
        assert_eq!(field("ExternalId"), Some("ext-7f3a"));
        assert_eq!(field("Tags.member.1.Key"), Some("keyfleet-namespace"));
        assert_eq!(field("Tags.member.1.Value"), Some(namespace));
        assert_eq!(field("Tags.member.2.Key"), Some("keyfleet-name"));
        assert_eq!(field("Tags.member.2.Value"), Some(name));
        assert_eq!(field("Tags.member.3.Key"), None);
    }
    // Each object's calls are signed with its own session's credentials, never the operator's.
    assert_eq!(
        wire.kms_signed_by,
        ["ASIASESSION1", "ASIASESSION1", "ASIASESSION2"]
    );
}

#[tokio::test]
async fn the_lockout_check_sees_the_session_sts_grants() {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let clients = KmsClients::from_config(stand_in(wire.clone(), Duration::from_secs(3600)));
    let conn = role_connection("1");
    let long = Requester::new("n".repeat(63), format!("{}.key", "k".repeat(200)));
    reconcile(&clients, &conn, &long).await;

    let caller = clients
        .caller(&conn, "us-east-1", &long)
        .await
        .expect("a role connection's caller is known without a call");
    let wire = wire.lock().unwrap();
    let session = Wire::field(&wire.assume_role[0], "RoleSessionName").unwrap();
    assert!(session.len() <= 64, "{session}");
    assert_eq!(
        caller.arn,
        format!("arn:aws:sts::111122223333:assumed-role/keyfleet/{session}")
    );
    assert_eq!(caller.account_id, "111122223333");
    // Long names are tagged in full (Kubernetes names fit the 256-character tag limit).
    assert_eq!(
        Wire::field(&wire.assume_role[0], "Tags.member.2.Value"),
        Some(long.name.as_str())
    );
}

#[tokio::test]
async fn an_edited_connection_or_expiring_credentials_assume_the_role_again() {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let clients = KmsClients::from_config(stand_in(wire.clone(), Duration::from_secs(3600)));
    let orders = Requester::new("payments", "orders");
    reconcile(&clients, &role_connection("1"), &orders).await;
    reconcile(&clients, &role_connection("2"), &orders).await;
    reconcile(&clients, &role_connection("2"), &orders).await;
    assert_eq!(wire.lock().unwrap().assume_role.len(), 2);

    // Credentials about to expire (within the SDK's refresh buffer) are renewed at each call,
    // under the same session name.
    let wire = Arc::new(Mutex::new(Wire::default()));
    let clients = KmsClients::from_config(stand_in(wire.clone(), Duration::from_secs(5)));
    reconcile(&clients, &role_connection("1"), &orders).await;
    reconcile(&clients, &role_connection("1"), &orders).await;
    let wire = wire.lock().unwrap();
    assert_eq!(wire.assume_role.len(), 2);
    assert!(
        wire.assume_role
            .iter()
            .all(|f| Wire::field(f, "RoleSessionName") == Some("kf.payments.orders"))
    );
    assert_eq!(wire.kms_signed_by, ["ASIASESSION1", "ASIASESSION2"]);
}

#[tokio::test]
async fn a_connection_without_a_role_uses_the_operator_credentials_for_every_object() {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let clients = KmsClients::from_config(stand_in(wire.clone(), Duration::from_secs(3600)));
    let conn = connection(
        "1",
        serde_json::json!({"allowedNamespaces": {"from": "All"}}),
    );
    reconcile(&clients, &conn, &Requester::new("payments", "orders")).await;
    reconcile(&clients, &conn, &Requester::new("billing", "invoices")).await;
    let wire = wire.lock().unwrap();
    assert!(wire.assume_role.is_empty());
    assert_eq!(wire.kms_signed_by, [OPERATOR_KEY_ID, OPERATOR_KEY_ID]);
}
