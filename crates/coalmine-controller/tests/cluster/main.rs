//! The controller library against the real Kubernetes of
//! `scripts/kube-env.sh` (see docs/kubernetes.md): `coalmine_controller::run`
//! (or one `reconcile`, or `apply::execute`) in the test, with a client of
//! the controller's ServiceAccount, so the RBAC of `deploy/` applies as in
//! a cluster; each test in a namespace of its own, deleted when it ends.
//! What the `coalmine controller` process does end to end is tested in
//! `crates/coalmine/tests/real_cluster*.rs`.

#[path = "../../../coalmine/tests/kube_env/mod.rs"]
mod kube_env;

mod leadership;
mod notify;
mod prometheus;
mod replicas;
mod routers;
mod safety;
