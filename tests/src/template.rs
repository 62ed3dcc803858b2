//! The SAM template (infra/template.yaml) checked against the code and the API document:
//! every route wired to the function that serves it, every function's environment enough for
//! `Config::from_lookup(Mode::Lambda)`, and IAM that never grants update or delete on the audit
//! table, delete on blobs, or any action a function's code does not call.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_yaml_ng::Value;

/// Repository root (this crate lives in tests/).
fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Parse a YAML file, turning CloudFormation short forms (`!Ref X`, `!GetAtt A.B`, `!Sub s`) into the
/// plain strings "!Ref X", "!GetAtt A.B", "!Sub s" so they can be compared.
pub fn load_yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    untag(serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}")))
}

/// The table references a point-in-time restore switches (condition, the restored table's form, the
/// stack's own table's form): `!If [condition, restored, own]` is read as `own`, so every other check
/// applies to it unchanged, and nothing else may stand in an `!If` beside a table.
const RESTORE_SWITCHES: [(&str, &str, &str); 8] = [
    ("UseRestoredMeta", "!Ref RestoredMetaTableName", "!Ref MetaTable"),
    ("UseRestoredAudit", "!Ref RestoredAuditTableName", "!Ref AuditTable"),
    (
        "UseRestoredMeta",
        "!Sub arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${RestoredMetaTableName}",
        "!GetAtt MetaTable.Arn",
    ),
    (
        "UseRestoredAudit",
        "!Sub arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${RestoredAuditTableName}",
        "!GetAtt AuditTable.Arn",
    ),
    (
        "UseRestoredAudit",
        "!Sub arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${RestoredAuditTableName}/index/by-day-shard",
        "!Sub ${AuditTable.Arn}/index/by-day-shard",
    ),
    (
        "UseRestoredAudit",
        "!Sub arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${RestoredAuditTableName}/stream/*",
        "!Sub ${AuditTable.Arn}/stream/*",
    ),
    (
        "UseRestoredAudit",
        "!Sub arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${RestoredAuditTableName}/index/by-action",
        "!Sub ${AuditTable.Arn}/index/by-action",
    ),
    (
        "UseRestoredAudit",
        "!Sub arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${RestoredAuditTableName}/index/by-actor",
        "!Sub ${AuditTable.Arn}/index/by-actor",
    ),
];

fn untag(v: Value) -> Value {
    match v {
        Value::Tagged(t) if t.tag == "!If" => {
            let branches = untag(t.value);
            let text: Vec<String> =
                branches.as_sequence().into_iter().flatten().filter_map(|b| b.as_str().map(str::to_owned)).collect();
            match RESTORE_SWITCHES.iter().find(|(c, r, o)| text == [*c, *r, *o]) {
                Some((_, _, own)) => Value::String((*own).to_owned()),
                None => {
                    assert!(
                        !text.iter().any(|b| b.contains("Table")),
                        "a table reference in an !If that is not a restore switch: {text:?}"
                    );
                    branches
                }
            }
        }
        Value::Tagged(t) => match t.value {
            Value::String(s) => Value::String(format!("{} {s}", t.tag)),
            other => untag(other),
        },
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(untag).collect()),
        Value::Mapping(m) => Value::Mapping(m.into_iter().map(|(k, v)| (k, untag(v))).collect()),
        other => other,
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A string or a list of strings (IAM `Action` and `Resource` take both forms).
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(str_of).collect(),
        other => vec![str_of(other)],
    }
}

/// One Allow statement of a function's policy.
pub struct Statement {
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    /// `ForAllValues:StringLike` `dynamodb:LeadingKeys`: the partition keys its item writes may touch
    /// (empty: unscoped). Any other condition fails the test (it would not be checked here).
    pub leading_keys: Vec<String>,
}

/// One `AWS::Serverless::Function` of the template, named by its code directory (`build/<name>/`).
pub struct TemplateFunction {
    pub name: String,
    pub logical_id: String,
    pub env: BTreeMap<String, String>,
    /// (method, path) of every HttpApi event.
    pub routes: BTreeSet<(String, String)>,
    /// Every policy statement.
    pub statements: Vec<Statement>,
}

pub struct Template {
    pub doc: Value,
}

impl Template {
    pub fn load() -> Template {
        Template { doc: load_yaml("infra/template.yaml") }
    }

    pub fn resources(&self) -> impl Iterator<Item = (String, &Value)> {
        self.doc["Resources"].as_mapping().expect("Resources").iter().map(|(k, v)| (str_of(k), v))
    }

    pub fn resource(&self, id: &str) -> &Value {
        &self.doc["Resources"][id]
    }

    /// The default of a parameter, as the functions would see it.
    fn parameter_default(&self, name: &str) -> Option<String> {
        self.doc["Parameters"].get(name).map(|p| str_of(&p["Default"]))
    }

