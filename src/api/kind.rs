//! What every keyfleet kind declares alike: derives, API group and version, the `keyfleet`
//! category, CEL, the Ready / Reason / Age printer columns (`keyfleet_kind!`), and the columns
//! of the key kinds (`keyfleet_key_kind!`).

/// Declares a keyfleet kind's spec and status structs with what every kind shares: the derives,
/// camelCase field names, unset `Option` fields left out when serialized
/// (`skip_serializing_none`), the API group and version, the `keyfleet` category, CEL rules,
/// and the printer columns `Ready`, `Reason` and `Age`. The kind gives its own `kube(...)`
/// arguments (kind, short name, scope, status, doc; kube derives the singular and plural names
/// from the kind) and its own columns: those shown before Ready, between Reason and Age, and
/// after Age. The kind's name comes first and is recorded on the spec type ([`KindName`]), so
/// code that needs it as a constant reads the one declaration.
///
/// [`KindName`]: crate::api::KindName
macro_rules! keyfleet_kind {
    (
        kube(kind = $kind:literal, $($kube:tt)*),
        columns_before($($before:tt)*),
        columns_between($($between:tt)*),
        columns_after($($after:tt)*),
        $(#[$attr:meta])*
        $vis:vis struct $name:ident $body:tt
        $(#[$status_attr:meta])*
        $status_vis:vis struct $status:ident $status_body:tt
    ) => {
        #[serde_with::skip_serializing_none]
        #[derive(
            kube::CustomResource,
            kube::KubeSchema,
            Clone,
            Debug,
            PartialEq,
            serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(rename_all = "camelCase")]
        #[kube(group = "kms.keyfleet.dev", version = "v1alpha1", category = "keyfleet", cel, kind = $kind, $($kube)*)]
        #[kube($($before)*)]
        #[kube(
            printcolumn(
                name = "Ready",
                type_ = "string",
                json_path = ".status.conditions[?(@.type==\"Ready\")].status"
            ),
            printcolumn(
                name = "Reason",
                type_ = "string",
                json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
            ),
        )]
        #[kube($($between)*)]
        #[kube(printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"))]
        #[kube($($after)*)]
        $(#[$attr])*
        $vis struct $name $body

        impl $crate::api::KindName for $name {
            const KIND: &'static str = $kind;
        }

        #[serde_with::skip_serializing_none]
        #[derive(
            Clone,
            Debug,
            Default,
            PartialEq,
            serde::Serialize,
            serde::Deserialize,
            schemars::JsonSchema,
        )]
        #[serde(rename_all = "camelCase")]
        $(#[$status_attr])*
        $status_vis struct $status $status_body
    };
}

/// Declares a kind that manages one KMS key (AwsKey, AwsReplicaKey) with `keyfleet_kind!`,
/// namespaced (tenancy rests on the namespace), and the columns such kinds share: the kind's
/// first column, then Region and State before Ready; ARN and Materials (wide output) after Age,
/// then the kind's own wide columns.
macro_rules! keyfleet_key_kind {
    (
        kube(kind = $kind:literal, $($kube:tt)*),
        first_column($($first:tt)*),
        columns_after($($after:tt)*),
        $($items:tt)*
    ) => {
        keyfleet_kind! {
            kube(kind = $kind, namespaced, $($kube)*),
            columns_before(
                $($first)*,
                printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
                printcolumn(name = "State", type_ = "string", json_path = ".status.keyState"),
            ),
            columns_between(),
            columns_after(
                printcolumn(name = "ARN", type_ = "string", json_path = ".status.arn", priority = 1),
                printcolumn(name = "Materials", type_ = "integer", json_path = ".status.materialCount", priority = 1),
                $($after)*
            ),
            $($items)*
        }
    };
}
