"""Create the stack on the emulator's CloudFormation, find what it skipped, apply that through each
service's own API with the template's values, and read every applied setting back."""

import json
import urllib.request

from cfn import Resolver


class Failure(Exception):
    pass


# Types the rehearsal keeps from the emulator's CloudFormation: a DynamoDB stream's event source mapping
# makes the emulator invoke the function itself (in a container it does not have) on every write and then
# drop the stream's records. Each is checked in apply_skipped and driven by rehearse.py (drive_notify).
NOT_ON_EMULATOR = {"AWS::Lambda::EventSourceMapping"}


def create(emu, name, template, parameters, resolver_for=None):
    cfn = emu.client("cloudformation")
    body = dict(template, Resources={k: v for k, v in template["Resources"].items() if v["Type"] not in NOT_ON_EMULATOR})
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(body),
                     Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()],
                     Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"])
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise Failure(f"stack {name}: {stack['StackStatus']} ({stack.get('StackStatusReason')})")
    summaries = []
    paginator = cfn.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=name):
        summaries += page["StackResourceSummaries"]
    bad = [r for r in summaries if r["ResourceStatus"] != "CREATE_COMPLETE"]
    if bad:
        raise Failure(f"stack {name}: resources not created: {[(r['LogicalResourceId'], r['ResourceStatus']) for r in bad]}")
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries}
    created = resolver_for(name, physical) if resolver_for else None
    skipped = {k: v["Type"] for k, v in template["Resources"].items()
               if k not in physical and (created is None or created.exists(k))}
    return physical, skipped


def check_skipped(skipped, known):
    types = set(skipped.values())
    new, gone = types - known, known - types
    if new or gone:
        raise Failure(
            "the emulator's CloudFormation skipped resource types that are not on infra/rehearse/skipped-types.txt: "
            f"{sorted(new)}; listed but no longer skipped: {sorted(gone)}. Acknowledge a new one by adding it to the "
            "list and applying it in infra/rehearse/stack.py (apply_skipped)."
        )


MISMATCHES = []
RULE_TARGETS = {}  # rule logical id -> its bus, name and resolved targets (not put on the emulator)
POLICIES = {}  # bucket -> the bucket policy applied, read back and then removed from the emulator
# Settings the emulator accepts but does not keep (moto 5.2.5): reported, not failed; the template test
# (tests/src/template.rs) checks their values statically.
NOT_KEPT = {"ephemeral storage"}


def expect(what, want, got):
    if want != got:
        if any(what.endswith(n) for n in NOT_KEPT):
            print(f"  note: {what}: the emulator does not keep it (template {want!r}, read back {got!r})")
            return
        MISMATCHES.append(f"{what}: the template says {want!r}, read back {got!r}")


def _sorted_statements(policy):
    return sorted(json.dumps(s, sort_keys=True) for s in policy["Statement"])


