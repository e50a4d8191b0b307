//! What each router can do: the one table that `coalmine validate`, the
//! CRD's CEL rules ([`crate::crd`], generated from it) and the Kubernetes
//! controller all read.
//!
//! | router       | header routes | mirror | session affinity | builtin metrics | run by the controller |
//! |--------------|:-:|:-:|:-:|:-:|:-:|
//! | `replicas`   |   |   |   |   | yes |
//! | `gatewayAPI` | yes | yes |   |   | yes |
//! | `nginx`      | yes |   |   |   | yes |
//! | `istio`      | yes | yes |   |   | yes |
//! | `proxy`      | yes | yes | yes | yes | yes |
//!
//! `proxy` is coalmine's own proxy: the router of `coalmine run` (a spec
//! with `upstreams`), and in Kubernetes a Deployment `NAME-proxy` that the
//! controller runs in front of both versions. No other router keeps
//! sessions: Gateway API's `sessionPersistence` and ingress-nginx's cookie
//! affinity pin a user to a pod, not to a track of a weighted split, and Istio's consistent-hash
//! load balancing ignores route weights. The first three columns are about
//! the spec and are checked by validation and the CRD alike; the last two
//! are about where a spec runs, and only the controller refuses them
//! (`coalmine validate` checks a file for either platform).

use crate::plan::Router;

/// A router without its settings: a row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouterKind {
    /// The replica ratio behind one Service (the default).
    Replicas,
    /// Gateway API HTTPRoute weights.
    GatewayApi,
    /// ingress-nginx's canary Ingress.
    Nginx,
    /// An Istio VirtualService.
    Istio,
    /// coalmine's own proxy.
    Proxy,
}

/// Something a spec may ask of its router: a column of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `setHeaderRoute` steps: requests by header or cookie to the canary.
    HeaderRoutes,
    /// `setMirror` steps: a copy of a share of stable's requests.
    Mirror,
    /// `sessionAffinity`: a cookie keeps a user on one track.
    SessionAffinity,
    /// `builtin` metrics: the router is coalmine's proxy, whose counters
    /// they read.
    BuiltinMetrics,
    /// The Kubernetes controller runs this router.
    Controller,
}

/// The table, row by row, in the order of [`Capability::ALL`].
const TABLE: [(RouterKind, [bool; 5]); 5] = [
    (RouterKind::Replicas, [false, false, false, false, true]),
    (RouterKind::GatewayApi, [true, true, false, false, true]),
    (RouterKind::Nginx, [true, false, false, false, true]),
    (RouterKind::Istio, [true, true, false, false, true]),
    (RouterKind::Proxy, [true, true, true, true, true]),
];

impl RouterKind {
    /// Every router, in the order of `spec.trafficRouting`'s fields.
    pub const ALL: [RouterKind; 5] = [
        RouterKind::Replicas,
        RouterKind::GatewayApi,
        RouterKind::Nginx,
        RouterKind::Istio,
        RouterKind::Proxy,
    ];

    /// The field of `spec.trafficRouting` that names this router.
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKind::Replicas => "replicas",
            RouterKind::GatewayApi => "gatewayAPI",
            RouterKind::Nginx => "nginx",
            RouterKind::Istio => "istio",
            RouterKind::Proxy => "proxy",
        }
    }

    /// Whether this router can do `c`.
    pub fn can(self, c: Capability) -> bool {
        let column = Capability::ALL
            .iter()
            .position(|x| *x == c)
            .unwrap_or(usize::MAX);
        TABLE
            .iter()
            .find(|(r, _)| *r == self)
            .and_then(|(_, row)| row.get(column).copied())
            .unwrap_or(false)
    }

    /// The routers that can do `c`, in table order.
    pub fn able(c: Capability) -> Vec<RouterKind> {
        RouterKind::ALL.into_iter().filter(|r| r.can(c)).collect()
    }
}

impl Capability {
    /// Every column, in table order.
    pub const ALL: [Capability; 5] = [
        Capability::HeaderRoutes,
        Capability::Mirror,
        Capability::SessionAffinity,
        Capability::BuiltinMetrics,
        Capability::Controller,
    ];

