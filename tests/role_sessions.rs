//! Attributable calls: through a connection with a role, each object's KMS calls run under a
//! role session of its own. The STS AssumeRole requests and the KMS requests are captured on
//! the wire (a local HTTP stand-in answers both; LocalStack runs no STS): session name, session
//! tags and ExternalId as sent, which credentials sign which object's calls, and how often STS
//! is asked — through `KmsClients` directly and through the real controller with LocalStack KMS.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::date_time::{DateTime, Format};
use keyfleet::api::{AllowedNamespaces, AwsKms, AwsKmsSpec, KeySpec};
use keyfleet::kms::{Connection, KmsClients, Requester};
use kube::Api;
use kube::api::PostParams;
use memkube::MemKube;
use serde_json::json;
use support::localstack::{self, DEFAULT_REGION, unique};
use support::operator::*;

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

/// Answers sts:AssumeRole with fresh credentials (`ASIASESSION<n>`, valid for `lifetime`),
/// recording the request; records which access key signed every other (KMS) request and
/// forwards it to `forward` (LocalStack), or answers it with an empty ListKeys page.
#[derive(Clone, Debug)]
struct StandIn {
    wire: Arc<Mutex<Wire>>,
    lifetime: Duration,
    forward: Option<SharedHttpClient>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct StandInConnector {
    stand_in: StandIn,
    forward: Option<SharedHttpConnector>,
}

impl HttpClient for StandIn {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(StandInConnector {
            stand_in: self.clone(),
            forward: self
                .forward
                .as_ref()
                .map(|f| f.http_connector(settings, components)),
        })
    }
}

impl HttpConnector for StandInConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let body = request.body().bytes().unwrap_or_default().to_vec();
        let form = parse_form(&body);
        let mut wire = self.stand_in.wire.lock().unwrap();
        if Wire::field(&form, "Action") == Some("AssumeRole") {
            wire.assume_role.push(form.clone());
            let n = wire.assume_role.len();
            let session = Wire::field(&form, "RoleSessionName").unwrap_or_default();
            let expiry = DateTime::from(SystemTime::now() + self.stand_in.lifetime)
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
            return HttpConnectorFuture::ready(Ok(response("text/xml", xml)));
        }
        // AWS4-HMAC-SHA256 Credential=<access key id>/<date>/<region>/kms/aws4_request, ...
        // (other STS calls, e.g. the AwsKms status check's GetCallerIdentity, are not KMS calls)
        let is_kms = request
            .headers()
            .get("authorization")
            .is_some_and(|a| a.contains("/kms/aws4_request"));
        let key_id = request
            .headers()
            .get("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').next())
            .unwrap_or_default()
            .to_string();
        if is_kms {
            wire.kms_signed_by.push(key_id);
        }
        match &self.forward {
            Some(forward) => forward.call(request),
            None => HttpConnectorFuture::ready(Ok(response(
                "application/x-amz-json-1.1",
                r#"{"Keys":[],"Truncated":false}"#.to_string(),
            ))),
        }
    }
}

fn response(content_type: &str, body: String) -> HttpResponse {
    let mut response = HttpResponse::new(StatusCode::try_from(200).unwrap(), SdkBody::from(body));
    response
        .headers_mut()
        .insert("content-type", content_type.to_string());
    response
}

/// Base AWS configuration of the operator: its own static credentials, every request through
/// the stand-in.
fn base_config(stand_in: StandIn, endpoint: Option<String>) -> SdkConfig {
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .http_client(stand_in)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            OPERATOR_KEY_ID,
            "operator-secret",
            None,
            None,
            "test",
        )));
    config.set_endpoint_url(endpoint);
    config.build()
}