def apply_skipped(emu, r: Resolver, physical, skipped):
    """Apply what the emulator's CloudFormation skipped or dropped; read each setting back. Returns the
    HTTP API's id (its routes come from the OpenAPI body SAM generated)."""
    t = r.t["Resources"]
    s3, ddb, lam = emu.client("s3"), emu.client("dynamodb"), emu.client("lambda")
    logs, cw, sched, apigw = emu.client("logs"), emu.client("cloudwatch"), emu.client("scheduler"), emu.client("apigatewayv2")
    cd = emu.client("codedeploy")
    applied = 0
    for logical, res in t.items():
        if res["Type"] == "AWS::Lambda::Alias":
            p = r.properties(logical)
            # moto's physical id of an AWS::Lambda::Version is not its number: the published version is
            # the function's newest.
            versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=p["FunctionName"])["Versions"]]
            p["FunctionVersion"] = max((v for v in versions if v.isdigit()), key=int)
            arn = lam.create_alias(FunctionName=p["FunctionName"], Name=p["Name"], FunctionVersion=str(p["FunctionVersion"]))["AliasArn"]
            got = lam.get_alias(FunctionName=p["FunctionName"], Name=p["Name"])
            expect(f"{logical} version", str(p["FunctionVersion"]), got["FunctionVersion"])
            physical[logical] = arn
            applied += 1
    api_id = None
    for logical, res in t.items():
        if res["Type"] == "AWS::ApiGatewayV2::Api":
            p = r.properties(logical)
            api_id = apigw.create_api(Name=f"{r.stack}-{logical}", ProtocolType="HTTP")["ApiId"]
            apigw.reimport_api(ApiId=api_id, Body=json.dumps(p["Body"]))
            physical[logical] = api_id
            applied += 1
    handled = {"AWS::Logs::MetricFilter", "AWS::Logs::SubscriptionFilter", "AWS::CodeDeploy::Application", "AWS::CodeDeploy::DeploymentGroup",
               "AWS::CloudWatch::Dashboard", "AWS::S3::Bucket", "AWS::S3::BucketPolicy", "AWS::DynamoDB::Table", "AWS::Logs::LogGroup",
               "AWS::Lambda::Function", "AWS::CloudWatch::Alarm", "AWS::Lambda::EventInvokeConfig", "AWS::Scheduler::Schedule"}
    order = ["AWS::CloudWatch::Alarm", "AWS::CodeDeploy::Application"]
    for logical, res in sorted(t.items(), key=lambda kv: (kv[1]["Type"] not in order, order.index(kv[1]["Type"]) if kv[1]["Type"] in order else 0)):
        kind = res["Type"]
        if kind not in handled or not r.exists(logical):
            continue
        p = r.properties(logical)
        if kind == "AWS::S3::Bucket":
            b = physical[logical]
            s3.put_bucket_versioning(Bucket=b, VersioningConfiguration=p["VersioningConfiguration"])
            expect(f"{logical} versioning", p["VersioningConfiguration"]["Status"], s3.get_bucket_versioning(Bucket=b).get("Status"))
            s3.put_public_access_block(Bucket=b, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"])
            expect(f"{logical} public access block", p["PublicAccessBlockConfiguration"],
                   s3.get_public_access_block(Bucket=b)["PublicAccessBlockConfiguration"])
            s3.put_bucket_ownership_controls(Bucket=b, OwnershipControls=p["OwnershipControls"])
            expect(f"{logical} ownership", p["OwnershipControls"]["Rules"], s3.get_bucket_ownership_controls(Bucket=b)["OwnershipControls"]["Rules"])
            enc = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            s3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": [
                {"ApplyServerSideEncryptionByDefault": e["ServerSideEncryptionByDefault"],
                 "BucketKeyEnabled": bool(e.get("BucketKeyEnabled"))} for e in enc]})
            got = s3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"]
            expect(f"{logical} encryption", enc[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"],
                   got[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"])
            rules = [_lifecycle_rule(x) for x in p["LifecycleConfiguration"]["Rules"]]
            s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": rules})
            got = s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
            expect(f"{logical} lifecycle rules", sorted(x["ID"] for x in rules), sorted(x["ID"] for x in got))
            if p.get("CorsConfiguration"):
                cors = [{"ID": x["Id"], "AllowedMethods": x["AllowedMethods"], "AllowedOrigins": x["AllowedOrigins"],
                         "MaxAgeSeconds": int(x["MaxAge"])} for x in p["CorsConfiguration"]["CorsRules"]]
                s3.put_bucket_cors(Bucket=b, CORSConfiguration={"CORSRules": cors})
                got = s3.get_bucket_cors(Bucket=b)["CORSRules"]
                expect(f"{logical} CORS rules", [(x["AllowedMethods"], x["AllowedOrigins"]) for x in cors],
                       [(x["AllowedMethods"], x["AllowedOrigins"]) for x in got])
                applied += 1
            if p.get("ObjectLockConfiguration"):
                lock = p["ObjectLockConfiguration"]
                s3.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration=lock)
                expect(f"{logical} object lock", lock["ObjectLockEnabled"],
                       s3.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"]["ObjectLockEnabled"])
            applied += 6
        elif kind == "AWS::S3::BucketPolicy":
            s3.put_bucket_policy(Bucket=p["Bucket"], Policy=json.dumps(p["PolicyDocument"]))
            got = json.loads(s3.get_bucket_policy(Bucket=p["Bucket"])["Policy"])
            expect(f"{logical} statements", _sorted_statements(p["PolicyDocument"]), _sorted_statements(got))
            # moto's own bucket-policy evaluation treats Bool/Null conditions as matched (it would deny
            # every object request): the policy is evaluated offline (policy.py) instead, from this copy.
            POLICIES[p["Bucket"]] = p["PolicyDocument"]
            s3.delete_bucket_policy(Bucket=p["Bucket"])
            applied += 1
        elif kind == "AWS::DynamoDB::Table":
            name = physical[logical]
            desc = ddb.describe_table(TableName=name)["Table"]
            expect(f"{logical} indexes", sorted(g["IndexName"] for g in p.get("GlobalSecondaryIndexes", [])),
                   sorted(g["IndexName"] for g in desc.get("GlobalSecondaryIndexes", [])))
            expect(f"{logical} billing", p["BillingMode"], desc.get("BillingModeSummary", {}).get("BillingMode"))
            if p.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
                ddb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
                got = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
                expect(f"{logical} PITR", "ENABLED", got["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"])
            if p.get("DeletionProtectionEnabled"):
                ddb.update_table(TableName=name, DeletionProtectionEnabled=True)
                expect(f"{logical} deletion protection", True, ddb.describe_table(TableName=name)["Table"].get("DeletionProtectionEnabled"))
            if "ResourcePolicy" in p:
                arn = desc["TableArn"]
                ddb.put_resource_policy(ResourceArn=arn, Policy=json.dumps(p["ResourcePolicy"]["PolicyDocument"]))
                got = json.loads(ddb.get_resource_policy(ResourceArn=arn)["Policy"])
                expect(f"{logical} resource policy", _sorted_statements(p["ResourcePolicy"]["PolicyDocument"]), _sorted_statements(got))
            applied += 4
        elif kind == "AWS::Logs::LogGroup":
            name = p["LogGroupName"]
            logs.put_retention_policy(logGroupName=name, retentionInDays=int(p["RetentionInDays"]))
            got = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
            expect(f"{logical} retention", int(p["RetentionInDays"]), got[0].get("retentionInDays"))
            applied += 1
        elif kind == "AWS::Lambda::Function":
            name = physical[logical]
            lam.update_function_configuration(FunctionName=name, EphemeralStorage=p.get("EphemeralStorage", {"Size": 512}),
                                              LoggingConfig=p.get("LoggingConfig", {}))
            got = lam.get_function_configuration(FunctionName=name)
            for key in ("Runtime", "Handler", "Timeout", "MemorySize"):
                expect(f"{logical} {key}", p[key] if key != "MemorySize" else int(p[key]), got.get(key))
            expect(f"{logical} environment", {k: str(v) for k, v in p["Environment"]["Variables"].items()},
                   {k: str(v) for k, v in got.get("Environment", {}).get("Variables", {}).items()})
            expect(f"{logical} ephemeral storage", p.get("EphemeralStorage", {"Size": 512})["Size"], got.get("EphemeralStorage", {}).get("Size"))
            applied += 4
        elif kind == "AWS::Logs::MetricFilter":
            name = f"{r.stack}-{logical}"
            logs.put_metric_filter(logGroupName=p["LogGroupName"], filterName=name, filterPattern=p["FilterPattern"],
                                   metricTransformations=[{k[0].lower() + k[1:]: (float(v) if k == "DefaultValue" else v)
                                                           for k, v in m.items()} for m in p["MetricTransformations"]])
            got = logs.describe_metric_filters(logGroupName=p["LogGroupName"], filterNamePrefix=name)["metricFilters"]
            expect(f"{logical} pattern", p["FilterPattern"], got[0]["filterPattern"] if got else None)
            applied += 1
        elif kind == "AWS::Logs::SubscriptionFilter":
            # The emulator keeps the filter but never delivers to a function: rehearse.py (read_records)
            # sends the fetch function's real read records to the ingest function as the delivery would.
            name = f"{r.stack}-{logical}"
            logs.put_subscription_filter(logGroupName=p["LogGroupName"], filterName=name, filterPattern=p["FilterPattern"],
                                         destinationArn=p["DestinationArn"])
            got = logs.describe_subscription_filters(logGroupName=p["LogGroupName"], filterNamePrefix=name)["subscriptionFilters"]
            expect(f"{logical} pattern", p["FilterPattern"], got[0]["filterPattern"] if got else None)
            expect(f"{logical} destination", p["DestinationArn"], got[0]["destinationArn"] if got else None)
            applied += 1
        elif kind == "AWS::CodeDeploy::Application":
            name = f"{r.stack}-{logical}"
            cd.create_application(applicationName=name, computePlatform=p["ComputePlatform"])
            expect(f"{logical} platform", p["ComputePlatform"], cd.get_application(applicationName=name)["application"]["computePlatform"])
            physical[logical] = name
            applied += 1
        elif kind == "AWS::CodeDeploy::DeploymentGroup":
            name = f"{r.stack}-{logical}"
            cd.create_deployment_group(applicationName=p["ApplicationName"], deploymentGroupName=name,
                                       serviceRoleArn=p["ServiceRoleArn"], deploymentConfigName=p["DeploymentConfigName"],
                                       deploymentStyle={k[0].lower() + k[1:]: v for k, v in p["DeploymentStyle"].items()},
                                       autoRollbackConfiguration={"enabled": p["AutoRollbackConfiguration"]["Enabled"],
                                                                  "events": p["AutoRollbackConfiguration"]["Events"]},
                                       alarmConfiguration={"enabled": p["AlarmConfiguration"]["Enabled"],
                                                           "alarms": [{"name": a["Name"]} for a in p["AlarmConfiguration"]["Alarms"]]})
            got = cd.get_deployment_group(applicationName=p["ApplicationName"], deploymentGroupName=name)["deploymentGroupInfo"]
            expect(f"{logical} config", p["DeploymentConfigName"], got.get("deploymentConfigName"))
            alarms = [a["Name"] for a in p["AlarmConfiguration"]["Alarms"]]
            missing = [a for a in alarms if not cw.describe_alarms(AlarmNames=[a])["MetricAlarms"]]
            expect(f"{logical} rollback alarms that exist", [], missing)
            applied += 1
        elif kind == "AWS::CloudWatch::Dashboard":
            body = p["DashboardBody"]
            widgets = json.loads(body)["widgets"]  # the body must be JSON once resolved
            cw.put_dashboard(DashboardName=physical[logical], DashboardBody=body)
            got = json.loads(cw.get_dashboard(DashboardName=physical[logical])["DashboardBody"])
            expect(f"{logical} widgets", len(widgets), len(got["widgets"]))
            applied += 1
        elif kind == "AWS::CloudWatch::Alarm":
            args = {k: v for k, v in p.items() if k not in ("AlarmActions",)}
            for k in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
                if k in args:
                    args[k] = int(args[k])
            args["Threshold"] = float(args["Threshold"])
            for m in args.get("Metrics", []):
                if "MetricStat" in m:
                    m["MetricStat"]["Period"] = int(m["MetricStat"]["Period"])
            if p.get("AlarmActions"):
                args["AlarmActions"] = p["AlarmActions"]
            args["AlarmName"] = f"{r.stack}-{logical}"
            physical[logical] = args["AlarmName"]
            cw.put_metric_alarm(**args)
            got = cw.describe_alarms(AlarmNames=[args["AlarmName"]])["MetricAlarms"][0]
            for key in ("MetricName", "Namespace", "Threshold", "ComparisonOperator", "EvaluationPeriods", "Period"):
                if key in args:
                    expect(f"{logical} {key}", float(args[key]) if key == "Threshold" else args[key], got.get(key))
            applied += 1
        elif kind == "AWS::Lambda::EventInvokeConfig":
            fn = p["FunctionName"]
            lam.put_function_event_invoke_config(FunctionName=fn, MaximumRetryAttempts=int(p["MaximumRetryAttempts"]),
                                                 MaximumEventAgeInSeconds=int(p["MaximumEventAgeInSeconds"]),
                                                 DestinationConfig=p["DestinationConfig"])
            got = lam.get_function_event_invoke_config(FunctionName=fn)
            expect(f"{logical} retries", int(p["MaximumRetryAttempts"]), got.get("MaximumRetryAttempts"))
            expect(f"{logical} on-failure", p["DestinationConfig"]["OnFailure"]["Destination"],
                   got.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"))
            applied += 1
        elif kind == "AWS::Scheduler::Schedule":
            name = p.get("Name") or f"{r.stack}-{logical}"[:64]
            sched.create_schedule(Name=name, ScheduleExpression=p["ScheduleExpression"],
                                  ScheduleExpressionTimezone=p.get("ScheduleExpressionTimezone", "UTC"),
                                  FlexibleTimeWindow=p["FlexibleTimeWindow"], Target=p["Target"],
                                  State=p.get("State", "ENABLED"))
            got = sched.get_schedule(Name=name)
            expect(f"{logical} expression", p["ScheduleExpression"], got["ScheduleExpression"])
            expect(f"{logical} target", p["Target"]["Arn"], got["Target"]["Arn"])
            applied += 1
    for logical, res in t.items():
        if res["Type"] == "AWS::ApiGatewayV2::Stage":
            p = r.properties(logical)
            apigw.create_stage(ApiId=api_id, StageName=p["StageName"], AutoDeploy=True,
                               AccessLogSettings=p.get("AccessLogSettings", {}),
                               DefaultRouteSettings={k: (int(v) if "Burst" in k else float(v)) for k, v in p.get("DefaultRouteSettings", {}).items()})
            got = apigw.get_stage(ApiId=api_id, StageName=p["StageName"])
            expect(f"{logical} access log destination", p["AccessLogSettings"]["DestinationArn"], got["AccessLogSettings"]["DestinationArn"])
            applied += 1
    sqs = emu.client("sqs")
    for logical, res in t.items():
        if res["Type"] == "AWS::Lambda::EventSourceMapping" and r.exists(logical):
            # Not created on the emulator (NOT_ON_EMULATOR): its references are checked here, and
            # rehearse.py reads the stream and invokes the function as the mapping would.
            raw = res["Properties"]
            table, attr = raw["EventSourceArn"]["Fn::GetAtt"]
            expect(f"{logical} source", "StreamArn", attr)
            stream = ddb.describe_table(TableName=physical[table])["Table"].get("LatestStreamArn")
            expect(f"{logical} source has a stream", True, bool(stream))
            target = physical.get(raw["FunctionName"]["Ref"], "")
            name = target.split(":function:")[-1].split(":")
            expect(f"{logical} target is a published alias", True,
                   len(name) == 2 and lam.get_alias(FunctionName=name[0], Name=name[1])["AliasArn"] == target)
            dest = r.resolve(raw["DestinationConfig"]["OnFailure"]["Destination"])
            url = sqs.get_queue_url(QueueName=dest.rsplit(":", 1)[-1])["QueueUrl"]
            expect(f"{logical} on-failure queue", dest, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])
            physical[logical] = f"{stream} -> {target}"
            applied += 1
    events = emu.client("events")
    for logical, res in t.items():
        if res["Type"] == "AWS::Events::Rule" and r.exists(logical):
            # Created by the emulator without its targets on aliases (emu.py), and left so: moto's PutEvents
            # fails on a rule with a Lambda target (it sends only to queues, logs and buses). The targets
            # are resolved and checked here (RULE_TARGETS); rehearse.py delivers the bus's events to the
            # function as the rule would.
            raw = res["Properties"]
            bus = r.resolve(raw.get("EventBusName", "default"))
            name = physical[logical].split("/")[-1]
            got = events.describe_rule(Name=name, EventBusName=bus)
            expect(f"{logical} pattern", raw["EventPattern"], json.loads(got["EventPattern"]))
            targets = [dict(r.resolve(x), Arn=r.resolve(x["Arn"])) for x in raw["Targets"]]
            for x in targets:
                if "RetryPolicy" in x:
                    x["RetryPolicy"] = {k: int(v) for k, v in x["RetryPolicy"].items()}
            RULE_TARGETS[logical] = {"bus": bus, "rule": name, "targets": targets}
            for x in targets:
                name_alias = x["Arn"].split(":function:")[-1].split(":")
                expect(f"{logical} target is a published alias", True,
                       len(name_alias) == 2 and lam.get_alias(FunctionName=name_alias[0], Name=name_alias[1])["AliasArn"] == x["Arn"])
            applied += 1
    return api_id, applied


def _lifecycle_rule(rule):
    out = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}
    return out


def routes(emu, api_id, physical_by_arn):
    """The HTTP API's routes as the emulator holds them: route key -> function logical id."""
    apigw = emu.client("apigatewayv2")
    integrations = {i["IntegrationId"]: i for i in apigw.get_integrations(ApiId=api_id)["Items"]}
    out = {}
    for route in apigw.get_routes(ApiId=api_id)["Items"]:
        target = route.get("Target", "")
        integ = integrations.get(target.split("/", 1)[-1])
        if integ is None:
            raise Failure(f"route {route['RouteKey']} has no integration ({target!r})")
        uri = integ["IntegrationUri"]
        fn = next((logical for arn, logical in physical_by_arn.items() if arn in uri), None)
        if fn is None:
            raise Failure(f"route {route['RouteKey']} integrates {uri!r}, not a function of the stack")
        if integ.get("PayloadFormatVersion") != "2.0":
            raise Failure(f"route {route['RouteKey']}: payload format {integ.get('PayloadFormatVersion')}, not 2.0")
        out[route["RouteKey"]] = fn
    return out


def explicit_names(template, resolver_for):
    """Physical names the template fixes (name properties), resolved for two stack names: any name
    that does not change with the stack name collides when a second stack is created."""
    name_props = ("BucketName", "TableName", "LogGroupName", "AliasName", "FunctionName", "QueueName",
                  "RoleName", "Name", "AlarmName", "TopicName", "ApiName", "DashboardName")
    a, b = resolver_for("stack-a"), resolver_for("stack-b")
    clashes = []
    for logical, res in template["Resources"].items():
        if res["Type"] in ("AWS::Lambda::Permission", "AWS::Lambda::Alias"):  # names scoped to their function
            continue
        for prop in name_props:
            raw = res.get("Properties", {}).get(prop)
            if raw is None or res["Type"] == "AWS::ApiGatewayV2::Api" and prop == "Name":
                continue
            va, vb = a.resolve(raw), b.resolve(raw)
            if va == vb:
                clashes.append(f"{logical}.{prop} = {va!r} in every stack")
    return clashes


def console_downloads(url, emu, physical, console):
    """The console's evidence pack follows a proof URL's redirect to a presigned GET of the bucket: the
    console function's connect-src names the origin of the bucket's presigned URLs, and the bucket's
    CORS rule lets the console's origin (`console`, the ConsoleOrigin parameter), and no other, read the
    answer. Returns what is wrong."""
    failures = []
    with urllib.request.urlopen(urllib.request.Request(url + "/console"), timeout=30) as r:
        csp = r.headers["Content-Security-Policy"]
    connect = next(d for d in csp.split(";") if d.strip().startswith("connect-src")).split()[1:]
    s3, bucket = emu.client("s3"), physical["BlobBucket"]
    s3.put_object(Bucket=bucket, Key="uploads/rehearsal-console-probe", Body=b"probe")
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "uploads/rehearsal-console-probe"})
    origin = "/".join(presigned.split("/")[:3])
    if origin not in connect:
        failures.append(f"console: connect-src {connect} does not name the bucket's presigned origin {origin}")

    def allowed(o):
        with urllib.request.urlopen(urllib.request.Request(presigned, headers={"Origin": o}), timeout=30) as r:
            return r.headers.get("Access-Control-Allow-Origin")
    other = "https://elsewhere.example"
    if allowed(console) != console:
        failures.append(f"bucket CORS: a presigned GET from the console's origin {console} is not readable by it")
    if allowed(other) is not None:
        failures.append(f"bucket CORS: another origin ({other}) may read presigned GETs")
    s3.delete_object(Bucket=bucket, Key="uploads/rehearsal-console-probe")
    return failures