    /// The capabilities a spec asks for in its fields, which validation
    /// and the CRD's rules check.
    pub const OF_THE_SPEC: [Capability; 3] = [
        Capability::HeaderRoutes,
        Capability::Mirror,
        Capability::SessionAffinity,
    ];

    /// The field that asks for it (`setHeaderRoute`, …).
    pub fn field(self) -> &'static str {
        match self {
            Capability::HeaderRoutes => "setHeaderRoute",
            Capability::Mirror => "setMirror",
            Capability::SessionAffinity => "sessionAffinity",
            Capability::BuiltinMetrics => "builtin",
            Capability::Controller => "trafficRouting",
        }
    }

    /// What a router that cannot do it cannot do: "the `nginx` router
    /// cannot {this}".
    pub fn verb(self) -> &'static str {
        match self {
            Capability::HeaderRoutes => "route by header or cookie",
            Capability::Mirror => "mirror traffic",
            Capability::SessionAffinity => "keep sessions",
            Capability::BuiltinMetrics => "serve the builtin metrics",
            Capability::Controller => "run in Kubernetes",
        }
    }

    /// The hint for a router that cannot do it: `use the gatewayAPI, istio
    /// or proxy router`.
    pub fn hint(self) -> String {
        format!("use the {} router", list(&RouterKind::able(self), "or"))
    }

    /// The CRD's message when a spec asks for it of a router that cannot:
    /// `setMirror needs the gatewayAPI, istio or proxy router; the
    /// replicas and nginx routers cannot mirror traffic`.
    pub fn cel_message(self) -> String {
        let unable: Vec<RouterKind> = RouterKind::ALL
            .into_iter()
            .filter(|r| !r.can(self))
            .collect();
        let routers = if unable.len() == 1 {
            "router"
        } else {
            "routers"
        };
        format!(
            "{} needs the {} router; the {} {routers} cannot {}",
            self.field(),
            list(&RouterKind::able(self), "or"),
            list(&unable, "and"),
            self.verb()
        )
    }

    /// A CEL expression on `spec` that holds when its router can do it:
    /// `upstreams` (the proxy of `coalmine run`), or the router
    /// `trafficRouting` names, which is `replicas` when it names none.
    pub fn cel_capable(self) -> String {
        let named = |rs: &[RouterKind]| {
            rs.iter()
                .map(|r| format!("has(self.trafficRouting.{})", r.as_str()))
                .collect::<Vec<_>>()
                .join(" || ")
        };
        let local = if RouterKind::Proxy.can(self) {
            "has(self.upstreams) || "
        } else {
            ""
        };
        let others: Vec<RouterKind> = RouterKind::ALL
            .into_iter()
            .filter(|r| *r != RouterKind::Replicas)
            .collect();
        let able: Vec<RouterKind> = others.iter().copied().filter(|r| r.can(self)).collect();
        let unable: Vec<RouterKind> = others.iter().copied().filter(|r| !r.can(self)).collect();
        let kube = if RouterKind::Replicas.can(self) {
            // Capable unless one of the others that cannot is named.
            if unable.is_empty() {
                "true".to_owned()
            } else {
                format!("!has(self.trafficRouting) || !({})", named(&unable))
            }
        } else if able.is_empty() {
            "false".to_owned()
        } else {
            format!("(has(self.trafficRouting) && ({}))", named(&able))
        };
        format!("{local}{kube}")
    }
}

impl Router {
    /// The router's row in the table.
    pub fn kind(&self) -> RouterKind {
        match self {
            Router::Replicas => RouterKind::Replicas,
            Router::GatewayApi { .. } => RouterKind::GatewayApi,
            Router::Nginx { .. } => RouterKind::Nginx,
            Router::Istio { .. } => RouterKind::Istio,
            Router::Proxy => RouterKind::Proxy,
        }
    }

    /// Whether the router can do `c` ([`RouterKind::can`]).
    pub fn can(&self, c: Capability) -> bool {
        self.kind().can(c)
    }
}

