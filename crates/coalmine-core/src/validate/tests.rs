//! One test per rule: a good file with one field broken gets exactly one
//! error, at that field's path.

use super::*;

const LOCAL: &str = "apiVersion: coalmine.dev/v1alpha1
kind: Canary
metadata: {name: shop}
spec:
  upstreams:
    stable: [http://127.0.0.1:9001]
    canary: [http://127.0.0.1:9002]
  steps:
    - setWeight: 5
    - pause: {duration: 1m}
    - setWeight: 25
    - analysis: {timeout: 10m}
    - setHeaderRoute: {match: [{header: x-canary, value: always}, {cookie: beta, regex: '^yes$'}]}
    - setMirror: {percent: 20}
    - setWeight: 50
    - pause: {}
  sessionAffinity: {cookie: coalmine-track, maxAge: 1h}
  analysis:
    interval: 10s
    alpha: 0.05
    metrics:
      - {name: errors, builtin: errors, maxRatio: 1.0}
      - {name: slow, builtin: latency, slowerThan: 300ms}
      - name: checkout-failures
        prometheus:
          address: http://127.0.0.1:9090
          total: sum(increase(http_requests_total{track=\"{{track}}\"}[{{interval}}]))
          bad: sum(increase(http_requests_total{track=\"{{track}}\",code=~\"5..\"}[{{interval}}]))
      - name: p99-slo
        prometheus: {address: http://127.0.0.1:9090, query: 'histogram_quantile(0.99, x{track=\"canary\"})'}
        threshold: {max: 0.5}
        failureLimit: 3
      - name: hook
        webhook: {url: 'http://127.0.0.1:8000/errors?track={{track}}', total: $.total, bad: $.errors}
  onInconclusive: pause
  progressDeadline: 10m
";

const KUBE: &str = "apiVersion: coalmine.dev/v1alpha1
kind: Canary
metadata: {name: myapp, namespace: shop}
spec:
  replicas: 4
  selector: {matchLabels: {app: myapp}}
  template:
    metadata: {labels: {app: myapp}}
    spec: {containers: [{name: myapp, image: 'myapp:2.0', ports: [{containerPort: 8080}]}]}
  service: {port: 80, targetPort: 8080}
  trafficRouting:
    gatewayAPI: {httpRoute: myapp}
  steps:
    - setWeight: 5
    - setHeaderRoute: {match: [{header: x-canary, value: always}]}
    - analysis: {}
  analysis:
    metrics: [{name: errors, builtin: errors}]
";

/// Replaces `from` by `to` in `base` (which must contain it) and checks.
fn with(base: &str, from: &str, to: &str) -> Vec<Problem> {
    assert!(base.contains(from), "fixture lacks {from:?}");
    let text = base.replacen(from, to, 1);
    match load(&text) {
        Ok((_, _, warnings)) => warnings,
        Err(problems) => problems,
    }
}

fn errors(problems: &[Problem]) -> Vec<String> {
    problems
        .iter()
        .filter(|p| p.is_error())
        .map(ToString::to_string)
        .collect()
}

/// Exactly one error, at `path`, containing `text`.
#[track_caller]
fn one_error(base: &str, from: &str, to: &str, path: &str, text: &str) {
    let problems = with(base, from, to);
    let errs: Vec<&Problem> = problems.iter().filter(|p| p.is_error()).collect();
    assert_eq!(errs.len(), 1, "{from:?} → {to:?}: {:?}", errors(&problems));
    assert_eq!(errs[0].path, path, "{}", errs[0]);
    assert!(
        errs[0].to_string().contains(text),
        "{} lacks {text:?}",
        errs[0]
    );
}

#[test]
fn the_fixtures_are_good() {
    for base in [LOCAL, KUBE] {
        let (_, plan, warnings) = load(base).expect("fixture is valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!plan.steps.is_empty());
    }
    let (_, plan, _) = load(LOCAL).unwrap();
    assert_eq!(
        plan.summary(),
        "8 steps: 5% → 25% → 50%, 1 analysis gate, 5 metrics"
    );
    assert_eq!(plan.analysis.as_ref().unwrap().metrics.len(), 5);
    assert!(matches!(plan.target, Target::Local { .. }));
    let (_, plan, _) = load(KUBE).unwrap();
    assert_eq!(
        plan.target,
        Target::Kubernetes {
            router: Router::GatewayApi {
                http_route: "myapp".into()
            }
        }
    );
    assert_eq!(
        plan.steps[2],
        PlanStep::Analysis {
            timeout: DEFAULT_GATE_TIMEOUT
        }
    );
}

#[test]
fn document_rules() {
    one_error(
        LOCAL,
        "coalmine.dev/v1alpha1",
        "coalmine.dev/v1",
        "apiVersion",
        "write `apiVersion: coalmine.dev/v1alpha1`",
    );
    one_error(
        LOCAL,
        "kind: Canary",
        "kind: Rollout",
        "kind",
        "`Rollout` is not Canary",
    );
    one_error(
        LOCAL,
        "name: shop",
        "name: Shop_1",
        "metadata.name",
        "not a valid name",
    );
    one_error(
        KUBE,
        "metadata: {name: myapp, namespace: shop}",
        "metadata: {namespace: shop}",
        "metadata.name",
        "required in Kubernetes",
    );
}

#[test]
fn weight_rules() {
    one_error(
        LOCAL,
        "setWeight: 25",
        "setWeight: 140",
        "spec.steps[2].setWeight",
        "140 is above 100 (a weight is a percent from 0 to 100)",
    );
    one_error(
        LOCAL,
        "setWeight: 25",
        "setWeight: -5",
        "spec.steps[2].setWeight",
        "-5 is below 0",
    );
    one_error(
        LOCAL,
        "percent: 20",
        "percent: 101",
        "spec.steps[5].setMirror.percent",
        "101 is above 100",
    );
    let problems = with(LOCAL, "setWeight: 50", "setWeight: 10");
    assert!(errors(&problems).is_empty(), "a decrease is allowed");
    let w: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        vec![
            "warning: spec.steps[6].setWeight: 10 is below the previous weight 25: traffic moves back to stable here (fine if meant; otherwise keep weights rising)"
        ]
    );
}

#[test]
fn step_rules() {
    one_error(
        LOCAL,
        "pause: {duration: 1m}",
        "pause: {duration: 0s}",
        "spec.steps[1].pause.duration",
        "does nothing",
    );
    one_error(
        LOCAL,
        "analysis: {timeout: 10m}",
        "analysis: {timeout: 5s}",
        "spec.steps[3].analysis.timeout",
        "shorter than the analysis interval 10s",
    );
    one_error(
        LOCAL,
        "- setWeight: 5\n",
        "- analysis: {}\n    - setWeight: 5\n",
        "spec.steps[0].analysis",
        "can only time out",
    );
    one_error(
        LOCAL,
        "{header: x-canary, value: always}",
        "{header: x-canary, cookie: c, value: always}",
        "spec.steps[4].setHeaderRoute.match[0]",
        "exactly one of `header` and `cookie`",
    );
    one_error(
        LOCAL,
        "{header: x-canary, value: always}",
        "{header: x-canary}",
        "spec.steps[4].setHeaderRoute.match[0]",
        "exactly one of `value` and `regex`",
    );
    one_error(
        LOCAL,
        "{header: x-canary, value: always}",
        "{header: 'x canary', value: always}",
        "spec.steps[4].setHeaderRoute.match[0]",
        "not a valid header or cookie name",
    );
    one_error(
        LOCAL,
        "regex: '^yes$'",
        "regex: '^(yes'",
        "spec.steps[4].setHeaderRoute.match[1].regex",
        "not a regular expression",
    );
}

#[test]
fn steps_must_send_traffic() {
    let none = "  steps:\n    - setWeight: 0\n    - pause: {duration: 1m}\n  analysis:";
    let problems = with(
        LOCAL,
        &LOCAL[LOCAL.find("  steps:").unwrap()..LOCAL.find("  sessionAffinity").unwrap()],
        &none.replace("\n  analysis:", "\n"),
    );
    assert_eq!(
        errors(&problems),
        vec![
            "spec.steps: no step sends the canary any traffic (add a setWeight step above 0, or a setHeaderRoute or setMirror step)"
        ]
    );
    let start = LOCAL.find("  steps:").unwrap();
    let end = LOCAL.find("  sessionAffinity").unwrap();
    let problems = with(LOCAL, &LOCAL[start..end], "  steps: []\n");
    assert_eq!(
        errors(&problems),
        vec!["spec.steps: there are no steps (add at least `- setWeight: 10`)"]
    );
}

#[test]
fn upstream_rules() {
    let errs = errors(&with(
        LOCAL,
        "  steps:",
        "  template: {spec: {containers: [{name: a, image: b}]}}\n  steps:",
    ));
    assert_eq!(
        errs,
        vec![
            "spec: both `upstreams` and `template` are set (use `upstreams` for coalmine run, or `template` for Kubernetes, not both)"
        ]
    );
    one_error(
        LOCAL,
        "  upstreams:\n    stable: [http://127.0.0.1:9001]\n    canary: [http://127.0.0.1:9002]\n",
        "",
        "spec",
        "neither `upstreams` nor `template`",
    );
    one_error(
        LOCAL,
        "stable: [http://127.0.0.1:9001]",
        "stable: []",
        "spec.upstreams.stable",
        "is empty",
    );
    one_error(
        LOCAL,
        "canary: [http://127.0.0.1:9002]",
        "canary: ['127.0.0.1:9002']",
        "spec.upstreams.canary[0]",
        "not an http:// URL",
    );
    one_error(
        LOCAL,
        "canary: [http://127.0.0.1:9002]",
        "canary: [http://127.0.0.1:99999]",
        "spec.upstreams.canary[0]",
        "bad port",
    );
    one_error(
        LOCAL,
        "canary: [http://127.0.0.1:9002]",
        "canary: [http://127.0.0.1:9001]",
        "spec.upstreams.canary[0]",
        "also a stable upstream",
    );
    one_error(
        LOCAL,
        "canary: [http://127.0.0.1:9002]",
        "canary: [http://127.0.0.1:9002]\n    listen: localhost",
        "spec.upstreams.listen",
        "not an address",
    );
    let w = with(LOCAL, "  steps:", "  replicas: 3\n  steps:");
    assert_eq!(
        w.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["warning: spec.replicas: is for Kubernetes; coalmine run ignores it"]
    );
}

#[test]
fn kubernetes_rules() {
    one_error(
        KUBE,
        "replicas: 4",
        "replicas: -1",
        "spec.replicas",
        "-1 is negative",
    );
    one_error(
        KUBE,
        "{containers: [{name: myapp, image: 'myapp:2.0', ports: [{containerPort: 8080}]}]}",
        "{containers: []}",
        "spec.template.spec.containers",
        "no containers",
    );
    one_error(
        KUBE,
        "selector: {matchLabels: {app: myapp}}",
        "selector: {matchLabels: {app: other}}",
        "spec.selector.matchLabels.app",
        "no label app: other",
    );
    one_error(
        KUBE,
        "port: 80,",
        "port: 0,",
        "spec.service.port",
        "0 is not a port",
    );
    one_error(
        KUBE,
        "targetPort: 8080",
        "targetPort: 70000",
        "spec.service.targetPort",
        "70000 is not a port",
    );
    one_error(
        KUBE,
        "gatewayAPI: {httpRoute: myapp}",
        "gatewayAPI: {httpRoute: myapp}\n    nginx: {ingress: myapp}",
        "spec.trafficRouting",
        "more than one router: gatewayAPI, nginx",
    );
    one_error(
        KUBE,
        "gatewayAPI: {httpRoute: myapp}",
        "gatewayAPI: {httpRoute: ''}",
        "spec.trafficRouting.gatewayAPI.httpRoute",
        "is empty",
    );
    one_error(
        KUBE,
        "gatewayAPI: {httpRoute: myapp}",
        "replicas: {}",
        "spec.steps[1].setHeaderRoute",
        "the `replicas` router cannot route by header",
    );
    one_error(
        KUBE,
        "  trafficRouting:\n    gatewayAPI: {httpRoute: myapp}\n",
        "",
        "spec.steps[1].setHeaderRoute",
        "the `replicas` router",
    );
}

#[test]
fn router_capabilities() {
    let nginx = KUBE.replace("gatewayAPI: {httpRoute: myapp}", "nginx: {ingress: myapp}");
    one_error(
        &nginx,
        "  steps:",
        "  sessionAffinity: {cookie: c}\n  steps:",
        "spec.sessionAffinity",
        "the `nginx` router cannot keep sessions (use the proxy router)",
    );
    one_error(
        &nginx,
        "- setWeight: 5\n",
        "- setWeight: 5\n    - setMirror: {percent: 10}\n",
        "spec.steps[1].setMirror",
        "the `nginx` router cannot mirror traffic",
    );
    assert!(
        errors(&with(
            KUBE,
            "- setWeight: 5\n",
            "- setWeight: 5\n    - setMirror: {percent: 10}\n"
        ))
        .is_empty()
    );
    let replicas = KUBE
        .replace("gatewayAPI: {httpRoute: myapp}", "replicas: {}")
        .replace(
            "    - setHeaderRoute: {match: [{header: x-canary, value: always}]}\n",
            "",
        );
    one_error(
        &replicas,
        "  steps:",
        "  sessionAffinity: {cookie: c}\n  steps:",
        "spec.sessionAffinity",
        "the `replicas` router cannot keep sessions",
    );
}

#[test]
fn proxy_settings_rules() {
    let proxy = |settings: &str| {
        KUBE.replace(
            "gatewayAPI: {httpRoute: myapp}",
            &format!("proxy: {settings}"),
        )
    };
    for ok in [
        "{}",
        "{replicas: 1}",
        "{replicas: 3, nodeSelector: {pool: edge}, resources: {requests: {cpu: 100m}}}",
    ] {
        assert!(
            errors(&with(&proxy(ok), "  steps:", "  steps:")).is_empty(),
            "{ok}"
        );
    }
    one_error(
        &proxy("{}"),
        "proxy: {}",
        "proxy: {replicas: 0}",
        "spec.trafficRouting.proxy.replicas",
        "0 proxy pods would serve no request (use 1 or more, or leave it out for 2)",
    );
    one_error(
        &proxy("{}"),
        "proxy: {}",
        "proxy: {replics: 2}",
        "spec.trafficRouting.proxy.replics",
        "replicas",
    );
}

#[test]
fn analysis_rules() {
    one_error(
        LOCAL,
        "alpha: 0.05",
        "alpha: 0.7",
        "spec.analysis.alpha",
        "0.7 is outside (0, 0.5]",
    );
    one_error(
        LOCAL,
        "alpha: 0.05",
        "alpha: 0",
        "spec.analysis.alpha",
        "0 is outside (0, 0.5]",
    );
    one_error(
        LOCAL,
        "interval: 10s",
        "interval: 500ms",
        "spec.analysis.interval",
        "too short",
    );
    one_error(
        LOCAL,
        "{name: slow,",
        "{name: '',",
        "spec.analysis.metrics[1].name",
        "is empty",
    );
    one_error(
        LOCAL,
        "{name: slow,",
        "{name: errors,",
        "spec.analysis.metrics[1].name",
        "`errors` is used by an earlier metric",
    );
    one_error(
        LOCAL,
        "{name: errors, builtin: errors, maxRatio: 1.0}",
        "{name: errors, maxRatio: 1.0}",
        "spec.analysis.metrics[0]",
        "has no provider",
    );
    one_error(
        LOCAL,
        "{name: errors, builtin: errors, maxRatio: 1.0}",
        "{name: errors, builtin: errors, webhook: {url: 'http://x'}}",
        "spec.analysis.metrics[0]",
        "more than one provider",
    );
    one_error(
        LOCAL,
        "{name: errors, builtin: errors, maxRatio: 1.0}",
        "{name: errors, builtin: errors, maxRatio: 0}",
        "spec.analysis.metrics[0].maxRatio",
        "not a positive number",
    );
    one_error(
        LOCAL,
        "{name: errors, builtin: errors, maxRatio: 1.0}",
        "{name: errors, builtin: errors, failureLimit: 3}",
        "spec.analysis.metrics[0].failureLimit",
        "only applies to threshold metrics",
    );
    one_error(
        LOCAL,
        "{name: errors, builtin: errors, maxRatio: 1.0}",
        "{name: errors, builtin: errors, slowerThan: 1s}",
        "spec.analysis.metrics[0].slowerThan",
        "only applies to builtin: latency",
    );
    one_error(
        LOCAL,
        "{name: slow, builtin: latency, slowerThan: 300ms}",
        "{name: slow, builtin: latency}",
        "spec.analysis.metrics[1].slowerThan",
        "required for builtin: latency",
    );
    one_error(
        LOCAL,
        "threshold: {max: 0.5}",
        "threshold: {}",
        "spec.analysis.metrics[3].threshold",
        "neither min nor max",
    );
    one_error(
        LOCAL,
        "threshold: {max: 0.5}",
        "threshold: {min: 2, max: 0.5}",
        "spec.analysis.metrics[3].threshold",
        "min 2 is above max 0.5",
    );
    one_error(
        LOCAL,
        "failureLimit: 3",
        "failureLimit: 0",
        "spec.analysis.metrics[3].failureLimit",
        "0 is below 1",
    );
    one_error(
        LOCAL,
        "threshold: {max: 0.5}",
        "threshold: {max: 0.5}\n        maxRatio: 2",
        "spec.analysis.metrics[3].maxRatio",
        "remove one of maxRatio and threshold",
    );
}

#[test]
fn provider_rules() {
    one_error(
        LOCAL,
        "address: http://127.0.0.1:9090\n",
        "address: prometheus:9090\n",
        "spec.analysis.metrics[2].prometheus.address",
        "not an http:// URL",
    );
    one_error(
        LOCAL,
        "          bad: sum",
        "          bda: sum",
        "spec.analysis.metrics[2].prometheus.bda",
        "did you mean `bad`?",
    );
    one_error(
        LOCAL,
        "[{{interval}}]))\n          bad",
        "[{{intervall}}]))\n          bad",
        "spec.analysis.metrics[2].prometheus.total",
        "unknown placeholder `{{intervall}}` (did you mean `{{interval}}`?)",
    );
    one_error(
        LOCAL,
        "total: sum(increase(http_requests_total{track=\"{{track}}\"}",
        "total: sum(increase(http_requests_total{track=\"canary\"}",
        "spec.analysis.metrics[2].prometheus.total",
        "does not use `{{track}}`",
    );
    let start = LOCAL.find("          bad: sum").unwrap();
    let end = start + LOCAL[start..].find('\n').unwrap() + 1;
    one_error(
        LOCAL,
        &LOCAL[start..end],
        "",
        "spec.analysis.metrics[2].prometheus.bad",
        "required to compare canary with stable",
    );
    one_error(
        LOCAL,
        "        threshold: {max: 0.5}\n        failureLimit: 3\n",
        "",
        "spec.analysis.metrics[3].prometheus.query",
        "cannot be compared with stable",
    );
    one_error(
        LOCAL,
        "total: $.total",
        "total: total",
        "spec.analysis.metrics[4].webhook.total",
        "not a selector",
    );
    one_error(
        LOCAL,
        "url: 'http://127.0.0.1:8000/errors?track={{track}}'",
        "url: 'http://127.0.0.1:8000/errors?track={{tracks}}'",
        "spec.analysis.metrics[4].webhook.url",
        "did you mean `{{track}}`?",
    );
    one_error(
        LOCAL,
        "- name: hook\n        webhook:",
        "- name: hook\n        datadog: {}\n        webhook:",
        "spec.analysis.metrics[4].datadog",
        "unknown metric provider `datadog` (use one of builtin, prometheus or webhook)",
    );
}

#[test]
fn other_rules() {
    one_error(
        LOCAL,
        "cookie: coalmine-track,",
        "cookie: 'a b',",
        "spec.sessionAffinity.cookie",
        "not a valid cookie name",
    );
    one_error(
        LOCAL,
        "maxAge: 1h",
        "maxAge: 0s",
        "spec.sessionAffinity.maxAge",
        "expire the cookie at once",
    );
    one_error(
        LOCAL,
        "progressDeadline: 10m",
        "progressDeadline: 0s",
        "spec.progressDeadline",
        "no time",
    );
    one_error(
        LOCAL,
        "progressDeadline: 10m",
        "progressDeadline: ten",
        "spec.progressDeadline",
        "`ten` is not a duration",
    );
    one_error(
        LOCAL,
        "onInconclusive: pause",
        "onInconclusive: wait",
        "spec.onInconclusive",
        "unknown value `wait`",
    );
    let without = with(LOCAL, "    - analysis: {timeout: 10m}\n", "");
    assert!(errors(&without).is_empty());
    let start = LOCAL.find("  analysis:\n    interval").unwrap();
    let end = LOCAL.find("  onInconclusive").unwrap();
    let problems = with(LOCAL, &LOCAL[start..end], "");
    assert_eq!(
        errors(&problems),
        vec![
            "spec.steps[3].analysis: there are no metrics to judge (add spec.analysis.metrics, e.g. `{name: errors, builtin: errors}`)"
        ]
    );
}

#[test]
fn a_file_with_many_problems_gets_them_all() {
    let text = "apiVersion: coalmine.dev/v1alpha1
kind: Canary
metadata: {name: shop}
spec:
  upstreams: {stable: [http://127.0.0.1:9001], canary: ['ftp://x']}
  steps:
    - setWeight: 140
    - analysis: {timeout: 1s}
    - setMirror: {percent: -3}
  analysis:
    alpha: 0.9
    metrics:
      - {name: a, builtin: errors}
      - {name: a, builtin: latency}
";
    let errs = errors(&load(text).unwrap_err());
    let paths: Vec<&str> = errs.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(
        paths,
        vec![
            "spec.upstreams.canary[0]",
            "spec.analysis.alpha",
            "spec.analysis.metrics[1].name",
            "spec.analysis.metrics[1].slowerThan",
            "spec.steps[0].setWeight",
            "spec.steps[1].analysis.timeout",
            "spec.steps[2].setMirror.percent",
        ],
        "{errs:#?}"
    );
}

#[test]
fn notification_rules() {
    let local = |n: &str| format!("{LOCAL}  notifications:\n    - {n}\n");
    let kube = |n: &str| format!("{KUBE}  notifications:\n    - {n}\n");
    let good = kube("{urlFrom: {secretKeyRef: {name: slack}}, format: slack}");
    assert!(load(&good).is_ok(), "{:?}", load(&good).err());
    assert!(load(&local("{url: 'http://127.0.0.1:9/hook'}")).is_ok());
    let cases = [
        (
            local("{urlFrom: {secretKeyRef: {name: slack}}}"),
            "spec.notifications[0].urlFrom",
            "no Secrets",
        ),
        (
            kube("{url: 'http://h/x', urlFrom: {secretKeyRef: {name: slack}}}"),
            "spec.notifications[0]",
            "both `url` and `urlFrom`",
        ),
        (
            kube("{format: slack}"),
            "spec.notifications[0]",
            "neither `url` nor `urlFrom`",
        ),
        (
            kube("{urlFrom: {secretKeyRef: {name: slack, key: ''}}}"),
            "spec.notifications[0].urlFrom.secretKeyRef",
            "must not be empty",
        ),
        (
            kube("{url: 'ftp://h/x'}"),
            "spec.notifications[0].url",
            "not an http:// or https:// URL",
        ),
    ];
    for (text, path, why) in cases {
        let problems = match load(&text) {
            Ok((_, _, w)) => w,
            Err(p) => p,
        };
        let errs: Vec<&Problem> = problems.iter().filter(|p| p.is_error()).collect();
        assert_eq!(errs.len(), 1, "{text}: {:?}", errors(&problems));
        assert_eq!(errs[0].path, path, "{}", errs[0]);
        assert!(errs[0].to_string().contains(why), "{}", errs[0]);
    }
}

#[test]
fn istio_destination_rule_rules() {
    let istio = |dr: &str| {
        KUBE.replacen(
            "gatewayAPI: {httpRoute: myapp}",
            &format!("istio: {{virtualService: myapp{dr}}}"),
            1,
        )
    };
    assert!(load(&istio("")).is_ok());
    let good = istio(
        ", destinationRule: {name: myapp, stableSubsetName: stable, canarySubsetName: canary}",
    );
    let (_, plan, _) = load(&good).expect("valid");
    assert!(matches!(
        plan.target,
        Target::Kubernetes { router: Router::Istio { destination_rule: Some(ref d), .. } }
            if d.canary_subset_name == "canary"
    ));
    for (dr, path) in [
        (
            ", destinationRule: {name: myapp, stableSubsetName: v1, canarySubsetName: v1}",
            "spec.trafficRouting.istio.destinationRule.canarySubsetName",
        ),
        (
            ", destinationRule: {name: '', stableSubsetName: a, canarySubsetName: b}",
            "spec.trafficRouting.istio.destinationRule.name",
        ),
    ] {
        let problems = match load(&istio(dr)) {
            Ok((_, _, w)) => w,
            Err(p) => p,
        };
        let errs: Vec<&Problem> = problems.iter().filter(|p| p.is_error()).collect();
        assert_eq!(errs.len(), 1, "{dr}: {:?}", errors(&problems));
        assert_eq!(errs[0].path, path, "{}", errs[0]);
    }
}
