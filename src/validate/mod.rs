//! `keyfleet validate`: offline checks of manifests, for pull requests and CI.
//!
//! Reads multi-document YAML, picks out keyfleet's kinds and the Secrets they reference, and
//! reports every problem the cluster or the operator would refuse, with file and line:
//!
//! 1. the CRD schema ([`schema`]): the same generated `openAPIV3Schema` the API server enforces,
//!    unknown fields included, plus object metadata (name, namespace);
//! 2. the CRDs' CEL rules, evaluated locally ([`cel`]);
//! 3. keyfleet's own spec validation — the very functions the controller calls
//!    ([`crate::desired`]);
//! 4. key material in referenced Secrets of the bundle, via [`crate::material::KeyMaterial`];
//! 5. relations between objects: duplicate objects, duplicate aliases in one account and
//!    region, `kmsRef` regions, Secrets in another namespace, and (with `require_refs`)
//!    references to objects that are not in the input.
//!
//! No cluster, no AWS credentials, no network. Each kind plugs in through a [`kind::KindDef`]
//! (per-object and bundle-wide checks), so a new kind adds one file and one table entry.
//!
//! The CLI (`keyfleet validate`) only reads inputs and formats the [`Report`].

mod aws_key;
mod aws_key_policy_template;
mod aws_kms;
mod aws_replica_key;
mod cel;
pub mod finding;
mod kind;
mod kinds;
mod object;
mod options;
mod pkcs11_token;
mod schema;
mod secret;
mod yaml;

use std::collections::{HashMap, HashSet};

use crate::manifest::{InputError, Source};
pub use finding::{Check, Finding, ObjectRef, Report, Summary};
pub use options::Options;

use crate::api::GROUP;
use cel::CelRules;
use kind::{Bundle, Checked, KindContext, KindDef};
use kinds::KINDS;
use object::{Object, ObjectFindings};
use schema::SchemaCheck;
use secret::SecretDoc;

/// Validates manifests. Build once (compiles the CRD schemas and CEL rules), run many times.
pub struct Validator {
    options: Options,
    kinds: Vec<KindRuntime>,
}

/// A kind with its compiled checks.
struct KindRuntime {
    kind: String,
    def: Option<&'static KindDef>,
    namespaced: bool,
    version: String,
    schema: SchemaCheck,
    cel: CelRules,
}