    pub fn functions(&self) -> Vec<TemplateFunction> {
        let globals = &self.doc["Globals"]["Function"]["Environment"]["Variables"];
        self.resources()
            .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
            .map(|(logical_id, r)| {
                let p = &r["Properties"];
                let code = p["CodeUri"].as_str().expect("CodeUri");
                let name = code
                    .strip_prefix("build/")
                    .and_then(|c| c.strip_suffix("/bootstrap.zip"))
                    .unwrap_or_else(|| panic!("{logical_id}: CodeUri {code} is not build/<function>/bootstrap.zip"))
                    .to_owned();
                let mut env = BTreeMap::new();
                for vars in [globals, &p["Environment"]["Variables"]] {
                    for (k, v) in vars.as_mapping().into_iter().flatten() {
                        env.insert(str_of(k), str_of(v));
                    }
                }
                let routes = p["Events"]
                    .as_mapping()
                    .into_iter()
                    .flatten()
                    .filter(|(_, e)| e["Type"].as_str() == Some("HttpApi"))
                    .map(|(id, e)| {
                        let ep = &e["Properties"];
                        assert_eq!(ep["ApiId"].as_str(), Some("!Ref HttpApi"), "{logical_id}.{id:?}: not on HttpApi");
                        assert_eq!(ep["PayloadFormatVersion"].as_str(), Some("2.0"), "{logical_id}.{id:?}: payload");
                        (str_of(&ep["Method"]), str_of(&ep["Path"]))
                    })
                    .collect();
                let statements = p["Policies"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .flat_map(|policy| policy["Statement"].as_sequence().expect("inline Statement list").iter())
                    // A statement under a condition (`!If [Cond, statement, !Ref AWS::NoValue]`): as
                    // deployed with the condition true (the larger grant is the one checked).
                    .map(|s| match s.as_sequence().map(Vec::as_slice) {
                        Some([_, statement, none]) if none.as_str() == Some("!Ref AWS::NoValue") => statement,
                        _ => s,
                    })
                    .map(|s| {
                        assert_eq!(s["Effect"].as_str(), Some("Allow"), "{logical_id}: only Allow statements");
                        let leading_keys = match s.get("Condition") {
                            None => Vec::new(),
                            Some(c) => {
                                let keys = c.as_mapping().map(|m| m.len());
                                assert_eq!(keys, Some(1), "{logical_id}: only a LeadingKeys condition: {c:?}");
                                strings(&c["ForAllValues:StringLike"]["dynamodb:LeadingKeys"])
                            }
                        };
                        Statement { actions: strings(&s["Action"]), resources: strings(&s["Resource"]), leading_keys }
                    })
                    .collect();
                TemplateFunction { name, logical_id, env, routes, statements }
            })
            .collect()
    }

    /// A function's environment as Lambda would hand it over: references become recognisable
    /// placeholders ("<BlobBucket>"), parameter references their defaults.
    pub fn resolved_env(&self, f: &TemplateFunction) -> BTreeMap<String, String> {
        f.env
            .iter()
            .map(|(k, v)| {
                let value = if let Some(target) = v.strip_prefix("!Ref ") {
                    self.parameter_default(target).unwrap_or_else(|| format!("<{target}>"))
                } else if let Some(target) = v.strip_prefix("!GetAtt ") {
                    format!("<{target}>")
                } else {
                    v.clone()
                };
                (k.clone(), value)
            })
            .collect()
    }
}

/// Every (method, path) → function pair in docs/openapi.yaml that Lambda serves (the `/_local`
/// paths exist only in `helix serve`), from each operation's `x-helix-function`.
pub fn openapi_routes() -> BTreeSet<(String, String, String)> {
    let doc = load_yaml("docs/openapi.yaml");
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        let path = str_of(path);
        if path.starts_with("/_local") {
            continue;
        }
        for (method, op) in item.as_mapping().expect("path item") {
            let method = str_of(method);
            if !["get", "put", "post", "head", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let function = op["x-helix-function"]
                .as_str()
                .unwrap_or_else(|| panic!("docs/openapi.yaml: {method} {path} has no x-helix-function"));
            out.insert((method.to_uppercase(), path.clone(), function.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use helix_core::config::{BlobBackend, Config, MetaBackend, Mode, SignerBackend};
    use helix_core::http::route::ROUTES;

    fn code_routes() -> BTreeSet<(String, String, String)> {
        ROUTES.iter().map(|r| (r.method.to_owned(), r.path.to_owned(), r.function.as_str().to_owned())).collect()
    }

    fn template_routes(t: &Template) -> BTreeSet<(String, String, String)> {
        t.functions().into_iter().flat_map(|f| f.routes.into_iter().map(move |(m, p)| (m, p, f.name.clone()))).collect()
    }

    /// Every `reason` the code can answer (the classify table in shared/src/http/problem.rs, and the
    /// 409 reasons of governance conflicts) is in docs/openapi.yaml's Problem schema: a reason missing
    /// there is a response that schema-checking clients (and the fuzz suite) reject.
    #[test]
    fn every_reason_the_code_answers_is_in_the_openapi_problem_schema() {
        let doc = load_yaml("docs/openapi.yaml");
        let listed: BTreeSet<String> = doc["components"]["schemas"]["Problem"]["properties"]["reason"]["enum"]
            .as_sequence()
            .expect("Problem.reason.enum")
            .iter()
            .map(str_of)
            .collect();
        let mut answered = BTreeSet::new();
        let classify = std::fs::read_to_string(repo_file("shared/src/http/problem.rs")).unwrap();
        for part in classify.split("=> (").skip(1) {
            // `(status, "reason")`: the reason is the string right after the status.
            let mut pieces = part.split('"');
            if pieces.next().is_some_and(|status| status.ends_with(", "))
                && let Some(reason) = pieces.next()
            {
                answered.insert(reason.to_owned());
            }
        }
        let mut domain = std::fs::read_to_string(repo_file("shared/src/domain/governance.rs")).unwrap();
        for entry in std::fs::read_dir(repo_file("shared/src/governance")).unwrap() {
            domain += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
        }
        for part in domain.split("reason: \"").skip(1) {
            answered.insert(part.split('"').next().unwrap().to_owned());
        }
        assert!(answered.len() > 30, "the classify table was not read: {answered:?}");
        let missing: Vec<_> = answered.difference(&listed).collect();
        assert!(missing.is_empty(), "reasons the code answers but docs/openapi.yaml does not list: {missing:?}");
    }

    #[test]
    fn every_route_is_wired_to_the_function_that_serves_it() {
        let t = Template::load();
        let wired = template_routes(&t);
        // The API's route table, and the console's two routes (its assets; no API, so not in the table).
        let mut served = code_routes();
        served.extend(
            helix_core::console::ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned(), "console".into())),
        );
        assert_eq!(wired, served, "template routes differ from the route table and the console's (left: template)");
        assert_eq!(openapi_routes(), code_routes(), "docs/openapi.yaml differs from the route table (left: doc)");
        // Exactly one HTTP API, and every function crate of the workspace is deployed.
        let apis = t.resources().filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::HttpApi")).count();
        assert_eq!(apis, 1);
        let crates: BTreeSet<String> = crate::runtime_api::functions().into_iter().collect();
        let deployed: BTreeSet<String> = t.functions().into_iter().map(|f| f.name).collect();
        assert_eq!(deployed, crates, "every functions/<name> crate has one template function");
        // audit-export has no route: EventBridge Scheduler runs it daily, after midnight UTC, with the
        // scheduled time as `time` (the function exports the day before it).
        let export = t.functions().into_iter().find(|f| f.name == "audit-export").expect("audit-export");
        assert!(export.routes.is_empty());
        let schedule = &t.resource(&export.logical_id)["Properties"]["Events"]["Daily"];
        assert_eq!(schedule["Type"].as_str(), Some("ScheduleV2"));
        assert_eq!(schedule["Properties"]["ScheduleExpression"].as_str(), Some("cron(15 0 * * ? *)"));
        assert_eq!(schedule["Properties"]["ScheduleExpressionTimezone"].as_str(), Some("UTC"));
        let input: serde_json::Value = serde_json::from_str(schedule["Properties"]["Input"].as_str().unwrap()).unwrap();
        assert_eq!(input["time"], "<aws.scheduler.scheduled-time>");
        // Two stacks in one account: the schedule's name is generated (SAM issue 3109).
        assert_eq!(schedule["Properties"]["OmitName"].as_bool(), Some(true));
        // A run that fails after Lambda's retries is kept, not dropped, and raises an alarm.
        let invoke = &t.resource(&export.logical_id)["Properties"]["EventInvokeConfig"];
        assert_eq!(invoke["MaximumRetryAttempts"].as_u64(), Some(2));
        assert_eq!(invoke["DestinationConfig"]["OnFailure"]["Type"].as_str(), Some("SQS"));
        assert_eq!(
            invoke["DestinationConfig"]["OnFailure"]["Destination"].as_str(),
            Some("!GetAtt AuditExportFailures.Arn")
        );
        assert_eq!(t.resource("AuditExportFailures")["Type"].as_str(), Some("AWS::SQS::Queue"));
        let alarm = &t.resource("AuditExportErrorAlarm")["Properties"];
        assert_eq!(alarm["MetricName"].as_str(), Some("Errors"));
        assert_eq!(alarm["Dimensions"][0]["Value"].as_str(), Some(&*format!("!Ref {}", export.logical_id)));
    }

    /// CloudWatch and CodeDeploy limits as AWS documents them (moto enforces neither; docs/decisions.md,
    /// "Alarms within AWS's limits"): an alarm on metric math references at most 10 metrics (a hard
    /// limit) in at most 20 queries; a deployment group watches at most 10 alarms. And every function has
    /// an errors alarm its own deployments roll back on.
    #[test]
    fn alarms_stay_within_aws_limits_and_every_function_deploy_watches_its_own() {
        let t = Template::load();
        for (id, r) in t.resources().filter(|(_, r)| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm")) {
            let Some(queries) = r["Properties"]["Metrics"].as_sequence() else { continue };
            let metrics = queries.iter().filter(|q| !q["MetricStat"].is_null()).count();
            let expressions = queries.iter().filter(|q| !q["Expression"].is_null()).count();
            assert!(metrics <= 10, "{id}: {metrics} metrics; an alarm on metric math references at most 10");
            assert!(expressions <= 10 && queries.len() <= 20, "{id}: {} queries, at most 20", queries.len());
        }
        let global: Vec<String> = strings(&t.doc["Globals"]["Function"]["DeploymentPreference"]["Alarms"]);
        for f in t.functions() {
            let listed = &t.resource(&f.logical_id)["Properties"]["DeploymentPreference"]["Alarms"];
            let own = if listed.is_null() { Vec::new() } else { strings(listed) };
            assert_eq!(own.len(), 1, "{}: its own errors alarm, listed with the function", f.logical_id);
            let alarm = own[0].strip_prefix("!Ref ").unwrap_or_else(|| panic!("{}: {own:?}", f.logical_id));
            let watched = t.resource(alarm).to_owned();
            let text = serde_yaml_ng::to_string(&watched).unwrap();
            assert!(
                text.contains(&format!("!Ref {}", f.logical_id)) && text.contains("Errors"),
                "{alarm} watches the errors of {}",
                f.logical_id
            );
            // SAM appends a function's alarms to the Globals' list: one deployment group watches both.
            assert!(global.len() + own.len() <= 10, "{}: more than 10 alarms in its deployment group", f.logical_id);
        }
    }

    /// notify (docs/notifications.md): the audit table's stream (NEW_IMAGE) to the live alias, filtered
    /// to exactly the published actions, with partial batch failures, bounded and bisected retries and
    /// an on-failure queue; not mapped while the stack runs on a restored audit table (it has no
    /// stream); its role may put events on the template's bus only.
    #[test]
    fn notify_reads_the_audit_stream_filtered_to_the_published_actions_with_bounded_retries() {
        let t = Template::load();
        let spec = &t.resource("AuditTable")["Properties"]["StreamSpecification"];
        assert_eq!(spec["StreamViewType"].as_str(), Some("NEW_IMAGE"));
        let m = t.resource("NotifyStreamMapping");
        assert_eq!(m["Condition"].as_str(), Some("NotifyFromAuditStream"));
        assert!(t.doc["Conditions"].get("NotifyFromAuditStream").is_some());
        let p = &m["Properties"];
        assert_eq!(p["FunctionName"].as_str(), Some("!Ref NotifyFunction.Alias"));
        assert_eq!(p["EventSourceArn"].as_str(), Some("!GetAtt AuditTable.StreamArn"));
        assert_eq!(strings(&p["FunctionResponseTypes"]), ["ReportBatchItemFailures"]);
        assert_eq!(p["BisectBatchOnFunctionError"].as_bool(), Some(true));
        assert!(p["MaximumRetryAttempts"].as_u64().is_some_and(|n| (1..=10).contains(&n)));
        assert_eq!(p["DestinationConfig"]["OnFailure"]["Destination"].as_str(), Some("!GetAtt NotifyFailures.Arn"));
        let pattern: serde_json::Value =
            serde_json::from_str(p["FilterCriteria"]["Filters"][0]["Pattern"].as_str().unwrap()).unwrap();
        assert_eq!(pattern["eventName"], serde_json::json!(["INSERT"]));
        assert_eq!(
            pattern["dynamodb"]["NewImage"]["action"]["S"],
            serde_json::json!(helix_core::domain::notification::NOTIFIED_ACTIONS),
            "the mapping's filter is the published actions"
        );
        let notify = t.functions().into_iter().find(|f| f.name == "notify").expect("notify");
        assert_eq!(notify.env.get("HELIX_EVENT_BUS_NAME").map(String::as_str), Some("!GetAtt NotifyBus.Name"));
        let puts: Vec<&Statement> =
            notify.statements.iter().filter(|s| s.actions.iter().any(|a| a.starts_with("events:"))).collect();
        assert_eq!(puts.len(), 1);
        assert_eq!(
            (puts[0].actions.clone(), puts[0].resources.clone()),
            (vec!["events:PutEvents".to_owned()], vec!["!GetAtt NotifyBus.Arn".to_owned()])
        );
        // Besides notify, only the publish binary (PublishFunction, VerifyFunction) puts events, and only
        // on the verify bus.
        for f in t.functions().into_iter().filter(|f| f.name != "notify") {
            for s in f.statements.iter().filter(|s| s.actions.iter().any(|a| a.starts_with("events:"))) {
                assert_eq!(f.name, "publish", "{}: an events grant", f.logical_id);
                assert_eq!(
                    (s.actions.clone(), s.resources.clone()),
                    (vec!["events:PutEvents".to_owned()], vec!["!GetAtt VerifyBus.Arn".to_owned()]),
                    "{}",
                    f.logical_id
                );
            }
        }
        let alarms = &t.resource(&notify.logical_id)["Properties"]["DeploymentPreference"]["Alarms"];
        assert_eq!(strings(alarms), ["!Ref NotifyErrorsAlarm"]);
    }

    /// Unattended verification (docs/decisions.md, "Unattended verification on AWS"): a bus of its own,
    /// whose rule sends exactly the step events to VerifyFunction, the publish binary's event entry with
    /// the longest timeout; complete (PublishFunction) and each step (VerifyFunction) may put on that bus
    /// only; a step that fails Lambda's retries is kept in a queue and raises the function's alarm.
    #[test]
    fn verification_steps_run_unattended_on_their_own_bus_with_bounded_retries() {
        let t = Template::load();
        let bus = &t.resource("VerifyBus");
        assert_eq!(bus["Type"].as_str(), Some("AWS::Events::EventBus"));
        assert_eq!(bus["Properties"]["Name"].as_str(), Some("!Sub ${AWS::StackName}-verify"));
        let functions = t.functions();
        let verify = functions.iter().find(|f| f.logical_id == "VerifyFunction").expect("VerifyFunction");
        let publish = functions.iter().find(|f| f.logical_id == "PublishFunction").expect("PublishFunction");
        assert_eq!(verify.name, "publish", "the publish binary, no crate of its own");
        assert!(verify.routes.is_empty(), "no route: the bus invokes it");
        assert_eq!(verify.env.get("HELIX_ENTRY").map(String::as_str), Some("verify"));
        assert_eq!(publish.env.get("HELIX_ENTRY"), None, "publish serves HTTP (the default entry)");
        for f in [verify, publish] {
            assert_eq!(f.env.get("HELIX_VERIFY_BUS_NAME").map(String::as_str), Some("!GetAtt VerifyBus.Name"));
            let puts: Vec<&Statement> =
                f.statements.iter().filter(|s| s.actions.iter().any(|a| a.starts_with("events:"))).collect();
            assert_eq!(puts.len(), 1, "{}", f.logical_id);
        }
        // The entry parses what the template sets, and refuses the verify entry without a bus.
        let env = t.resolved_env(verify);
        let config = Config::from_lookup(Mode::Lambda, |k| env.get(k).cloned()).unwrap();
        assert_eq!(
            publish::Entry::parse(env.get("HELIX_ENTRY").map(String::as_str), &config),
            Ok(publish::Entry::Verify)
        );
        let mut no_bus = config.clone();
        no_bus.verify_bus = None;
        assert!(publish::Entry::parse(Some("verify"), &no_bus).unwrap_err().contains("HELIX_VERIFY_BUS_NAME"));
        assert!(publish::Entry::parse(Some("sideways"), &config).unwrap_err().contains("HELIX_ENTRY"));

        let p = &t.resource("VerifyFunction")["Properties"];
        let timeout = p["Timeout"].as_u64().expect("Timeout");
        assert!(
            timeout >= 3 * helix_core::verify::DEADLINE_MARGIN.as_secs() && timeout <= 900,
            "a step works until DEADLINE_MARGIN before the deadline: {timeout} s"
        );
        let step = &p["Events"]["Step"];
        assert_eq!(step["Type"].as_str(), Some("EventBridgeRule"));
        assert_eq!(step["Properties"]["EventBusName"].as_str(), Some("!GetAtt VerifyBus.Name"));
        assert_eq!(strings(&step["Properties"]["Pattern"]["source"]), [helix_core::verify::EVENT_SOURCE]);
        assert_eq!(strings(&step["Properties"]["Pattern"]["detail-type"]), [helix_core::verify::EVENT_DETAIL_TYPE]);
        let invoke = &p["EventInvokeConfig"];
        assert_eq!(invoke["MaximumRetryAttempts"].as_u64(), Some(2));
        assert_eq!(invoke["DestinationConfig"]["OnFailure"]["Type"].as_str(), Some("SQS"));
        assert_eq!(
            invoke["DestinationConfig"]["OnFailure"]["Destination"].as_str(),
            Some("!GetAtt VerifyFailures.Arn")
        );
        assert_eq!(t.resource("VerifyFailures")["Type"].as_str(), Some("AWS::SQS::Queue"));
        assert_eq!(strings(&p["DeploymentPreference"]["Alarms"]), ["!Ref VerifyErrorsAlarm"]);
    }

    /// A point-in-time restore creates new tables; pointing the stack at them is a parameter change:
    /// every function's table names and every IAM grant on a table follow the switch, none is fixed.
    #[test]
    fn a_restore_is_a_parameter_change_for_every_table_reference() {
        let raw = std::fs::read_to_string(repo_file("infra/template.yaml")).unwrap();
        let references = [
            "!GetAtt MetaTable.Arn",
            "!GetAtt AuditTable.Arn",
            "${AuditTable.Arn}",
            "!Ref MetaTable",
            "!Ref AuditTable",
        ];
        let mut switched = 0;
        for line in raw.lines().filter(|l| references.iter().any(|r| l.contains(r))) {
            assert!(line.contains("!If [UseRestored"), "a table reference outside the restore switch: {line}");
            switched += 1;
        }
        assert!(switched >= 30, "{switched} switched references");
        let t = Template::load();
        for p in ["RestoredMetaTableName", "RestoredAuditTableName"] {
            assert_eq!(t.parameter_default(p).as_deref(), Some(""), "{p}: off by default");
        }
        let conditions = &t.doc["Conditions"];
        assert!(conditions.get("UseRestoredMeta").is_some() && conditions.get("UseRestoredAudit").is_some());
        assert!(t.doc["Rules"].get("RestoreBothTablesOrNeither").is_some(), "one table alone is refused");
    }

    #[test]
    fn every_function_environment_is_a_complete_lambda_configuration() {
        let t = Template::load();
        for f in t.functions() {
            let env = t.resolved_env(&f);
            let config = Config::from_lookup(Mode::Lambda, |k| env.get(k).cloned())
                .unwrap_or_else(|e| panic!("{}: environment is not a valid configuration: {e}", f.logical_id));
            assert_eq!(config.blob_backend, BlobBackend::S3, "{}", f.name);
            assert_eq!(config.meta_backend, MetaBackend::DynamoDb, "{}", f.name);
            assert_eq!(config.signer_backend, SignerBackend::Kms, "{}", f.name);
            assert_eq!(config.s3_bucket, "<BlobBucket>", "{}", f.name);
            assert_eq!(config.table, "<MetaTable>", "{}", f.name);
            assert_eq!(config.audit_table, "<AuditTable>", "{}", f.name);
            assert_eq!(config.kms_key_id, "<SigningKey.Arn>", "{}", f.name);
            assert!(config.s3_strict_no_overwrite, "{}: the bucket policy requires If-None-Match", f.name);
            assert!(config.oidc.is_none(), "{}: OIDC is off by default", f.name);
            // Names and references only: nothing secret-shaped is ever put in the environment.
            for (k, v) in &f.env {
                let upper = k.to_uppercase();
                // The one exception: where a secret is, by its ARN (a parameter that only takes an ARN).
                if upper.ends_with("_SECRET_ARN") {
                    let param = v.strip_prefix("!Ref ").unwrap_or_else(|| panic!("{}: {k} is a parameter", f.name));
                    let pattern = str_of(&t.doc["Parameters"][param]["AllowedPattern"]);
                    assert!(pattern.starts_with("^$|^arn:") && pattern.ends_with('$'), "{}: {k}: {pattern}", f.name);
                    continue;
                }
                assert!(!upper.contains("SECRET") && !upper.contains("PASSWORD"), "{}: {k}", f.name);
                assert!(!v.starts_with("hlx_") && !v.contains("BEGIN"), "{}: {k} holds a secret", f.name);
            }
        }
    }

    #[test]
    /// Which grants each function uses is settled by `make rehearse` (infra/rehearse/policy.py), from the
    /// calls the functions really make; here the invariants that hold whatever they call.
    fn no_role_may_rewrite_the_audit_trail_delete_a_blob_or_mint_a_token() {
        let t = Template::load();
        let audit_ok = ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query"];
        let stream_ok =
            ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"];
        let item_writes = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"];
        for f in t.functions() {
            for s in &f.statements {
                for a in &s.actions {
                    assert!(!a.contains('*'), "{}: wildcard action {a}", f.name);
                    for r in &s.resources {
                        assert_ne!(r, "*", "{}: {a} on every resource", f.name);
                        if a.to_lowercase().starts_with("s3:deleteobject") {
                            assert!(r.ends_with("uploads/*"), "{}: {a} on {r}: deletes only staging objects", f.name);
                        }
                        // The audit table's stream is read by the notify function's mapping only.
                        let stream = r.ends_with("AuditTable.StreamArn") || r.ends_with("/stream/*");
                        if r.contains("AuditTable") && stream {
                            assert!(stream_ok.contains(&a.as_str()), "{}: {a} on the audit stream", f.name);
                            assert_eq!(f.name, "notify", "{}: reads the audit stream", f.name);
                        } else if r.contains("AuditTable") {
                            assert!(audit_ok.contains(&a.as_str()), "{}: {a} on the audit table", f.name);
                        }
                        // Every item write on the meta table is scoped by partition key, and only the
                        // token function may write token items.
                        if r == "!GetAtt MetaTable.Arn" && item_writes.contains(&a.as_str()) {
                            assert!(!s.leading_keys.is_empty(), "{}: {a} on the meta table is unscoped", f.name);
                            assert!(!s.leading_keys.iter().any(|k| k == "*" || k == "#*"), "{}: {a}", f.name);
                            let tokens = s.leading_keys.iter().any(|k| k.starts_with("TOKEN"));
                            assert!(!tokens || f.name == "token", "{}: may write token items", f.name);
                            // Ledgers: written by the one function that signs receipts, and by no other.
                            let ledgers = s.leading_keys.iter().any(|k| k.starts_with("GOV") && k != "GOV#keys");
                            assert!(!ledgers || f.name == "waive", "{}: may write ledger items", f.name);
                        }
                    }
                }
            }
        }
    }

    /// The emulator's tables (localstack/init/ready.d/tables, used by bootstrap.py and the LocalStack
    /// ready hook) are the template's: same attributes, keys and indexes.
    #[test]
    fn emulator_table_definitions_are_the_templates() {
        let t = Template::load();
        for (file, resource) in [("meta", "MetaTable"), ("audit", "AuditTable")] {
            let path = repo_file(&format!("localstack/init/ready.d/tables/{file}.json"));
            let local: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let props = serde_json::to_value(&t.resource(resource)["Properties"]).unwrap();
            let norm = |v: &serde_json::Value| {
                let mut items: Vec<String> = v.as_array().into_iter().flatten().map(|x| x.to_string()).collect();
                items.sort();
                items
            };
            for field in ["AttributeDefinitions", "KeySchema"] {
                assert_eq!(norm(&local[field]), norm(&props[field]), "{file}.json {field} differs from {resource}");
            }
            let indexes = |v: &serde_json::Value| -> Vec<(String, Vec<String>, String)> {
                let mut out: Vec<_> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        (
                            i["IndexName"].to_string(),
                            norm(&i["KeySchema"]),
                            i["Projection"]["ProjectionType"].to_string(),
                        )
                    })
                    .collect();
                out.sort();
                out
            };
            assert_eq!(
                indexes(&local["GlobalSecondaryIndexes"]),
                indexes(&props["GlobalSecondaryIndexes"]),
                "{file}.json indexes differ from {resource}"
            );
            assert_eq!(local["BillingMode"], props["BillingMode"]);
        }
        let hook = std::fs::read_to_string(repo_file("localstack/init/ready.d/10-helix.sh")).unwrap();
        assert!(hook.contains("tables/$t.json"), "the ready hook creates its tables from the shared definitions");
    }

    /// Who may sign receipts may write nothing but ledgers: no function holds kms:Sign together with
    /// a meta-table write outside `GOV#` (a compromised publish function must not forge an approval),
    /// but for the counters and the audit head hints its appends move (`AUDITHEAD#`: a guess of where
    /// the next audit event goes, which the event's conditional put checks; no state of a version).
    #[test]
    fn signers_write_only_ledgers_and_ledger_writers_sign() {
        let t = Template::load();
        for f in t.functions() {
            let signs = f.statements.iter().any(|s| s.actions.iter().any(|a| a == "kms:Sign"));
            let meta_writes: Vec<&Statement> = f
                .statements
                .iter()
                .filter(|s| s.resources.iter().any(|r| r == "!GetAtt MetaTable.Arn"))
                .filter(|s| s.actions.iter().any(|a| a == "dynamodb:PutItem" || a == "dynamodb:UpdateItem"))
                .collect();
            if signs {
                assert!(
                    meta_writes.iter().all(|s| {
                        ["GOV#*", "GOV#keys", "COUNTER#*", "COUNTER#*,AUDITHEAD#*"]
                            .contains(&s.leading_keys.join(",").as_str())
                    }),
                    "{}: signs receipts and writes other meta items",
                    f.name
                );
            }
        }
    }

    /// The partition-key prefixes of the IAM scopes are the ones the DynamoDB adapter writes.
    #[test]
    fn leading_key_scopes_match_the_adapters_key_layout() {
        // The adapter is a folder of modules (one per concern): read them all.
        let mut src = String::new();
        for entry in std::fs::read_dir(repo_file("shared/src/adapters/dynamo")).unwrap() {
            src += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
        }
        for prefix in ["\"WS#{}\"", "\"TOKEN#{}\"", "\"TOKENID#{}\"", "\"GOV#{workspace_id}\"", "\"GOV#{ws}\""] {
            assert!(src.contains(&format!("format!({prefix}")), "the adapter no longer writes {prefix} keys");
        }
        assert!(src.contains("const SIGNING_KEYS_PK: &str = \"GOV#keys\";"), "the key history's partition moved");
    }

    #[test]
    fn storage_is_hardened_and_the_audit_table_is_append_only() {
        let t = Template::load();
        let bucket = &t.resource("BlobBucket")["Properties"];
        assert_eq!(bucket["VersioningConfiguration"]["Status"].as_str(), Some("Enabled"));
        let bpa = &bucket["PublicAccessBlockConfiguration"];
        for k in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"] {
            assert_eq!(bpa[k].as_bool(), Some(true), "{k}");
        }
        let statements =
            t.resource("BlobBucketPolicy")["Properties"]["PolicyDocument"]["Statement"].as_sequence().unwrap().clone();
        let deny = |sid: &str| statements.iter().find(|s| s["Sid"].as_str() == Some(sid)).cloned().expect(sid);
        let tls = deny("DenyInsecureTransport");
        assert_eq!(tls["Condition"]["Bool"]["aws:SecureTransport"].as_str(), Some("false"));
        let inm = deny("DenyBlobPutWithoutIfNoneMatch");
        assert_eq!(inm["Effect"].as_str(), Some("Deny"));
        assert_eq!(strings(&inm["Action"]), ["s3:PutObject"]);
        assert_eq!(strings(&inm["Resource"]), ["!Sub ${BlobBucket.Arn}/${S3Prefix}blobs/*"]);
        assert_eq!(inm["Condition"]["Null"]["s3:if-none-match"].as_str(), Some("true"));
        // Only operations that create the object must carry If-None-Match (S3 user guide, "Enforce
        // conditional writes"): the multipart steps of the promote cannot, and are exempt.
        assert_eq!(inm["Condition"]["Bool"]["s3:ObjectCreationOperation"].as_str(), Some("true"));
        // Exported audit days are write-once at the bucket too, and no lifecycle rule touches their history.
        let audit_inm = deny("DenyAuditPutWithoutIfNoneMatch");
        assert_eq!(strings(&audit_inm["Resource"]), ["!Sub ${BlobBucket.Arn}/${S3Prefix}audit/*"]);
        assert_eq!(audit_inm["Condition"]["Null"]["s3:if-none-match"].as_str(), Some("true"));
        assert_eq!(audit_inm["Condition"]["Bool"]["s3:ObjectCreationOperation"].as_str(), Some("true"));
        let rules = bucket["LifecycleConfiguration"]["Rules"].as_sequence().unwrap();
        for r in rules {
            let expires_versions =
                r.get("NoncurrentVersionExpiration").is_some() || r.get("ExpirationInDays").is_some();
            let prefix = r.get("Prefix").map(str_of).unwrap_or_default();
            assert!(
                !expires_versions || prefix.ends_with("blobs/") || prefix.ends_with("uploads/"),
                "{:?}: expires versions outside blobs/ and uploads/ (audit history must stay)",
                r["Id"]
            );
        }
        let staged = rules.iter().find(|r| r["Id"].as_str() == Some("expire-staged-uploads")).expect("staging rule");
        assert_eq!(staged["Prefix"].as_str(), Some("!Sub ${S3Prefix}uploads/"), "never a rule over blobs/");
        assert_eq!(staged["ExpirationInDays"].as_u64(), Some(1));

        for table in ["MetaTable", "AuditTable"] {
            let p = &t.resource(table)["Properties"];
            assert_eq!(p["BillingMode"].as_str(), Some("PAY_PER_REQUEST"), "{table}");
            assert_eq!(p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(), Some(true));
            assert_eq!(p["SSESpecification"]["SSEEnabled"].as_bool(), Some(true), "{table}");
            assert_eq!(t.resource(table)["DeletionPolicy"].as_str(), Some("RetainExceptOnCreate"), "{table}");
            assert_eq!(t.resource(table)["UpdateReplacePolicy"].as_str(), Some("Retain"), "{table}");
        }
        // Kept when a stack is deleted or a resource replaced, but not left behind by a failed first
        // create (which would block every retry with "already exists").
        for r in ["BlobBucket", "SigningKey"] {
            assert_eq!(t.resource(r)["DeletionPolicy"].as_str(), Some("RetainExceptOnCreate"), "{r}");
            assert_eq!(t.resource(r)["UpdateReplacePolicy"].as_str(), Some("Retain"), "{r}");
        }
        // The prefix becomes part of IAM resource ARNs: no wildcard characters.
        let pattern = str_of(&t.doc["Parameters"]["S3Prefix"]["AllowedPattern"]);
        let classes: Vec<&str> = pattern.split('[').skip(1).filter_map(|c| c.split(']').next()).collect();
        assert!(!classes.is_empty(), "{pattern}");
        for class in classes {
            assert!(!class.contains('*') && !class.contains('?'), "S3Prefix admits an IAM wildcard: [{class}]");
        }
        let audit = &t.resource("AuditTable")["Properties"];
        assert!(audit.get("TimeToLiveSpecification").is_none(), "audit events never expire");
        // The meta table expires ended verification jobs only, by an attribute no token record has
        // (token records outlive their `expires_at` on purpose).
        let ttl = &t.resource("MetaTable")["Properties"]["TimeToLiveSpecification"];
        assert_eq!((str_of(&ttl["AttributeName"]).as_str(), ttl["Enabled"].as_bool()), ("purge_at", Some(true)));
        let index = |name: &str| {
            let all = audit["GlobalSecondaryIndexes"].as_sequence().unwrap();
            let i = all.iter().find(|i| i["IndexName"].as_str() == Some(name)).unwrap_or_else(|| panic!("{name}"));
            let keys: Vec<String> =
                i["KeySchema"].as_sequence().unwrap().iter().map(|k| str_of(&k["AttributeName"])).collect();
            keys
        };
        use helix_core::adapters::dynamo::{AUDIT_ACTION_INDEX, AUDIT_ACTOR_INDEX, AUDIT_DAY_INDEX};
        assert_eq!(index(AUDIT_DAY_INDEX), ["day_shard", "ord"]);
        assert_eq!(index(AUDIT_ACTION_INDEX), ["action_shard", "at"]);
        assert_eq!(index(AUDIT_ACTOR_INDEX), ["actor", "at"]);
        let rp = &audit["ResourcePolicy"]["PolicyDocument"]["Statement"][0];
        assert_eq!(rp["Effect"].as_str(), Some("Deny"));
        let denied = strings(&rp["Action"]);
        for a in ["dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"] {
            assert!(denied.iter().any(|d| d == a), "audit table resource policy must deny {a}");
        }

        let key = &t.resource("SigningKey")["Properties"];
        assert_eq!(key["KeySpec"].as_str(), Some("ECC_NIST_P256"));
        assert_eq!(key["KeyUsage"].as_str(), Some("SIGN_VERIFY"));
        for f in t.functions() {
            let logs = &f.logical_id.replace("Function", "Logs");
            assert_eq!(
                t.resource(&f.logical_id)["Properties"]["LoggingConfig"]["LogGroup"].as_str(),
                Some(&*format!("!Ref {logs}"))
            );
            assert!(t.resource(logs)["Properties"]["RetentionInDays"].as_str().is_some(), "{logs}: retention");
        }
    }
}