fn stand_in(wire: Arc<Mutex<Wire>>, lifetime: Duration) -> SdkConfig {
    base_config(
        StandIn {
            wire,
            lifetime,
            forward: None,
        },
        None,
    )
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

/// More objects than the operator keeps session clients for (64, a bound on the reconciles in
/// flight rather than on the fleet): an object whose client was dropped gets a new one built
/// from its session's cached credentials, without another AssumeRole, still signing as itself.
#[tokio::test]
async fn a_dropped_session_client_is_rebuilt_without_assuming_the_role_again() {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let clients = KmsClients::from_config(stand_in(wire.clone(), Duration::from_secs(3600)));
    let conn = role_connection("1");
    let objects: Vec<Requester> = (0..100)
        .map(|i| Requester::new("payments", format!("key-{i}")))
        .collect();
    for requester in &objects {
        reconcile(&clients, &conn, requester).await;
    }
    // The first object's client is the least recently used: it has been dropped.
    reconcile(&clients, &conn, &objects[0]).await;

    let wire = wire.lock().unwrap();
    assert_eq!(
        wire.assume_role.len(),
        100,
        "one AssumeRole per object, none again"
    );
    assert_eq!(wire.kms_signed_by.len(), 101);
    assert_eq!(wire.kms_signed_by[0], "ASIASESSION1");
    assert_eq!(
        wire.kms_signed_by.last().map(String::as_str),
        Some("ASIASESSION1"),
        "the rebuilt client signs with the first object's own session"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_manages_each_key_under_its_own_session() {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let localstack = aws_smithy_http_client::Builder::new().build_http();
    let base = base_config(
        StandIn {
            wire: wire.clone(),
            lifetime: Duration::from_secs(3600),
            forward: Some(localstack),
        },
        Some(localstack::kms_endpoint().await),
    );
    let op = Operator::start_with(MemKube::new(), KmsClients::from_config(base), settings());
    let ns = unique("payments");
    let conn = unique("team-role");
    let mut spec = AwsKmsSpec::new(AllowedNamespaces::all());
    spec.role_arn = Some("arn:aws:iam::000000000000:role/keyfleet".into());
    spec.external_id = Some("ext-7f3a".into());
    Api::<AwsKms>::all(op.client.clone())
        .create(&PostParams::default(), &AwsKms::new(&conn, spec))
        .await
        .unwrap();
    for name in ["orders", "ledger"] {
        create_material_secret(&op.client, &ns, name, KeySpec::SymmetricDefault).await;
        let key = aws_key(
            name,
            DEFAULT_REGION,
            name,
            json!({"kmsRef": {"name": conn}}),
        );
        create_key(&op.keys(&ns), &key).await;
    }
    for name in ["orders", "ledger"] {
        wait_ready(&op.keys(&ns), name).await;
    }
    let calls_when_ready = wire.lock().unwrap().kms_signed_by.len();
    // Resyncs (every 2 s in tests) reconcile both keys again through the same sessions: wait
    // for at least two of them (each reads at least DescribeKey per key).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while wire.lock().unwrap().kms_signed_by.len() < calls_when_ready + 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no resync called KMS again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let wire = wire.lock().unwrap();
    // The AwsKms status check assumes the role like the keys do, under a session of the
    // connection's own (`kf..<name>`: no namespace), tagged with its name and an empty namespace.
    let check_session = format!("kf..{conn}");
    let checks: Vec<_> = wire
        .assume_role
        .iter()
        .filter(|form| Wire::field(form, "RoleSessionName") == Some(check_session.as_str()))
        .collect();
    assert!(
        !checks.is_empty(),
        "the connection check assumed the role under its own session"
    );
    for form in &checks {
        assert_eq!(Wire::field(form, "ExternalId"), Some("ext-7f3a"));
        assert_eq!(
            Wire::field(form, "Tags.member.1.Key"),
            Some("keyfleet-namespace")
        );
        assert_eq!(
            Wire::field(form, "Tags.member.1.Value").unwrap_or_default(),
            ""
        );
        assert_eq!(
            Wire::field(form, "Tags.member.2.Key"),
            Some("keyfleet-name")
        );
        assert_eq!(
            Wire::field(form, "Tags.member.2.Value"),
            Some(conn.as_str())
        );
    }
    // The keys' sessions: one per key, none per reconcile.
    let mut sessions: Vec<_> = wire
        .assume_role
        .iter()
        .filter(|form| Wire::field(form, "RoleSessionName") != Some(check_session.as_str()))
        .map(|form| {
            assert_eq!(Wire::field(form, "ExternalId"), Some("ext-7f3a"));
            assert_eq!(Wire::field(form, "Tags.member.1.Value"), Some(ns.as_str()));
            (
                Wire::field(form, "RoleSessionName").unwrap().to_string(),
                Wire::field(form, "Tags.member.2.Value")
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    sessions.sort();
    assert_eq!(
        sessions,
        [
            (format!("kf.{ns}.ledger"), "ledger".to_string()),
            (format!("kf.{ns}.orders"), "orders".to_string()),
        ],
        "one AssumeRole per key, none per reconcile"
    );
    let mut signers = wire.kms_signed_by.clone();
    signers.sort();
    signers.dedup();
    // The stand-in numbers sessions in the order it hands them out (the status check's
    // included): the keys' are the ones not named after the connection.
    let key_sessions: Vec<String> = wire
        .assume_role
        .iter()
        .enumerate()
        .filter(|(_, form)| Wire::field(form, "RoleSessionName") != Some(check_session.as_str()))
        .map(|(i, _)| format!("ASIASESSION{}", i + 1))
        .collect();
    assert_eq!(
        signers, key_sessions,
        "every KMS call ran under a key's session, none under the operator's credentials"
    );
}
