//! The CEL rules in the CRDs (what the API server enforces at admission), evaluated locally with
//! the same generated schema: key usage per spec, alias and tag rules, immutable fields.

use keyfleet::api::{AwsKey, AwsKeySpec, AwsKms, AwsKmsSpec};
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn key(extra: Value) -> AwsKey {
    let mut spec = json!({
        "region": "eu-west-1",
        "keySpec": "SYMMETRIC_DEFAULT",
        "keyMaterial": {"secretRef": {"name": "m", "key": "k"}},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    AwsKey::new("k", serde_json::from_value::<AwsKeySpec>(spec).unwrap())
}

/// The messages of the rules a new object breaks.
fn create_errors(extra: Value) -> Vec<String> {
    match key(extra).validate_cel() {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn update_errors(old: Value, new: Value) -> Vec<String> {
    match key(new).validate_cel_update(&key(old)) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn assert_refused(errors: Vec<String>, needle: &str) {
    assert!(
        errors.iter().any(|m| m.contains(needle)),
        "expected a rejection containing {needle:?}, got {errors:?}"
    );
}

#[test]
fn valid_manifests_pass() {
    assert_eq!(create_errors(json!({})), Vec::<String>::new());
    assert_eq!(
        create_errors(
            json!({"keySpec": "RSA_4096", "keyUsage": "ENCRYPT_DECRYPT", "alias": "alias/orders",
        "tags": {"team": "payments", "cost-center": "cc@1/2"}})
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        create_errors(json!({"keySpec": "ECC_SECG_P256K1"})),
        Vec::<String>::new()
    );
    assert_eq!(
        create_errors(json!({"keySpec": "HMAC_512", "keyUsage": "GENERATE_VERIFY_MAC"})),
        Vec::<String>::new()
    );
}

#[test]
fn key_usage_must_fit_the_key_spec() {
    assert_refused(
        create_errors(json!({"keySpec": "RSA_2048"})),
        "keyUsage is required for RSA keys",
    );
    assert_refused(
        create_errors(json!({"keySpec": "HMAC_256", "keyUsage": "ENCRYPT_DECRYPT"})),
        "keyUsage does not fit keySpec",
    );
    assert_refused(
        create_errors(json!({"keySpec": "ECC_NIST_P384", "keyUsage": "ENCRYPT_DECRYPT"})),
        "keyUsage does not fit keySpec",
    );
    assert_refused(
        create_errors(json!({"keyUsage": "SIGN_VERIFY"})),
        "keyUsage does not fit keySpec",
    );
}

#[test]
fn alias_and_tag_rules() {
    assert_refused(
        create_errors(json!({"alias": "alias/aws/s3"})),
        "alias/aws/ is reserved",
    );
    assert_refused(
        create_errors(json!({"tags": {"aws:createdBy": "x"}})),
        "reserved",
    );
    assert_refused(
        create_errors(json!({"tags": {"keyfleet.dev/owner": "x"}})),
        "reserved",
    );
    assert_refused(
        create_errors(json!({"tags": {"team": "a#b"}})),
        "tag values",
    );
    assert_refused(create_errors(json!({"tags": {"bad*key": "x"}})), "tag keys");
    let many: serde_json::Map<String, Value> =
        (0..41).map(|i| (format!("t{i}"), json!("v"))).collect();
    assert_refused(create_errors(json!({"tags": many})), "at most 40 tags");
}

#[test]
fn identity_fields_are_immutable_and_the_rest_is_not() {
    let base = json!({"keySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY"});
    let with = |extra: Value| {
        let mut v = base.clone();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    assert_refused(
        update_errors(base.clone(), with(json!({"keySpec": "RSA_3072"}))),
        "keySpec is immutable",
    );
    assert_refused(
        update_errors(base.clone(), with(json!({"keyUsage": "ENCRYPT_DECRYPT"}))),
        "keyUsage is immutable",
    );
    assert_refused(
        update_errors(base.clone(), with(json!({"region": "us-east-1"}))),
        "region is immutable",
    );
    assert_refused(
        update_errors(base.clone(), with(json!({"multiRegion": true}))),
        "multiRegion is immutable",
    );
    assert_refused(
        update_errors(base.clone(), with(json!({"kmsRef": {"name": "other"}}))),
        "kmsRef is immutable",
    );
    assert_refused(
        update_errors(
            base.clone(),
            with(json!({"keyMaterial": {"secretRef": {"name": "other", "key": "k"}}})),
        ),
        "keyMaterial is immutable",
    );
    assert_refused(
        update_errors(
            base.clone(),
            with(json!({"adoptKeyArn": "arn:aws:kms:eu-west-1:111122223333:key/x"})),
        ),
        "adoptKeyArn is immutable",
    );
    // Symmetric keys: adding the (default) usage later is still a change of an immutable field.
    assert_refused(
        update_errors(json!({}), json!({"keyUsage": "ENCRYPT_DECRYPT"})),
        "keyUsage is immutable",
    );
    let changed = with(
        json!({"alias": "alias/new", "description": "d", "tags": {"a": "b"}, "enabled": false,
        "deletionPolicy": "Retain", "pendingWindowDays": 7}),
    );
    assert_eq!(update_errors(base.clone(), changed), Vec::<String>::new());
}

#[test]
fn aws_kms_rules() {
    let kms = |mut spec: Value| {
        if spec.get("allowedNamespaces").is_none() {
            spec["allowedNamespaces"] = json!({"from": "All"});
        }
        AwsKms::new("c", serde_json::from_value::<AwsKmsSpec>(spec).unwrap())
    };
    assert!(
        kms(json!({"roleArn": "arn:aws:iam::111122223333:role/keyfleet"}))
            .validate_cel()
            .is_ok()
    );
    let errors = |spec: Value| match kms(spec).validate_cel() {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    };
    assert_refused(
        errors(json!({"roleArn": "keyfleet-role"})),
        "roleArn must be an IAM role ARN",
    );
    assert_refused(
        errors(json!({"endpointUrl": "kms.internal"})),
        "endpointUrl must be an http(s) URL",
    );
}

#[test]
fn structural_limits_are_in_the_schema() {
    let crd = serde_json::to_value(AwsKey::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["pendingWindowDays"]["minimum"].as_f64(), Some(7.0));
    assert_eq!(spec["pendingWindowDays"]["maximum"].as_f64(), Some(30.0));
    assert_eq!(spec["pendingWindowDays"]["default"], 30);
    assert_eq!(spec["alias"]["pattern"], "^alias/[a-zA-Z0-9/_-]+$");
    assert_eq!(
        spec["keySpec"]["enum"],
        json!([
            "SYMMETRIC_DEFAULT",
            "RSA_2048",
            "RSA_3072",
            "RSA_4096",
            "ECC_NIST_P256",
            "ECC_NIST_P384",
            "ECC_NIST_P521",
            "ECC_SECG_P256K1",
            "HMAC_224",
            "HMAC_256",
            "HMAC_384",
            "HMAC_512"
        ])
    );
    let required: Vec<&str> = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["spec"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for field in ["region", "keySpec", "keyMaterial"] {
        assert!(
            required.contains(&field),
            "{field} not required: {required:?}"
        );
    }
    // Every field is documented, so `kubectl explain` teaches the API.
    fn undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                let p = format!("{path}.{name}");
                if prop["description"].as_str().unwrap_or("").is_empty()
                    && !["apiVersion", "kind", "metadata"].contains(&name.as_str())
                {
                    out.push(p.clone());
                }
                undocumented(prop, &p, out);
                undocumented(&prop["items"], &format!("{p}[]"), out);
            }
        }
    }
    for crd in keyfleet::crds::all() {
        let crd = serde_json::to_value(crd).unwrap();
        let mut missing = vec![];
        undocumented(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            "",
            &mut missing,
        );
        // Conditions come from k8s-openapi and are documented there.
        missing.retain(|p| !p.starts_with(".status.conditions"));
        assert!(
            missing.is_empty(),
            "{}: fields without a description: {missing:?}",
            crd["metadata"]["name"]
        );
    }
}

#[test]
fn replica_region_and_primary_are_immutable() {
    use keyfleet::api::{AwsReplicaKey, AwsReplicaKeySpec};
    let r =
        |v: Value| AwsReplicaKey::new("r", serde_json::from_value::<AwsReplicaKeySpec>(v).unwrap());
    let old = r(json!({"primaryKeyRef": {"name": "p"}, "region": "eu-west-1"}));
    let moved = r(json!({"primaryKeyRef": {"name": "p"}, "region": "eu-central-1"}));
    let repointed = r(json!({"primaryKeyRef": {"name": "q"}, "region": "eu-west-1"}));
    let messages = |res: Result<(), kube::core::cel::ValidationErrors>| -> Vec<String> {
        res.err()
            .map(|e| e.iter().map(|x| x.message.clone()).collect())
            .unwrap_or_default()
    };
    assert_refused(
        messages(moved.validate_cel_update(&old)),
        "region is immutable",
    );
    assert_refused(
        messages(repointed.validate_cel_update(&old)),
        "primaryKeyRef is immutable",
    );
    let edited = r(
        json!({"primaryKeyRef": {"name": "p"}, "region": "eu-west-1", "alias": "alias/x", "enabled": false}),
    );
    assert!(edited.validate_cel_update(&old).is_ok());
    assert_refused(messages(r(json!({"primaryKeyRef": {"name": "p"}, "region": "eu-west-1", "alias": "alias/aws/x"})).validate_cel()), "reserved");
}

#[test]
fn policy_forms_are_exclusive_at_admission() {
    let exactly_one = "policy takes exactly one of: document, templateRef, or the shortcuts";
    for ok in [
        json!({"document": "{\"Statement\": []}"}),
        json!({"templateRef": {"name": "standard"}}),
        json!({"keyAdmins": ["alice"], "keyUsersRoles": ["app"], "externalAccounts": ["444455556666"]}),
    ] {
        assert_eq!(create_errors(json!({ "policy": ok })), Vec::<String>::new());
    }
    for bad in [
        json!({}),
        json!({"document": "{}", "templateRef": {"name": "standard"}}),
        json!({"document": "{}", "keyUsers": ["bob"]}),
        json!({"templateRef": {"name": "standard"}, "externalAccounts": ["444455556666"]}),
    ] {
        assert_refused(create_errors(json!({ "policy": bad })), exactly_one);
    }
}

#[test]
fn policy_principals_must_be_names_arns_or_account_ids() {
    let cases = [
        (
            "keyAdmins",
            "bob smith",
            "keyAdmins entries must be IAM user names or user ARNs",
        ),
        (
            "keyAdmins",
            "arn:aws:iam::111122223333:role/x",
            "keyAdmins entries must be IAM user names",
        ),
        (
            "keyAdminsRoles",
            "arn:aws:iam::1111:role/x",
            "keyAdminsRoles entries must be IAM role names",
        ),
        ("keyUsers", "*", "keyUsers entries must be IAM user names"),
        (
            "keyUsersRoles",
            "arn:aws:sts::111122223333:assumed-role/a/b",
            "keyUsersRoles entries must be IAM role names",
        ),
        (
            "externalAccounts",
            "4444",
            "externalAccounts entries must be 12-digit AWS account ids",
        ),
        (
            "externalAccounts",
            "arn:aws:iam::444455556666:user/bob",
            "externalAccounts entries must be 12-digit AWS account ids",
        ),
    ];
    for (list, value, message) in cases {
        assert_refused(create_errors(json!({"policy": { list: [value] }})), message);
    }
    assert_eq!(
        create_errors(json!({"policy": {
            "keyAdmins": ["arn:aws:iam::111122223333:user/ops/alice", "carol.oneil"],
            "keyUsersRoles": ["arn:aws-us-gov:iam::111122223333:role/app", "svc+batch@x"],
            "externalAccounts": ["arn:aws:iam::444455556666:root"]
        }})),
        Vec::<String>::new()
    );
}

#[test]
fn a_policy_template_takes_a_document_or_shortcuts() {
    use keyfleet::api::{AwsKeyPolicyTemplate, AwsKeyPolicyTemplateSpec};
    let errors = |spec: Value| {
        let spec: AwsKeyPolicyTemplateSpec = serde_json::from_value(spec).unwrap();
        match AwsKeyPolicyTemplate::new("t", spec).validate_cel() {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        }
    };
    assert_eq!(errors(json!({"document": "{}"})), Vec::<String>::new());
    assert_eq!(
        errors(json!({"keyUsersRoles": ["app"]})),
        Vec::<String>::new()
    );
    let exactly_one = "a policy template takes exactly one of: document, or the shortcuts";
    assert_refused(errors(json!({})), exactly_one);
    assert_refused(
        errors(json!({"document": "{}", "keyAdmins": ["a"]})),
        exactly_one,
    );
    assert_refused(
        errors(json!({"keyUsers": ["not a name"]})),
        "keyUsers entries must be IAM user names",
    );
}

#[test]
fn material_lifecycle_rules() {
    // Rolling validity: a duration of at most 365 days, never together with validTo.
    assert_eq!(
        create_errors(json!({"expiration": {"rollingValidity": "365d"}})),
        Vec::<String>::new()
    );
    assert_eq!(
        create_errors(json!({"expiration": {"rollingValidity": "8760h"}})),
        Vec::<String>::new()
    );
    assert_refused(
        create_errors(json!({"expiration": {"rollingValidity": "90d",
            "validTo": "2030-01-01T00:00:00Z"}})),
        "mutually exclusive",
    );
    // Rotate only where KMS can rotate.
    assert_refused(
        create_errors(json!({"keySpec": "HMAC_256",
            "keyMaterial": {"secretRef": {"name": "m", "key": "k"}, "onChange": "Rotate"}})),
        "onChange: Rotate needs keySpec SYMMETRIC_DEFAULT",
    );
    assert_eq!(
        create_errors(
            json!({"keyMaterial": {"secretRef": {"name": "m", "key": "k"}, "onChange": "Rotate"}})
        ),
        Vec::<String>::new()
    );
    // Retiring a material makes the whole key unusable in AWS: only when confirmed.
    let id = "0".repeat(64);
    let retire = json!({"keyMaterial": {"secretRef": {"name": "m", "key": "k"},
        "onChange": "Rotate", "retire": [id]}});
    assert_refused(
        create_errors(retire.clone()),
        "set keyMaterial.retireMakesKeyUnusable: true to confirm",
    );
    let mut confirmed = retire;
    confirmed["keyMaterial"]["retireMakesKeyUnusable"] = json!(true);
    assert_eq!(create_errors(confirmed), Vec::<String>::new());
    // DeleteMaterial must be able to find the key again.
    assert_refused(
        create_errors(json!({"deletionPolicy": "DeleteMaterial"})),
        "needs an alias or adoptKeyArn",
    );
    assert_eq!(
        create_errors(json!({"deletionPolicy": "DeleteMaterial", "alias": "alias/x"})),
        Vec::<String>::new()
    );
    // onChange can be set on an existing key; a new Secret only together with Rotate.
    let refuse = json!({"keyMaterial": {"secretRef": {"name": "m", "key": "k"}}});
    let rotate =
        json!({"keyMaterial": {"secretRef": {"name": "m", "key": "k"}, "onChange": "Rotate"}});
    let moved =
        json!({"keyMaterial": {"secretRef": {"name": "m2", "key": "k"}, "onChange": "Rotate"}});
    assert_eq!(
        update_errors(refuse.clone(), rotate.clone()),
        Vec::<String>::new()
    );
    assert_eq!(update_errors(rotate, moved), Vec::<String>::new());
    assert_refused(
        update_errors(
            refuse,
            json!({"keyMaterial": {"secretRef": {"name": "m", "key": "k"}, "encoding": "Hex"}}),
        ),
        "keyMaterial is immutable",
    );
}

#[test]
fn regions_are_aws_region_names() {
    use keyfleet::api::{AwsReplicaKey, AwsReplicaKeySpec};
    let key_errors = |region: &str| create_errors(json!({ "region": region }));
    let replica_errors = |region: &str| {
        let spec = json!({"primaryKeyRef": {"name": "p"}, "region": region});
        let replica = AwsReplicaKey::new(
            "r",
            serde_json::from_value::<AwsReplicaKeySpec>(spec).unwrap(),
        );
        match replica.validate_cel() {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
        }
    };
    let kms_errors = |region: &str| {
        let spec = json!({"allowedNamespaces": {"from": "All"}, "regions": ["eu-west-1", region]});
        let kms = AwsKms::new("c", serde_json::from_value::<AwsKmsSpec>(spec).unwrap());
        match kms.validate_cel() {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        }
    };
    // One region of each partition (aws, aws-us-gov, aws-cn, aws-iso, aws-iso-b, aws-iso-e,
    // aws-iso-f, aws-eusc) and the newest prefixes of the commercial one.
    for region in [
        "eu-central-1",
        "us-gov-west-1",
        "ap-southeast-4",
        "il-central-1",
        "mx-central-1",
        "ca-west-1",
        "cn-northwest-1",
        "us-iso-east-1",
        "us-isob-east-1",
        "eu-isoe-west-1",
        "us-isof-south-1",
        "eusc-de-east-1",
    ] {
        assert_eq!(key_errors(region), Vec::<String>::new(), "{region}");
        assert_eq!(replica_errors(region), Vec::<String>::new(), "{region}");
        assert_eq!(kms_errors(region), Vec::<String>::new(), "{region}");
    }
    for region in [
        "mars-1",
        "EU-West-1",
        "eu-west",
        "eu-wset-1",
        "eu-west-0",
        "eu-west-100",
        "xx-east-1",
        "us-gov-1",
        " eu-west-1",
        "eu-west-1\n",
    ] {
        assert_refused(key_errors(region), "region must be an AWS region name");
        assert_refused(replica_errors(region), "region must be an AWS region name");
        assert_refused(
            kms_errors(region),
            "regions entries must be AWS region names",
        );
    }
}

#[test]
fn generated_material_names_the_secret_to_create() {
    assert_eq!(
        create_errors(
            json!({"keyMaterial": {"secretRef": {"name": "m", "key": "k"}, "generate": {}}})
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        create_errors(json!({"keySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY",
            "keyMaterial": {"secretRef": {"name": "m", "key": "k"}, "encoding": "Hex", "generate": {}}})),
        Vec::<String>::new()
    );
    // A PKCS#11 key is generated in its token (pkcs11.generate), never into a Secret.
    assert_refused(
        create_errors(json!({"keyMaterial": {
            "pkcs11": {"tokenRef": {"name": "hsm"}, "keyLabel": "k"}, "generate": {}}})),
        "keyMaterial.generate needs secretRef",
    );
    // generate may be added to or dropped from an existing key (a Secret that exists is never
    // replaced either way).
    let plain = json!({"keyMaterial": {"secretRef": {"name": "m", "key": "k"}}});
    let generated =
        json!({"keyMaterial": {"secretRef": {"name": "m", "key": "k"}, "generate": {}}});
    assert_eq!(
        update_errors(plain.clone(), generated.clone()),
        Vec::<String>::new()
    );
    assert_eq!(update_errors(generated, plain), Vec::<String>::new());
}

#[test]
fn scheduled_rotation_needs_a_generated_symmetric_key_that_rotates() {
    let rotating = |key_spec: &str, on_change: &str| {
        json!({"keySpec": key_spec, "keyMaterial": {
            "secretRef": {"name": "m", "key": "k"},
            "onChange": on_change,
            "generate": {"rotation": {"every": "90d"}}}})
    };
    assert_eq!(
        create_errors(rotating("SYMMETRIC_DEFAULT", "Rotate")),
        Vec::<String>::new()
    );
    let needs = "keyMaterial.generate.rotation needs keySpec SYMMETRIC_DEFAULT and keyMaterial.onChange: Rotate";
    assert_refused(
        create_errors(rotating("SYMMETRIC_DEFAULT", "Refuse")),
        needs,
    );
    assert_refused(create_errors(rotating("HMAC_256", "Refuse")), needs);
}
