"""Template work for the rehearsal: SAM -> plain CloudFormation offline (aws-sam-translator), and a
resolver of the intrinsic functions the template uses, against a created stack's physical ids."""

import copy
import os

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from emu import ACCOUNT, REGION


class ManagedPolicies:
    """The managed policies SAM attaches (any ARN will do offline)."""

    def load(self):
        return {"AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}


def translate(sam_text, parameters):
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    sam = yaml_parse(sam_text)
    values = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws", **parameters}
    return transform(sam, values, ManagedPolicies())


NO_VALUE = object()


class Resolver:
    """Resolves Ref, Fn::GetAtt, Fn::Sub, Fn::If, Fn::Join, Fn::Select and the conditions of `template`
    for one stack: its parameters (template defaults overridden by `parameters`) and the physical ids
    of its resources."""

    def __init__(self, template, stack_name, parameters, physical):
        self.t = template
        self.stack = stack_name
        self.params = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
        self.params.update({k: str(v) for k, v in parameters.items()})
        self.physical = physical
        self.conditions = {}

    def pseudo(self, name):
        return {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
                "AWS::StackName": self.stack, "AWS::URLSuffix": "amazonaws.com",
                "AWS::NoValue": NO_VALUE}.get(name)

    def ref(self, name):
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.params:
            return self.params[name]
        rtype = self.t["Resources"][name]["Type"]
        pid = self.physical[name]
        if rtype == "AWS::SQS::Queue" and not pid.startswith("http"):
            return f"http://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{pid}"
        return pid

    def getatt(self, name, attr):
        rtype = self.t["Resources"][name]["Type"]
        pid = self.physical[name]
        if rtype == "AWS::Lambda::Version" and attr == "Version":
            return pid.rsplit(":", 1)[-1]
        if rtype == "AWS::SQS::Queue" and attr == "QueueName":
            return pid.rsplit("/", 1)[-1]
        if rtype == "AWS::Events::EventBus":  # named by its Name property (the emulator's id is not)
            bus = self.resolve(self.t["Resources"][name]["Properties"]["Name"])
            return {"Name": bus, "Arn": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}"}[attr]
        if attr != "Arn":
            raise KeyError(f"GetAtt {name}.{attr}")
        return {
            "AWS::S3::Bucket": f"arn:aws:s3:::{pid}",
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{pid}",
            "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{pid}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{pid}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{pid.rsplit('/', 1)[-1]}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{pid}:*",
        }.get(rtype) or (pid if pid.startswith("arn:") else f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{pid}")

    def exists(self, logical):
        """Whether the resource is created at all (its Condition, if any, holds)."""
        cond = self.t["Resources"][logical].get("Condition")
        return cond is None or self.condition(cond)

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.t["Conditions"][name]))
        return self.conditions[name]

    def sub(self, text, extra):
        out, i = [], 0
        while i < len(text):
            j = text.find("${", i)
            if j < 0:
                out.append(text[i:])
                break
            out.append(text[i:j])
            k = text.index("}", j)
            var = text[j + 2:k]
            if var.startswith("!"):
                out.append("${" + var[1:] + "}")
            elif var in extra:
                out.append(str(self.resolve(extra[var])))
            elif "." in var and not var.startswith("AWS::"):
                out.append(self.getatt(*var.split(".", 1)))
            else:
                out.append(str(self.ref(var)))
            i = k + 1
        return "".join(out)

    def resolve(self, v):
        if isinstance(v, list):
            return [x for x in (self.resolve(i) for i in v) if x is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Fn::GetAtt":
                return self.getatt(*(a.split(".", 1) if isinstance(a, str) else a))
            if k == "Fn::Sub":
                return self.sub(a, {}) if isinstance(a, str) else self.sub(a[0], a[1])
            if k == "Fn::If":
                return self.resolve(a[1] if self.condition(a[0]) else a[2])
            if k == "Fn::Equals":
                return str(self.resolve(a[0])) == str(self.resolve(a[1]))
            if k == "Fn::Not":
                return not self.resolve(a[0])
            if k == "Fn::And":
                return all(self.resolve(x) for x in a)
            if k == "Fn::Or":
                return any(self.resolve(x) for x in a)
            if k == "Condition":
                return self.condition(a)
            if k == "Fn::Join":
                return a[0].join(str(x) for x in self.resolve(a[1]))
            if k == "Fn::Select":
                return self.resolve(a[1])[int(self.resolve(a[0]))]
        return {k: r for k, r in ((k, self.resolve(x)) for k, x in v.items()) if r is not NO_VALUE}

    def properties(self, logical):
        return self.resolve(copy.deepcopy(self.t["Resources"][logical].get("Properties", {})))
