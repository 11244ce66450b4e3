//! The HTTP face of the model: SigV4-signed AWS JSON 1.1 requests (`X-Amz-Target:
//! TrentService.<Operation>`) in, KMS answers and error shapes out; quotas, faults and the
//! request log applied around every call.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use http::{HeaderMap, Request, Response, StatusCode};
use serde_json::Value;

use crate::error::KmsError;
use crate::faults::{self, FaultKind};
use crate::material::{WrappingKey, wrapping_key_size};
use crate::ops::{self, Ctx};
use crate::params::Params;
use crate::{RecordedRequest, Shared, lock, sts};

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let service = tower_service(shared);
    if let Err(e) = axum::serve(listener, service).await {
        tracing::warn!(error = %e, "KMS model server stopped");
    }
}

fn tower_service(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(move |req: Request<Body>| {
        let shared = shared.clone();
        async move { handle(&shared, req).await }
    })
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-requestid", "kms-model")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn error_response(e: &KmsError) -> Response<Body> {
    respond(e.status, CONTENT_TYPE, e.body())
}

/// The SigV4 credential scope of `Authorization`: (access key id, Region, service).
fn credential_scope(headers: &HeaderMap) -> Result<(String, String, String), KmsError> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            KmsError::new(
                "MissingAuthenticationTokenException",
                "Request is missing Authentication Token",
            )
        })?;
    let incomplete = || {
        KmsError::new(
            "IncompleteSignatureException",
            "The request signature does not conform to AWS SigV4 (AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request, SignedHeaders, Signature)",
        )
    };
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(incomplete)?;
    if !rest.contains("SignedHeaders=") || !rest.contains("Signature=") {
        return Err(incomplete());
    }
    let scope = rest
        .split("Credential=")
        .nth(1)
        .and_then(|s| s.split([',', ' ']).next())
        .ok_or_else(incomplete)?;
    let parts: Vec<&str> = scope.split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"]
            if !key.is_empty() && date.len() == 8 && !region.is_empty() =>
        {
            Ok((key.to_string(), region.to_string(), service.to_string()))
        }
        _ => Err(incomplete()),
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 4 << 20).await else {
        return error_response(&KmsError::new(
            "SerializationException",
            "request body unreadable",
        ));
    };
    let (access_key, region, service) = match credential_scope(&parts.headers) {
        Ok(scope) => scope,
        Err(e) => return error_response(&e),
    };
    let caller = sts::caller_arn(&lock(&shared.state), &access_key);
    if service == "sts" {
        let form = sts::form(&body);
        let now_ms = shared.now_ms();
        let answer = {
            let mut state = lock(&shared.state);
            state.tick(now_ms);
            sts::answer(&mut state, &form, &access_key, now_ms)
        };
        record(
            shared,
            RecordedRequest {
                seq: 0,
                region,
                operation: format!(
                    "sts:{}",
                    form.get("Action").map(String::as_str).unwrap_or("Unknown")
                ),
                access_key_id: access_key,
                params: serde_json::to_value(&form).unwrap_or(Value::Null),
                took_effect: answer.error.is_none(),
                error: answer.error,
                fault: None,
            },
        );
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
        return respond(status, "text/xml", answer.xml);
    }
    let operation = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("TrentService."))
        .map(str::to_string);
    let Some(operation) = operation else {
        return error_response(&KmsError::new(
            "UnknownOperationException",
            "X-Amz-Target must be TrentService.<Operation>",
        ));
    };
    let content_type_ok = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with(CONTENT_TYPE));
    let parsed: Result<serde_json::Map<String, Value>, _> = if body.is_empty() {
        Ok(serde_json::Map::new())
    } else {
        serde_json::from_slice(&body)
    };
    let mut entry = RecordedRequest {
        seq: 0,
        region: region.clone(),
        operation: operation.clone(),
        access_key_id: access_key.clone(),
        params: parsed
            .as_ref()
            .map(|m| Value::Object(m.clone()))
            .unwrap_or(Value::Null),
        error: None,
        fault: None,
        took_effect: false,
    };
    let params = match parsed {
        Ok(p) if content_type_ok => p,
        _ => {
            let e = KmsError::new(
                "SerializationException",
                format!("the body must be a JSON object sent as {CONTENT_TYPE}"),
            );
            entry.error = Some(e.code.to_string());
            record(shared, entry);
            return error_response(&e);
        }
    };

    // Quotas first (as AWS), then scheduled faults.
    let replica_region = (operation == "ReplicateKey")
        .then(|| {
            params
                .get("ReplicaRegion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .flatten();
    if let Some(q) = lock(&shared.quotas).as_mut()
        && !q.admit(
            shared.now_ms(),
            &region,
            &operation,
            replica_region.as_deref(),
        )
    {
        let e = throttling();
        entry.error = Some(e.code.to_string());
        record(shared, entry);
        return error_response(&e);
    }
    let fault = faults::take(&mut lock(&shared.faults), &operation, &region);
    entry.fault = fault;
    match fault {
        Some(FaultKind::ServerError) => {
            let e = KmsError::new(
                "KMSInternalException",
                "injected fault before the call took effect",
            );
            entry.error = Some(e.code.to_string());
            record(shared, entry);
            return error_response(&e);
        }
        Some(FaultKind::Throttle) => {
            let e = throttling();
            entry.error = Some(e.code.to_string());
            record(shared, entry);
            return error_response(&e);
        }
        Some(FaultKind::Refuse(code)) => {
            let e = KmsError::new(code, format!("kms:{operation} refused (injected fault)"));
            entry.error = Some(e.code.to_string());
            record(shared, entry);
            return error_response(&e);
        }
        Some(FaultKind::AccessDenied) => {
            let e = KmsError::new(
                "AccessDeniedException",
                format!(
                    "User: {caller} is not authorized to perform: kms:{operation} (injected fault)"
                ),
            );
            entry.error = Some(e.code.to_string());
            record(shared, entry);
            return error_response(&e);
        }
        _ => {}
    }

    // RSA key generation (seconds for RSA_4096) happens outside the state lock.
    let mut wrapping = None;
    if operation == "GetParametersForImport"
        && let Some(Ok(size)) = params
            .get("WrappingKeySpec")
            .and_then(Value::as_str)
            .map(wrapping_key_size)
    {
        match tokio::task::spawn_blocking(move || WrappingKey::generate(size)).await {
            Ok(Ok(key)) => wrapping = Some(key),
            Ok(Err(e)) => return error_response(&e),
            Err(_) => {
                return error_response(&KmsError::new(
                    "KMSInternalException",
                    "key generation panicked",
                ));
            }
        }
    }

    let result = {
        let now_ms = shared.now_ms();
        let mut state = lock(&shared.state);
        state.tick(now_ms);
        let mut ctx = Ctx {
            state: &mut state,
            region: &region,
            caller_arn: &caller,
            now_ms,
            wrapping,
        };
        ops::dispatch(&mut ctx, &operation, &Params(&params))
    };
    entry.took_effect = result.is_ok();
    let response = match (&result, fault) {
        (Ok(_), Some(FaultKind::LostAnswer)) => {
            let e = KmsError::new(
                "KMSInternalException",
                "injected fault after the call took effect",
            );
            entry.error = Some(e.code.to_string());
            error_response(&e)
        }
        (Ok(v), Some(FaultKind::CorruptAnswer(field))) if v.get(field).is_some() => {
            let mut corrupted = v.clone();
            corrupted[field] = crate::params::b64(b"corrupted by an injected fault");
            respond(StatusCode::OK, CONTENT_TYPE, corrupted.to_string())
        }
        (Ok(v), _) => respond(StatusCode::OK, CONTENT_TYPE, v.to_string()),
        (Err(e), _) => {
            entry.error = Some(e.code.to_string());
            error_response(e)
        }
    };
    record(shared, entry);
    response
}

fn throttling() -> KmsError {
    KmsError::new(
        "ThrottlingException",
        "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.",
    )
}

fn record(shared: &Shared, mut entry: RecordedRequest) {
    entry.seq = shared.seq.fetch_add(1, Ordering::SeqCst);
    lock(&shared.log).push(entry);
}