impl Validator {
    /// Compiles the schema and CEL rules of every CRD in [`crate::crds::all`].
    pub fn new(options: Options) -> Result<Validator, String> {
        let mut kinds = Vec::new();
        for crd in crate::crds::all() {
            let kind = crd.spec.names.kind.clone();
            // A kind without a KindDef still gets the schema and CEL checks (see
            // `kinds::tests::every_crd_kind_has_its_checks`, which keeps that from lasting).
            let def = KINDS.iter().find(|d| d.kind == kind);
            let version = crd
                .spec
                .versions
                .iter()
                .find(|v| v.storage)
                .ok_or_else(|| format!("CRD {kind} has no storage version"))?;
            let openapi = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .ok_or_else(|| format!("CRD {kind} has no openAPIV3Schema"))?;
            let openapi = serde_json::to_value(openapi).map_err(|e| e.to_string())?;
            kinds.push(KindRuntime {
                kind: kind.clone(),
                def,
                namespaced: crd.spec.scope == "Namespaced",
                version: version.name.clone(),
                schema: SchemaCheck::new(&openapi).map_err(|e| format!("{kind}: {e}"))?,
                cel: CelRules::new(&openapi).map_err(|e| format!("{kind}: {e}"))?,
            });
        }
        Ok(Validator { options, kinds })
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Parses and checks `sources`. YAML syntax errors make the input unusable: the report then
    /// holds input errors only.
    pub fn run(&self, sources: &[Source]) -> Report {
        self.run_inputs(sources, Vec::new())
    }

    /// [`Validator::run`] for what [`read_inputs`](crate::manifest::read_inputs) returned: with read errors nothing is checked,
    /// but every source is still parsed, so all syntax errors are reported at once.
    pub fn run_inputs(&self, sources: &[Source], read_errors: Vec<InputError>) -> Report {
        let mut documents = Vec::new();
        let mut input_errors = read_errors;
        for (i, source) in sources.iter().enumerate() {
            match yaml::load(i, source) {
                Ok(docs) => documents.extend(docs),
                Err(e) => input_errors.push(e),
            }
        }
        if !input_errors.is_empty() {
            return Report::unusable(input_errors);
        }
        let mut summary = Summary {
            files: sources.len(),
            ..Summary::default()
        };
        let mut findings = Vec::new();
        let mut objects = Vec::new();
        let mut secrets = Vec::new();
        let mut ours = Vec::new();
        let mut queue: Vec<yaml::Document> = documents.into_iter().rev().collect();
        while let Some(doc) = queue.pop() {
            summary.documents += 1;
            let api_version = doc.value.get("apiVersion").and_then(|v| v.as_str());
            let kind = doc.value.get("kind").and_then(|v| v.as_str());
            match (api_version, kind) {
                (Some("v1"), Some("List")) => {
                    summary.documents -= 1;
                    let items = doc
                        .value
                        .get("items")
                        .and_then(|i| i.as_array())
                        .cloned()
                        .unwrap_or_default();
                    for (i, item) in items.into_iter().enumerate().rev() {
                        queue.push(doc.item(i, item));
                    }
                }
                (Some("v1"), Some("Secret")) => {
                    let object = Object::new(doc, "Secret", true, &self.options.default_namespace);
                    secrets.push(SecretDoc::new(object));
                }
                (Some(api_version), Some(kind)) if group_of(api_version) == GROUP => {
                    let kind = kind.to_string();
                    let api_version = api_version.to_string();
                    ours.push((doc, kind, api_version));
                }
                _ => {} // not ours
            }
        }
        for (object_findings, checked) in self.check_objects(sources, ours) {
            findings.extend(object_findings);
            if let Some(checked) = checked {
                *summary
                    .objects
                    .entry(checked.object.id.kind.clone())
                    .or_default() += 1;
                objects.push(checked);
            }
        }
        summary.secrets = secrets.len();
        let bundle = Bundle {
            sources,
            options: &self.options,
            objects,
            secrets,
        };
        for def in self.kinds.iter().filter_map(|k| k.def) {
            (def.check_bundle)(&bundle, &mut findings);
        }
        kinds::check_duplicates(&bundle, &mut findings);
        finish(sources, findings, summary)
    }

    /// The per-object checks of every object of our API group, in input order, spread over the
    /// machine's cores (objects are independent; CEL evaluation dominates the run time).
    fn check_objects(
        &self,
        sources: &[Source],
        docs: Vec<(yaml::Document, String, String)>,
    ) -> Vec<(Vec<Finding>, Option<Checked>)> {
        const MIN_PER_THREAD: usize = 32;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(docs.len() / MIN_PER_THREAD)
            .min(8);
        let check = |(doc, kind, api_version): (yaml::Document, String, String)| {
            let mut findings = Vec::new();
            let checked = self.check_object(sources, doc, &kind, &api_version, &mut findings);
            (findings, checked)
        };
        if threads < 2 {
            return docs.into_iter().map(check).collect();
        }
        let per_thread = docs.len().div_ceil(threads);
        let mut chunks: Vec<Vec<_>> = Vec::with_capacity(threads);
        let mut docs = docs.into_iter();
        loop {
            let chunk: Vec<_> = docs.by_ref().take(per_thread).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| scope.spawn(|| chunk.into_iter().map(check).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    }

    /// Schema, CEL and semantic checks of one object of our API group.
    fn check_object(
        &self,
        sources: &[Source],
        doc: yaml::Document,
        kind: &str,
        api_version: &str,
        findings: &mut Vec<Finding>,
    ) -> Option<Checked> {
        let known = self.kinds.iter().find(|k| k.kind == kind);
        let namespaced = known.is_none_or(|k| k.namespaced);
        let object = Object::new(doc, kind, namespaced, &self.options.default_namespace);
        let Some(runtime) = known else {
            let kinds: Vec<&str> = self.kinds.iter().map(|k| k.kind.as_str()).collect();
            let hint = schema::closest(kind, &kinds)
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            let mut out = ObjectFindings::new(&object, sources);
            out.add_at(
                Check::Schema,
                "/kind",
                "UnknownKind",
                format!(
                    "{GROUP} has no kind {kind:?}{hint}; this keyfleet knows: {}",
                    kinds.join(", ")
                ),
            );
            findings.extend(out.finish());
            return None;
        };
        let expected = format!("{GROUP}/{}", runtime.version);
        let mut out = ObjectFindings::new(&object, sources);
        if api_version != expected {
            out.add_at(
                Check::Schema,
                "/apiVersion",
                "UnsupportedVersion",
                format!("{kind} is served as {expected}, not {api_version}"),
            );
            findings.extend(out.finish());
            return Some(Checked {
                object,
                typed: None,
            });
        }
        object::check_metadata(&object, &mut out);
        let mut value = object.doc.value.clone();
        for issue in runtime.schema.check(&mut value) {
            out.add_at(Check::Schema, &issue.pointer, issue.reason, issue.message);
        }
        // Writes through the main resource ignore `status` (status subresource), and so does
        // every later check.
        if let Some(fields) = value.as_object_mut() {
            fields.remove("status");
        }
        let typed = match runtime.def {
            Some(def) => {
                let ctx = KindContext {
                    options: &self.options,
                    cel: &runtime.cel,
                };
                (def.check_object)(&object, &value, &mut out, &ctx)
            }
            None => {
                runtime.cel.check_value(&value, &mut out);
                None
            }
        };
        findings.extend(out.finish());
        Some(Checked { object, typed })
    }
}

/// The API group of an `apiVersion` (`group/version`; core objects have none).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// Sorts findings by input order and line, and completes the summary.
fn finish(sources: &[Source], mut findings: Vec<Finding>, mut summary: Summary) -> Report {
    let order: HashMap<&str, usize> = sources
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let position = |f: &Finding| order.get(f.file.as_str()).copied().unwrap_or(usize::MAX);
    findings.sort_by(|a, b| {
        (position(a), a.line, &a.field, &a.message).cmp(&(
            position(b),
            b.line,
            &b.field,
            &b.message,
        ))
    });
    findings.dedup();
    summary.findings = findings.len();
    summary.objects_with_findings = findings
        .iter()
        .map(|f| (f.file.as_str(), &f.object))
        .collect::<HashSet<_>>()
        .len();
    Report {
        findings,
        input_errors: vec![],
        summary,
    }
}
