//! Checks a parsed Canary and builds its [`Plan`], collecting every problem
//! at once, each named by its path with a hint on how to fix it.

use std::collections::BTreeSet;

use crate::Duration;
use crate::capability::Capability;
use crate::percent::Percent;
use crate::plan::{
    AnalysisPlan, Check, DEFAULT_ALPHA, DEFAULT_GATE_TIMEOUT, DEFAULT_INTERVAL,
    DEFAULT_PROGRESS_DEADLINE, MetricPlan, Plan, PlanStep, Provider, Router, Target,
};
use crate::problem::{Problem, did_you_mean};
use crate::routes::{HeaderMatch, is_token};
use crate::spec::{
    API_VERSION, BuiltinMetric, Canary, CanarySpec, HttpMethod, KIND, MetricSpec, Step,
    TrafficRouting,
};

/// The outcome of checking a Canary.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The plan, when there is no error.
    pub plan: Option<Plan>,
    /// Every error and warning, grouped by part of the spec.
    pub problems: Vec<Problem>,
}

/// Parses and checks Canary text: the plan and its warnings, or every
/// problem. Structural problems (unknown fields, values that do not decode)
/// and semantic ones come together: the checks run on what could be
/// decoded, and only their findings about the broken parts are left out.
pub fn load(text: &str) -> Result<(Canary, Plan, Vec<Problem>), Vec<Problem>> {
    let crate::load::Parsed {
        canary,
        problems,
        broken_steps,
        left_out,
    } = crate::load::parse(text);
    let Some(canary) = canary else {
        return Err(problems);
    };
    let checked = check_with(&canary, &broken_steps);
    if problems.is_empty() {
        return match checked.plan {
            Some(plan) => Ok((canary, plan, checked.problems)),
            None => Err(checked.problems),
        };
    }
    let shown: Vec<Problem> = checked
        .problems
        .into_iter()
        .filter(|p| !about_broken_part(&p.path, &problems, &left_out))
        .collect();
    let mut problems = problems;
    problems.extend(shown);
    Err(problems)
}