/// `a`, `a or b`, `a, b or c`.
fn list(routers: &[RouterKind], last: &str) -> String {
    let names: Vec<&str> = routers.iter().map(|r| r.as_str()).collect();
    match names.split_last() {
        None => String::new(),
        Some((only, [])) => (*only).to_owned(),
        Some((tail, init)) => format!("{} {last} {tail}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of a Markdown table whose header starts with `| router |`:
    /// each row's cells, trimmed, with the router's name unquoted.
    fn router_table(text: &str) -> Vec<Vec<String>> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with("| router"));
        let header: Vec<String> = lines
            .next()
            .map(|h| h.split('|').map(|c| c.trim().replace('`', "")).collect())
            .unwrap_or_default();
        let mut rows = vec![header];
        for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
            rows.push(
                line.split('|')
                    .map(|c| c.trim().trim_start_matches('`').to_owned())
                    .collect(),
            );
        }
        rows
    }

    /// Checks a documented table's yes/blank cells against the table here.
    fn check_doc(name: &str, text: &str, columns: &[(&str, Capability)]) {
        let rows = router_table(text);
        let header = &rows[0];
        assert_eq!(
            rows.len(),
            RouterKind::ALL.len() + 1,
            "{name}: a row per router"
        );
        for router in RouterKind::ALL {
            let row = rows[1..]
                .iter()
                .find(|r| r.get(1).is_some_and(|c| c.starts_with(router.as_str())))
                .unwrap_or_else(|| panic!("{name}: no row for {}", router.as_str()));
            for (title, capability) in columns {
                let at = header
                    .iter()
                    .position(|h| h.contains(title))
                    .unwrap_or_else(|| panic!("{name}: no column `{title}`"));
                assert_eq!(
                    row[at] == "yes",
                    router.can(*capability),
                    "{name}: {} / {title}",
                    router.as_str()
                );
            }
        }
    }

    #[test]
    fn the_documented_tables_match_this_one() {
        let columns = [
            ("header routes", Capability::HeaderRoutes),
            ("mirror", Capability::Mirror),
            ("session affinity", Capability::SessionAffinity),
            ("builtin metrics", Capability::BuiltinMetrics),
        ];
        let kubernetes = include_str!("../../../docs/kubernetes.md");
        let routers = &kubernetes[kubernetes.find("## The routers").unwrap_or(0)..];
        check_doc("docs/kubernetes.md", routers, &columns);
        let module: String = include_str!("capability.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! "))
            .collect::<Vec<_>>()
            .join("\n");
        let mut all = columns.to_vec();
        all.push(("run by the controller", Capability::Controller));
        check_doc("capability.rs", &module, &all);
    }

    #[test]
    fn the_table_has_a_row_per_router_and_a_column_per_capability() {
        let rows: Vec<RouterKind> = TABLE.iter().map(|(r, _)| *r).collect();
        assert_eq!(rows, RouterKind::ALL);
        assert!(RouterKind::Proxy.can(Capability::SessionAffinity));
        assert!(!RouterKind::Istio.can(Capability::SessionAffinity));
        assert!(!RouterKind::Nginx.can(Capability::Mirror));
        assert!(RouterKind::Proxy.can(Capability::Controller));
        assert_eq!(
            Capability::Mirror.hint(),
            "use the gatewayAPI, istio or proxy router"
        );
        assert_eq!(Capability::SessionAffinity.hint(), "use the proxy router");
        assert_eq!(
            Capability::HeaderRoutes.cel_message(),
            "setHeaderRoute needs the gatewayAPI, nginx, istio or proxy router; the replicas router cannot route by header or cookie"
        );
    }

    #[test]
    fn the_rules_for_header_routes_and_mirrors_read_as_before() {
        assert_eq!(
            Capability::HeaderRoutes.cel_capable(),
            "has(self.upstreams) || (has(self.trafficRouting) && (has(self.trafficRouting.gatewayAPI) || has(self.trafficRouting.nginx) || has(self.trafficRouting.istio) || has(self.trafficRouting.proxy)))"
        );
        assert_eq!(
            Capability::Mirror.cel_capable(),
            "has(self.upstreams) || (has(self.trafficRouting) && (has(self.trafficRouting.gatewayAPI) || has(self.trafficRouting.istio) || has(self.trafficRouting.proxy)))"
        );
        assert_eq!(
            Capability::SessionAffinity.cel_capable(),
            "has(self.upstreams) || (has(self.trafficRouting) && (has(self.trafficRouting.proxy)))"
        );
    }
}