/// Whether a finding at `path` is about a part that did not decode: inside
/// the field (or list element) a structural problem names, or around an
/// object left out for a missing field.
fn about_broken_part(path: &str, structural: &[Problem], left_out: &[String]) -> bool {
    let under = |path: &str, scope: &str| {
        path == scope
            || path
                .strip_prefix(scope)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    structural.iter().any(|s| {
        // A problem inside a list element concerns the whole element.
        let scope = match s.path.rfind(']') {
            Some(end) => &s.path[..=end],
            None => s.path.as_str(),
        };
        !scope.is_empty() && under(path, scope)
    }) || left_out
        .iter()
        .any(|gone| under(gone, path) || (path.is_empty() && !gone.is_empty()))
}

/// Checks a Canary. The plan is present exactly when no problem is an error.
pub fn check(canary: &Canary) -> Checked {
    check_with(canary, &BTreeSet::new())
}

/// Checks a Canary whose steps at `broken_steps` did not decode (their
/// places hold placeholders): those steps make the plan invalid and are
/// assumed to have sent traffic, so no gate after them is called starved.
fn check_with(canary: &Canary, broken_steps: &BTreeSet<usize>) -> Checked {
    let mut v = Validator {
        broken_steps: broken_steps.clone(),
        ..Validator::default()
    };
    v.document(canary);
    let plan = v.spec(&canary.spec, canary.metadata.name.as_deref());
    let plan = plan.filter(|_| !v.problems.iter().any(Problem::is_error));
    Checked {
        plan,
        problems: v.problems,
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
    broken_steps: BTreeSet<usize>,
}

const PLACEHOLDERS: [&str; 4] = ["track", "interval", "name", "namespace"];

impl Validator {
    fn error(&mut self, path: impl Into<String>, msg: impl Into<String>) -> &mut Problem {
        self.problems.push(Problem::error(path, msg));
        self.problems.last_mut().expect("just pushed")
    }

    fn warn(&mut self, path: impl Into<String>, msg: impl Into<String>) -> &mut Problem {
        self.problems.push(Problem::warning(path, msg));
        self.problems.last_mut().expect("just pushed")
    }

    fn document(&mut self, c: &Canary) {
        if c.api_version != API_VERSION {
            self.error(
                "apiVersion",
                format!("`{}` is not {API_VERSION}", c.api_version),
            )
            .hint = Some(format!("write `apiVersion: {API_VERSION}`"));
        }
        if c.kind != KIND {
            self.error("kind", format!("`{}` is not {KIND}", c.kind))
                .hint = Some(format!("write `kind: {KIND}`"));
        }
        if let Some(name) = &c.metadata.name
            && !is_dns_label(name)
        {
            self.error("metadata.name", format!("`{name}` is not a valid name")).hint = Some(
                    "use at most 53 lowercase letters, digits and '-', starting and ending with a letter or digit".into(),
                );
        }
    }

    fn spec(&mut self, spec: &CanarySpec, name: Option<&str>) -> Option<Plan> {
        let target = self.target(spec, name);
        let router = match &target {
            Some(Target::Kubernetes { router }) => Some(router.clone()),
            Some(Target::Local { .. }) => Some(Router::Proxy),
            None => None,
        };
        let analysis = spec.analysis.as_ref().and_then(|a| self.analysis(a));
        // From the spec, not the checked plan: a bad metric must not also
        // make every gate report "no metrics".
        let metric_count = spec.analysis.as_ref().map_or(0, |a| a.metrics.len());
        let interval = spec
            .analysis
            .as_ref()
            .and_then(|a| a.interval)
            .unwrap_or(DEFAULT_INTERVAL);
        let steps = self.steps(&spec.steps, router.as_ref(), metric_count, interval);
        if spec.analysis.is_none() && !spec.steps.is_empty() {
            self.warn(
                "spec.analysis",
                "no analysis: nothing is judged and nothing rolls back by itself",
            )
            .hint =
                Some("add spec.analysis.metrics, e.g. `{name: errors, builtin: errors}`".into());
        }
        if let Some(aff) = &spec.session_affinity {
            if !is_token(&aff.cookie) {
                self.error(
                    "spec.sessionAffinity.cookie",
                    format!("`{}` is not a valid cookie name", aff.cookie),
                )
                .hint = Some("use letters, digits and '-', e.g. coalmine-track".into());
            }
            if aff.max_age == Some(Duration::ZERO) {
                self.error(
                    "spec.sessionAffinity.maxAge",
                    "0s would expire the cookie at once",
                )
                .hint = Some("remove it for a browser-session cookie, or write e.g. 1h".into());
            }
            self.capability(
                "spec.sessionAffinity",
                router.as_ref(),
                Capability::SessionAffinity,
            );
        }
        for (i, n) in spec.notifications.iter().enumerate() {
            match (&n.url, &n.url_from) {
                (Some(url), None) => {
                    if !crate::spec::is_http_url(url) {
                        self.error(
                            format!("spec.notifications[{i}].url"),
                            format!("`{url}` is not an http:// or https:// URL"),
                        )
                        .hint = Some(
                            "write e.g. https://hooks.slack.com/services/T000/B000/XXXX".into(),
                        );
                    }
                }
                (None, Some(from)) => {
                    let r = &from.secret_key_ref;
                    if spec.upstreams.is_some() {
                        self.error(
                            format!("spec.notifications[{i}].urlFrom"),
                            "coalmine run has no Secrets to read",
                        )
                        .hint = Some("write the webhook's `url` instead".into());
                    } else if r.name.trim().is_empty() || r.key().trim().is_empty() {
                        self.error(
                            format!("spec.notifications[{i}].urlFrom.secretKeyRef"),
                            "the Secret's name and key must not be empty",
                        )
                        .hint = Some("write e.g. {name: slack-webhook, key: address}".into());
                    }
                }
                (Some(_), Some(_)) => {
                    self.error(
                        format!("spec.notifications[{i}]"),
                        "both `url` and `urlFrom` are set",
                    )
                    .hint = Some("keep one: urlFrom keeps the URL out of the Canary".into());
                }
                (None, None) => {
                    self.error(
                        format!("spec.notifications[{i}]"),
                        "neither `url` nor `urlFrom` is set",
                    )
                    .hint = Some(
                        "add `url: https://…`, or `urlFrom: {secretKeyRef: {name: SECRET}}`".into(),
                    );
                }
            }
        }
        if spec.progress_deadline == Some(Duration::ZERO) {
            self.error(
                "spec.progressDeadline",
                "0s leaves the canary no time to start",
            )
            .hint = Some("write e.g. 10m".into());
        }
        Some(Plan {
            name: name.unwrap_or("canary").to_owned(),
            target: target?,
            steps: steps?,
            analysis,
            on_inconclusive: spec.on_inconclusive.unwrap_or_default(),
            progress_deadline: spec.progress_deadline.unwrap_or(DEFAULT_PROGRESS_DEADLINE),
            session_affinity: spec.session_affinity.clone(),
        })
    }

    fn target(&mut self, spec: &CanarySpec, name: Option<&str>) -> Option<Target> {
        match (&spec.upstreams, &spec.template) {
            (Some(_), Some(_)) => {
                self.error("spec", "both `upstreams` and `template` are set")
                    .hint = Some(
                    "use `upstreams` for coalmine run, or `template` for Kubernetes, not both"
                        .into(),
                );
                None
            }
            (None, None) => {
                self.error("spec", "neither `upstreams` nor `template` is set").hint = Some(
                    "add `upstreams: {stable: [URL], canary: [URL]}` for coalmine run, or a pod `template` for Kubernetes".into(),
                );
                None
            }
            (Some(up), None) => {
                for (field, value) in [
                    ("replicas", spec.replicas.is_some()),
                    ("selector", spec.selector.is_some()),
                    ("service", spec.service.is_some()),
                    ("trafficRouting", spec.traffic_routing.is_some()),
                ] {
                    if value {
                        self.warn(
                            format!("spec.{field}"),
                            "is for Kubernetes; coalmine run ignores it",
                        );
                    }
                }
                let stable = self.urls("spec.upstreams.stable", &up.stable);
                let canary = self.urls("spec.upstreams.canary", &up.canary);
                for (i, url) in up.canary.iter().enumerate() {
                    if up.stable.contains(url) {
                        self.error(
                            format!("spec.upstreams.canary[{i}]"),
                            format!("{url} is also a stable upstream"),
                        )
                        .hint = Some("the canary must be a different server from stable".into());
                    }
                }
                if let Some(path) = &up.health_path
                    && (!path.starts_with('/') || path.contains(char::is_whitespace))
                {
                    self.error(
                        "spec.upstreams.healthPath",
                        format!("`{path}` is not a path"),
                    )
                    .hint = Some("write a path starting with `/`, e.g. /healthz".into());
                }
                if let Some(listen) = &up.listen
                    && listen.parse::<std::net::SocketAddr>().is_err()
                {
                    self.error(
                        "spec.upstreams.listen",
                        format!("`{listen}` is not an address"),
                    )
                    .hint = Some("write IP:PORT, e.g. 127.0.0.1:8080".into());
                }
                Some(Target::Local {
                    stable: stable?,
                    canary: canary?,
                    listen: up.listen.clone(),
                })
            }
            (None, Some(_)) => {
                if name.is_none() {
                    self.error("metadata.name", "is required in Kubernetes")
                        .hint = Some("the Deployments and Services are named after it".into());
                }
                self.kubernetes(spec);
                let router = self.router(spec.traffic_routing.as_ref());
                Some(Target::Kubernetes { router: router? })
            }
        }
    }

    fn urls(&mut self, path: &str, urls: &[String]) -> Option<Vec<String>> {
        if urls.is_empty() {
            self.error(path, "is empty").hint =
                Some("list at least one server, e.g. [http://127.0.0.1:9001]".into());
            return None;
        }
        let mut ok = true;
        for (i, url) in urls.iter().enumerate() {
            if let Err(why) = check_http_url(url) {
                self.error(format!("{path}[{i}]"), format!("`{url}` {why}"))
                    .hint = Some("write http://HOST:PORT, e.g. http://127.0.0.1:9001".into());
                ok = false;
            }
        }
        ok.then(|| urls.to_vec())
    }

    fn kubernetes(&mut self, spec: &CanarySpec) {
        if let Some(r) = spec.replicas.filter(|r| *r < 0) {
            self.error("spec.replicas", format!("{r} is negative")).hint =
                Some("use 0 or more".into());
        }
        let template = spec.template.as_ref();
        let containers = template
            .and_then(|t| t.get("spec"))
            .and_then(|s| s.get("containers"))
            .and_then(|c| c.as_array());
        if containers.is_none_or(|c| c.is_empty()) {
            self.error("spec.template.spec.containers", "no containers")
                .hint =
                Some("a pod template needs at least one container with a name and an image".into());
        }
        let labels = template
            .and_then(|t| t.get("metadata"))
            .and_then(|m| m.get("labels"))
            .and_then(|l| l.as_object());
        match &spec.selector {
            Some(sel) => {
                for (k, v) in &sel.match_labels {
                    if labels.and_then(|l| l.get(k)).and_then(|x| x.as_str()) != Some(v.as_str()) {
                        self.error(
                            format!("spec.selector.matchLabels.{k}"),
                            format!("the pod template has no label {k}: {v}"),
                        )
                        .hint =
                            Some("the selector must match spec.template.metadata.labels".into());
                    }
                }
            }
            None if labels.is_none_or(|l| l.is_empty()) => {
                self.error("spec.template.metadata.labels", "no labels")
                    .hint =
                    Some("add labels (e.g. app: myapp); the selector defaults to them".into());
            }
            None => {}
        }
        if let Some(svc) = &spec.service {
            if !(1..=65535).contains(&svc.port) {
                self.error("spec.service.port", format!("{} is not a port", svc.port))
                    .hint = Some("use 1 to 65535".into());
            }
            match &svc.target_port {
                Some(crate::spec::PortRef::Number(p)) if !(1..=65535).contains(p) => {
                    self.error("spec.service.targetPort", format!("{p} is not a port"))
                        .hint = Some("use 1 to 65535 or a container port's name".into());
                }
                Some(crate::spec::PortRef::Name(n)) if n.is_empty() => {
                    self.error("spec.service.targetPort", "is empty");
                }
                _ => {}
            }
        }
    }

    fn router(&mut self, tr: Option<&TrafficRouting>) -> Option<Router> {
        let Some(tr) = tr else {
            return Some(Router::Replicas);
        };
        let mut set = Vec::new();
        if tr.replicas.is_some() {
            set.push(Router::Replicas);
        }
        if let Some(g) = &tr.gateway_api {
            self.non_empty("spec.trafficRouting.gatewayAPI.httpRoute", &g.http_route);
            set.push(Router::GatewayApi {
                http_route: g.http_route.clone(),
            });
        }
        if let Some(n) = &tr.nginx {
            self.non_empty("spec.trafficRouting.nginx.ingress", &n.ingress);
            set.push(Router::Nginx {
                ingress: n.ingress.clone(),
            });
        }
        if let Some(i) = &tr.istio {
            self.non_empty(
                "spec.trafficRouting.istio.virtualService",
                &i.virtual_service,
            );
            if let Some(dr) = &i.destination_rule {
                let at = "spec.trafficRouting.istio.destinationRule";
                self.non_empty(&format!("{at}.name"), &dr.name);
                self.non_empty(&format!("{at}.stableSubsetName"), &dr.stable_subset_name);
                self.non_empty(&format!("{at}.canarySubsetName"), &dr.canary_subset_name);
                if dr.stable_subset_name == dr.canary_subset_name {
                    self.error(format!("{at}.canarySubsetName"), "is the stable subset too")
                        .hint = Some("name two subsets, e.g. stable and canary".into());
                }
            }
            set.push(Router::Istio {
                virtual_service: i.virtual_service.clone(),
                route: i.route.clone(),
                destination_rule: i.destination_rule.clone(),
            });
        }
        if let Some(p) = &tr.proxy {
            if let Some(r) = p.replicas.filter(|r| *r < 1) {
                self.error(
                    "spec.trafficRouting.proxy.replicas",
                    format!("{r} proxy pods would serve no request"),
                )
                .hint = Some("use 1 or more, or leave it out for 2".into());
            }
            set.push(Router::Proxy);
        }
        match set.len() {
            0 => Some(Router::Replicas),
            1 => set.pop(),
            _ => {
                let names: Vec<&str> = set.iter().map(Router::name).collect();
                self.error(
                    "spec.trafficRouting",
                    format!("more than one router: {}", names.join(", ")),
                )
                .hint = Some("keep exactly one".into());
                None
            }
        }
    }

    /// An error at `path` when `router` cannot do `c` ([`crate::capability`]).
    fn capability(&mut self, path: &str, router: Option<&Router>, c: Capability) {
        if let Some(r) = router.filter(|r| !r.can(c)) {
            self.error(
                path,
                format!("the `{}` router cannot {}", r.name(), c.verb()),
            )
            .hint = Some(c.hint());
        }
    }

    fn non_empty(&mut self, path: &str, value: &str) {
        if value.trim().is_empty() {
            self.error(path, "is empty").hint = Some("name the object to use".into());
        }
    }

    fn steps(
        &mut self,
        steps: &[Step],
        router: Option<&Router>,
        metrics: usize,
        interval: Duration,
    ) -> Option<Vec<PlanStep>> {
        if steps.is_empty() {
            self.error("spec.steps", "there are no steps").hint =
                Some("add at least `- setWeight: 10`".into());
            return None;
        }
        let mut plan = Vec::with_capacity(steps.len());
        let mut weight = Percent::ZERO;
        let mut live = false; // whether the canary gets any traffic yet
        let mut ok = true;
        for (i, step) in steps.iter().enumerate() {
            let path = format!("spec.steps[{i}]");
            if self.broken_steps.contains(&i) {
                ok = false;
                live = true;
                continue;
            }
            let next = match step {
                Step::SetWeight(w) => self.percent(&format!("{path}.setWeight"), *w, "a weight").map(|w| {
                    if w < weight {
                        self.warn(
                            format!("{path}.setWeight"),
                            format!("{w} is below the previous weight {weight}: traffic moves back to stable here"),
                        )
                        .hint = Some("fine if meant; otherwise keep weights rising".into());
                    }
                    weight = w;
                    PlanStep::SetWeight(w)
                }),
                Step::Pause(p) => {
                    if p.duration == Some(Duration::ZERO) {
                        self.error(format!("{path}.pause.duration"), "a pause of 0s does nothing").hint =
                            Some("remove the step, or write `pause: {}` to wait for promote".into());
                        None
                    } else {
                        Some(PlanStep::Pause(p.duration))
                    }
                }
                Step::Analysis(a) => {
                    let timeout = a.timeout.unwrap_or(DEFAULT_GATE_TIMEOUT);
                    let mut good = true;
                    if metrics == 0 {
                        self.error(format!("{path}.analysis"), "there are no metrics to judge").hint =
                            Some("add spec.analysis.metrics, e.g. `{name: errors, builtin: errors}`".into());
                        good = false;
                    }
                    if timeout < interval {
                        self.error(
                            format!("{path}.analysis.timeout"),
                            format!("{timeout} is shorter than the analysis interval {interval}, so the gate can never see a verdict"),
                        )
                        .hint = Some(format!("use at least {interval}"));
                        good = false;
                    }
                    if !live {
                        self.error(format!("{path}.analysis"), "no step before this gate sends the canary traffic, so it can only time out")
                            .hint = Some("put a setWeight, setHeaderRoute or setMirror step before it".into());
                        good = false;
                    }
                    good.then_some(PlanStep::Analysis { timeout })
                }
                Step::SetHeaderRoute(h) => {
                    self.capability(&format!("{path}.setHeaderRoute"), router, Capability::HeaderRoutes);
                    self.header_matches(&format!("{path}.setHeaderRoute.match"), &h.matches)
                        .map(PlanStep::SetHeaderRoute)
                }
                Step::SetMirror(m) => {
                    self.capability(&format!("{path}.setMirror"), router, Capability::Mirror);
                    self.percent(&format!("{path}.setMirror.percent"), m.percent, "a mirror percent")
                        .map(PlanStep::SetMirror)
                }
            };
            match next {
                Some(s) => {
                    live |= match &s {
                        PlanStep::SetWeight(w) | PlanStep::SetMirror(w) => w.is_positive(),
                        PlanStep::SetHeaderRoute(m) => !m.is_empty(),
                        _ => false,
                    };
                    plan.push(s);
                }
                None => {
                    ok = false;
                    // A broken traffic step was meant to send traffic: do not
                    // also report the gates after it as starved.
                    live |= matches!(
                        step,
                        Step::SetWeight(_) | Step::SetMirror(_) | Step::SetHeaderRoute(_)
                    );
                }
            }
        }
        if ok && !live {
            self.error("spec.steps", "no step sends the canary any traffic")
                .hint =
                Some("add a setWeight step above 0, or a setHeaderRoute or setMirror step".into());
        }
        ok.then_some(plan)
    }

    fn percent(&mut self, path: &str, value: i64, what: &str) -> Option<Percent> {
        match Percent::try_from(value) {
            Ok(v) => Some(v),
            Err(_) => {
                let msg = if value < 0 {
                    format!("{value} is below 0")
                } else {
                    format!("{value} is above 100")
                };
                self.error(path, msg).hint = Some(format!("{what} is a percent from 0 to 100"));
                None
            }
        }
    }

    fn header_matches(&mut self, path: &str, matches: &[HeaderMatch]) -> Option<Vec<HeaderMatch>> {
        let before = self.problems.len();
        for (i, m) in matches.iter().enumerate() {
            self.problems.extend(m.check(&format!("{path}[{i}]")));
        }
        (self.problems.len() == before).then(|| matches.to_vec())
    }

    fn analysis(&mut self, a: &crate::spec::AnalysisSpec) -> Option<AnalysisPlan> {
        let interval = a.interval.unwrap_or(DEFAULT_INTERVAL);
        let mut ok = true;
        if interval < Duration::from_secs(1) {
            self.error("spec.analysis.interval", format!("{interval} is too short"))
                .hint = Some("use 1s or more; 10s is typical".into());
            ok = false;
        }
        let alpha = a.alpha.unwrap_or(DEFAULT_ALPHA);
        if !(alpha > 0.0 && alpha <= 0.5) {
            self.error(
                "spec.analysis.alpha",
                format!("{alpha} is outside (0, 0.5]"),
            )
            .hint = Some(
                "alpha is the chance of rolling back a healthy canary; 0.05 is typical".into(),
            );
            ok = false;
        }
        if a.metrics.is_empty() {
            self.warn("spec.analysis.metrics", "is empty: nothing is judged")
                .hint = Some("add e.g. `{name: errors, builtin: errors}`".into());
        }
        let mut names = BTreeSet::new();
        let mut metrics = Vec::with_capacity(a.metrics.len());
        for (i, m) in a.metrics.iter().enumerate() {
            let path = format!("spec.analysis.metrics[{i}]");
            if m.name.trim().is_empty() {
                self.error(format!("{path}.name"), "is empty").hint =
                    Some("give every metric a name, e.g. errors".into());
                ok = false;
            } else if !names.insert(m.name.as_str()) {
                self.error(
                    format!("{path}.name"),
                    format!("`{}` is used by an earlier metric", m.name),
                )
                .hint = Some("metric names must be unique".into());
                ok = false;
            }
            match self.metric(&path, m) {
                Some(mp) => metrics.push(mp),
                None => ok = false,
            }
        }
        ok.then_some(AnalysisPlan {
            interval,
            alpha,
            metrics,
        })
    }

    fn metric(&mut self, path: &str, m: &MetricSpec) -> Option<MetricPlan> {
        let providers = [
            m.builtin.is_some(),
            m.prometheus.is_some(),
            m.webhook.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if providers != 1 {
            let msg = if providers == 0 {
                "has no provider"
            } else {
                "has more than one provider"
            };
            self.error(path, msg).hint = Some(format!(
                "give exactly one of {}",
                crate::load::metric_providers_list()
            ));
            return None;
        }
        let threshold = m.threshold.is_some();
        let mut ok = true;
        let check = match &m.threshold {
            Some(t) => {
                if m.max_ratio.is_some() {
                    self.error(
                        format!("{path}.maxRatio"),
                        "is for comparisons with stable, and this metric has a threshold",
                    )
                    .hint = Some("remove one of maxRatio and threshold".into());
                    ok = false;
                }
                if t.min.is_none() && t.max.is_none() {
                    self.error(format!("{path}.threshold"), "has neither min nor max")
                        .hint = Some("e.g. threshold: {max: 0.5}".into());
                    ok = false;
                }
                if t.min.iter().chain(&t.max).any(|x| !x.is_finite()) {
                    self.error(format!("{path}.threshold"), "bounds must be finite numbers");
                    ok = false;
                }
                if let (Some(lo), Some(hi)) = (t.min, t.max)
                    && lo > hi
                {
                    self.error(
                        format!("{path}.threshold"),
                        format!("min {lo} is above max {hi}"),
                    );
                    ok = false;
                }
                let limit = m.failure_limit.unwrap_or(1);
                let failure_limit = match u32::try_from(limit) {
                    Ok(l) if l >= 1 => l,
                    _ => {
                        self.error(
                            format!("{path}.failureLimit"),
                            format!("{limit} is below 1"),
                        )
                        .hint = Some(
                            "the number of failed checks that fail the metric; 1 or more".into(),
                        );
                        ok = false;
                        1
                    }
                };
                Check::Threshold {
                    min: t.min,
                    max: t.max,
                    failure_limit,
                }
            }
            None => {
                if m.failure_limit.is_some() {
                    self.error(format!("{path}.failureLimit"), "only applies to threshold metrics").hint =
                        Some("add a threshold, or remove failureLimit: comparisons fail on evidence, not counts".into());
                    ok = false;
                }
                let max_ratio = m.max_ratio.unwrap_or(1.0);
                if !(max_ratio.is_finite() && max_ratio > 0.0) {
                    self.error(
                        format!("{path}.maxRatio"),
                        format!("{max_ratio} is not a positive number"),
                    )
                    .hint = Some(
                        "1.0 means the canary may not be worse than stable; 1.5 tolerates 50% more"
                            .into(),
                    );
                    ok = false;
                }
                Check::Compare { max_ratio }
            }
        };
        let provider = if let Some(b) = m.builtin {
            match (b, m.slower_than) {
                (BuiltinMetric::Latency, None) => {
                    self.error(
                        format!("{path}.slowerThan"),
                        "is required for builtin: latency",
                    )
                    .hint = Some("a request slower than this counts as bad, e.g. 300ms".into());
                    ok = false;
                }
                (BuiltinMetric::Latency, Some(d)) if d.is_zero() => {
                    self.error(format!("{path}.slowerThan"), "0s makes every request slow")
                        .hint = Some("e.g. 300ms".into());
                    ok = false;
                }
                (BuiltinMetric::Errors, Some(_)) => {
                    self.error(
                        format!("{path}.slowerThan"),
                        "only applies to builtin: latency",
                    );
                    ok = false;
                }
                _ => {}
            }
            Provider::Builtin {
                metric: b,
                slower_than: m.slower_than,
            }
        } else {
            if m.slower_than.is_some() {
                self.error(
                    format!("{path}.slowerThan"),
                    "only applies to builtin: latency",
                )
                .hint = Some("count slow requests in the query instead".into());
                ok = false;
            }
            if let Some(p) = &m.prometheus {
                let at = format!("{path}.prometheus");
                ok &= self.url(&format!("{at}.address"), &p.address);
                ok &= self.counts_or_value(
                    &at,
                    threshold,
                    [("total", &p.total), ("bad", &p.bad)],
                    ("query", &p.query),
                );
                for (field, q) in [("total", &p.total), ("bad", &p.bad), ("query", &p.query)] {
                    if let Some(q) = q {
                        ok &= self.template(&format!("{at}.{field}"), q, field != "query");
                    }
                }
                Provider::Prometheus(p.clone())
            } else if let Some(w) = &m.webhook {
                let at = format!("{path}.webhook");
                ok &= self.url(&format!("{at}.url"), &w.url);
                ok &= self.template(&format!("{at}.url"), &w.url, false);
                if let Some(body) = &w.body {
                    ok &= self.template(&format!("{at}.body"), body, false);
                    if w.method != Some(HttpMethod::Post) {
                        self.warn(format!("{at}.body"), "is only sent with method: POST");
                    }
                }
                ok &= self.counts_or_value(
                    &at,
                    threshold,
                    [("total", &w.total), ("bad", &w.bad)],
                    ("value", &w.value),
                );
                for (field, sel) in [("total", &w.total), ("bad", &w.bad), ("value", &w.value)] {
                    if let Some(sel) = sel.as_ref().filter(|s| !s.starts_with('$')) {
                        self.error(
                            format!("{at}.{field}"),
                            format!("`{sel}` is not a selector"),
                        )
                        .hint =
                            Some("write a path into the JSON answer, e.g. $.data.errors".into());
                        ok = false;
                    }
                }
                Provider::Webhook(w.clone())
            } else {
                return None;
            }
        };
        ok.then(|| MetricPlan {
            name: m.name.clone(),
            provider,
            check,
        })
    }

    /// A comparison needs both count fields; a threshold needs the value field.
    fn counts_or_value(
        &mut self,
        at: &str,
        threshold: bool,
        counts: [(&str, &Option<String>); 2],
        value: (&str, &Option<String>),
    ) -> bool {
        let mut ok = true;
        if threshold {
            for (field, v) in counts {
                if v.is_some() {
                    self.error(
                        format!("{at}.{field}"),
                        "is for comparisons, and this metric has a threshold",
                    )
                    .hint = Some(format!("a threshold checks `{}`", value.0));
                    ok = false;
                }
            }
            if value.1.is_none() {
                self.error(
                    format!("{at}.{}", value.0),
                    "is required for a threshold metric",
                );
                ok = false;
            }
        } else {
            if value.1.is_some() {
                self.error(
                    format!("{at}.{}", value.0),
                    "gives one value, which cannot be compared with stable",
                )
                .hint = Some(format!(
                    "add a `threshold`, or give `{}` and `{}` to compare the tracks",
                    counts[0].0, counts[1].0
                ));
                ok = false;
            }
            for (field, v) in counts {
                if v.is_none() && value.1.is_none() {
                    self.error(
                        format!("{at}.{field}"),
                        "is required to compare canary with stable",
                    )
                    .hint = Some(format!("give both `{}` and `{}`", counts[0].0, counts[1].0));
                    ok = false;
                }
            }
        }
        ok
    }

    fn url(&mut self, path: &str, url: &str) -> bool {
        let plain = url.replace("https://", "http://");
        match check_http_url(&plain) {
            Ok(()) => true,
            Err(why) => {
                self.error(path, format!("`{url}` {why}")).hint =
                    Some("write http(s)://HOST[:PORT][/PATH]".into());
                false
            }
        }
    }

    /// Placeholders must be known ones; comparison queries must depend on the track.
    fn template(&mut self, path: &str, text: &str, needs_track: bool) -> bool {
        let mut ok = true;
        let mut rest = text;
        let mut has_track = false;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                self.error(path, "has `{{` without `}}`");
                return false;
            };
            let name = after[..end].trim();
            if name == "track" {
                has_track = true;
            }
            if !PLACEHOLDERS.contains(&name) {
                let problem = self.error(path, format!("unknown placeholder `{{{{{name}}}}}`"));
                problem.hint = Some(match did_you_mean(name, PLACEHOLDERS) {
                    Some(c) => format!("did you mean `{{{{{c}}}}}`?"),
                    None => {
                        "placeholders are {{track}}, {{interval}}, {{name}}, {{namespace}}".into()
                    }
                });
                ok = false;
            }
            rest = &after[end + 2..];
        }
        if needs_track && !has_track {
            self.error(
                path,
                "does not use `{{track}}`, so stable and canary would read the same numbers",
            )
            .hint = Some("select the track in the query, e.g. {track=\"{{track}}\"}".into());
            ok = false;
        }
        ok
    }
}

/// Accepts `http://host[:port][/path]`.
fn check_http_url(url: &str) -> Result<(), &'static str> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(if url.starts_with("https://") {
            "uses https, which upstreams do not support yet"
        } else {
            "is not an http:// URL"
        });
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err("has no host");
    }
    if url.chars().any(char::is_whitespace) {
        return Err("contains spaces");
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    if host.is_empty() {
        return Err("has no host");
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err("has a bad port");
    }
    Ok(())
}

/// An RFC 1123 label short enough for `NAME-canary` to stay one.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 53
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests;
