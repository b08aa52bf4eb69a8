//! What the cluster says about Services and their EndpointSlices, reduced to what
//! routing needs, and merged into the endpoints of each Service port.
//!
//! Pure and synchronous so it can be tested without an API server: the watcher in
//! [`super::kube`] converts API objects into [`ServicePorts`] and [`Slice`]s and feeds
//! them here; [`State::resolve`] gives the [`Endpoints`](super::Endpoints) entries of one
//! Service.
//!
//! Port mapping follows Emissary and kube-proxy: a Mapping names the Service's own port
//! (`users.shop:80`, or `users.shop:http`); the Service's `ports` give that port's name,
//! and the EndpointSlices' port of the same name gives the number the pods listen on, so
//! a `targetPort` that differs from `port` (or is itself a name) just works.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::{Endpoint, EndpointHealth, ServiceKey};

/// A Service by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

/// One TCP port of a Service: its name (empty for a Service's single unnamed port) and
/// the port number clients use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
}

/// The TCP ports of a Service, in the order its spec lists them.
pub type ServicePorts = Vec<ServicePort>;

/// One EndpointSlice, reduced to what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service: ServiceRef,
    /// Its TCP ports: name (matching a Service port's name) and the pods' port number.
    pub ports: Vec<(String, u16)>,
    /// Its endpoints, each by its first (canonical) address.
    pub endpoints: Vec<SliceEndpoint>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub ip: IpAddr,
    pub health: EndpointHealth,
    pub zone: Option<String>,
}

/// The reflected Services and slices, with an index from Service to its slices.
#[derive(Debug, Default)]
pub struct State {
    services: HashMap<ServiceRef, ServicePorts>,
    /// Keyed by (namespace, slice name).
    slices: HashMap<(String, String), Slice>,
    by_service: HashMap<ServiceRef, BTreeSet<String>>,
}

/// Which objects of one kind a listing covers: everything, or one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    fn contains(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespace(ns) => ns == namespace,
        }
    }
}

/// The health Kubernetes' endpoint conditions mean (`discovery.k8s.io/v1`): `ready` and
/// `serving` default to true, `terminating` to false.
pub fn health(
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> EndpointHealth {
    let ready = ready.unwrap_or(true);
    let serving = serving.unwrap_or(ready);
    let terminating = terminating.unwrap_or(false);
    if ready {
        EndpointHealth::Healthy
    } else if serving && terminating {
        EndpointHealth::Draining
    } else {
        EndpointHealth::Unhealthy
    }
}

// === impl State ===

impl State {
    /// Records a Service (added or changed); returns it when its endpoints may change.
    pub fn apply_service(
        &mut self,
        service: ServiceRef,
        ports: ServicePorts,
    ) -> Option<ServiceRef> {
        match self.services.get(&service) {
            Some(old) if *old == ports => None,
            _ => {
                self.services.insert(service.clone(), ports);
                Some(service)
            }
        }
    }

    /// Forgets a Service; returns it when it was known.
    pub fn delete_service(&mut self, service: &ServiceRef) -> Option<ServiceRef> {
        self.services.remove(service).map(|_| service.clone())
    }

    /// Records a slice (added or changed); returns the Services whose endpoints may
    /// change: its Service, and the one it belonged to before if its label moved.
    pub fn apply_slice(&mut self, namespace: &str, name: &str, slice: Slice) -> Vec<ServiceRef> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut touched = Vec::with_capacity(2);
        match self.slices.get(&key) {
            Some(old) if *old == slice => return touched,
            Some(old) if old.service != slice.service => {
                let before = old.service.clone();
                self.unindex(&before, name);
                touched.push(before);
            }
            _ => {}
        }
        self.by_service
            .entry(slice.service.clone())
            .or_default()
            .insert(name.to_owned());
        touched.push(slice.service.clone());
        self.slices.insert(key, slice);
        touched
    }

    /// Forgets a slice; returns its Service when it was known.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) -> Option<ServiceRef> {
        let slice = self
            .slices
            .remove(&(namespace.to_owned(), name.to_owned()))?;
        self.unindex(&slice.service, name);
        Some(slice.service)
    }

    fn unindex(&mut self, service: &ServiceRef, slice: &str) {
        if let Some(names) = self.by_service.get_mut(service) {
            names.remove(slice);
            if names.is_empty() {
                self.by_service.remove(service);
            }
        }
    }

    /// Replaces every Service in `scope` with a fresh listing (after a re-list). Returns
    /// the Services that were added, changed or removed.
    pub fn replace_services(
        &mut self,
        scope: &Scope,
        listed: Vec<(ServiceRef, ServicePorts)>,
    ) -> BTreeSet<ServiceRef> {
        let listed: HashMap<ServiceRef, ServicePorts> = listed.into_iter().collect();
        let gone: Vec<ServiceRef> = self
            .services
            .keys()
            .filter(|s| scope.contains(&s.namespace) && !listed.contains_key(*s))
            .cloned()
            .collect();
        let mut touched: BTreeSet<ServiceRef> =
            gone.iter().filter_map(|s| self.delete_service(s)).collect();
        for (service, ports) in listed {
            touched.extend(self.apply_service(service, ports));
        }
        touched
    }

    /// Replaces every slice in `scope` with a fresh listing (after a re-list). Returns the
    /// Services whose slices were added, changed or removed.
    pub fn replace_slices(
        &mut self,
        scope: &Scope,
        listed: Vec<(String, String, Slice)>,
    ) -> BTreeSet<ServiceRef> {
        let fresh: BTreeSet<(&str, &str)> = listed
            .iter()
            .map(|(ns, name, _)| (ns.as_str(), name.as_str()))
            .collect();
        let gone: Vec<(String, String)> = self
            .slices
            .keys()
            .filter(|(ns, name)| {
                scope.contains(ns) && !fresh.contains(&(ns.as_str(), name.as_str()))
            })
            .cloned()
            .collect();
        let mut touched: BTreeSet<ServiceRef> = gone
            .iter()
            .filter_map(|(ns, name)| self.delete_slice(ns, name))
            .collect();
        for (ns, name, slice) in listed {
            touched.extend(self.apply_slice(&ns, &name, slice));
        }
        touched
    }

    /// The [`super::Endpoints::services`] entries of one Service: every name a Mapping
    /// may use for each of its ports (number, name, and `""` for the first port), each
    /// with the endpoints of all its slices, deduplicated and sorted. No entries when the
    /// Service has no slice.
    ///
    /// Without a Service object (not created yet, or not visible) the slices' port names
    /// still work, and `""` when they have a single port.
    pub fn resolve(&self, service: &ServiceRef) -> Vec<(ServiceKey, Vec<Endpoint>)> {
        let Some(names) = self.by_service.get(service) else {
            return Vec::new();
        };
        let slices: Vec<&Slice> = names
            .iter()
            .filter_map(|n| self.slices.get(&(service.namespace.clone(), n.clone())))
            .collect();
        // (alias, slice port name), in the order the aliases should win.
        let mut aliases: Vec<(String, String)> = Vec::new();
        match self.services.get(service) {
            Some(ports) => {
                for (i, p) in ports.iter().enumerate() {
                    if i == 0 {
                        aliases.push((String::new(), p.name.clone()));
                    }
                    aliases.push((p.port.to_string(), p.name.clone()));
                    if !p.name.is_empty() {
                        aliases.push((p.name.clone(), p.name.clone()));
                    }
                }
            }
            None => {
                let names: BTreeSet<&str> = slices
                    .iter()
                    .flat_map(|s| s.ports.iter().map(|(n, _)| n.as_str()))
                    .collect();
                if let [only] = names.iter().collect::<Vec<_>>().as_slice() {
                    aliases.push((String::new(), (**only).to_owned()));
                }
                aliases.extend(
                    names
                        .iter()
                        .filter(|n| !n.is_empty())
                        .map(|n| ((*n).to_owned(), (*n).to_owned())),
                );
            }
        }
        let mut by_port_name: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
        let mut out = Vec::with_capacity(aliases.len());
        let mut seen = BTreeSet::new();
        for (alias, port_name) in aliases {
            if !seen.insert(alias.clone()) {
                continue;
            }
            let endpoints = match by_port_name.get(&port_name) {
                Some(known) => known.clone(),
                None => {
                    let merged = merge(&slices, &port_name);
                    by_port_name.insert(port_name, merged.clone());
                    merged
                }
            };
            out.push((
                ServiceKey {
                    namespace: service.namespace.clone(),
                    name: service.name.clone(),
                    port: alias,
                },
                endpoints,
            ));
        }
        out
    }

    /// How many Services and slices are reflected.
    pub fn len(&self) -> (usize, usize) {
        (self.services.len(), self.slices.len())
    }
}

/// The endpoints of every slice that has a port named `port_name`, one per address: an
/// endpoint that two slices list while the controller moves it keeps its best health.
fn merge(slices: &[&Slice], port_name: &str) -> Vec<Endpoint> {
    let mut best: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        let Some((_, port)) = slice.ports.iter().find(|(n, _)| n == port_name) else {
            continue;
        };
        for e in &slice.endpoints {
            let candidate = Endpoint {
                ip: e.ip,
                port: *port,
                health: e.health,
                zone: e.zone.clone(),
            };
            best.entry((e.ip, *port))
                .and_modify(|have| {
                    // EndpointHealth orders Healthy first.
                    if candidate.health < have.health {
                        *have = candidate.clone();
                    }
                })
                .or_insert(candidate);
        }
    }
    best.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str) -> ServiceRef {
        ServiceRef {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn ep(ip: &str, health: EndpointHealth) -> SliceEndpoint {
        SliceEndpoint {
            ip: ip.parse().expect("ip"),
            health,
            zone: None,
        }
    }

    fn slice(service: &ServiceRef, ports: &[(&str, u16)], endpoints: Vec<SliceEndpoint>) -> Slice {
        Slice {
            service: service.clone(),
            ports: ports.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect(),
            endpoints,
        }
    }

    fn resolved(
        state: &State,
        s: &ServiceRef,
    ) -> BTreeMap<String, Vec<(String, u16, EndpointHealth)>> {
        state
            .resolve(s)
            .into_iter()
            .map(|(k, eps)| {
                (
                    k.port,
                    eps.into_iter()
                        .map(|e| (e.ip.to_string(), e.port, e.health))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn conditions_follow_the_discovery_v1_defaults() {
        use EndpointHealth::*;
        assert_eq!(health(None, None, None), Healthy);
        assert_eq!(health(Some(true), Some(true), Some(false)), Healthy);
        assert_eq!(health(Some(false), Some(true), Some(true)), Draining);
        assert_eq!(health(Some(false), Some(false), Some(true)), Unhealthy);
        assert_eq!(health(Some(false), None, None), Unhealthy);
        // Not ready, serving but not terminating: a failing readiness probe.
        assert_eq!(health(Some(false), Some(true), Some(false)), Unhealthy);
    }

    #[test]
    fn mapping_ports_go_through_the_service_to_the_slice_port_of_that_name() {
        let users = svc("shop", "users");
        let mut state = State::default();
        state.apply_service(
            users.clone(),
            vec![
                ServicePort {
                    name: "http".into(),
                    port: 80,
                },
                ServicePort {
                    name: "admin".into(),
                    port: 9000,
                },
            ],
        );
        state.apply_slice(
            "shop",
            "users-a",
            slice(
                &users,
                &[("http", 8080), ("admin", 9090)],
                vec![ep("10.0.0.1", EndpointHealth::Healthy)],
            ),
        );
        let got = resolved(&state, &users);
        let http = vec![("10.0.0.1".to_owned(), 8080, EndpointHealth::Healthy)];
        let admin = vec![("10.0.0.1".to_owned(), 9090, EndpointHealth::Healthy)];
        assert_eq!(got[""], http);
        assert_eq!(got["80"], http);
        assert_eq!(got["http"], http);
        assert_eq!(got["9000"], admin);
        assert_eq!(got["admin"], admin);
        assert!(
            !got.contains_key("8080"),
            "the pods' port is not a Service port"
        );
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn slices_of_one_service_merge_and_duplicates_keep_the_best_health() {
        let users = svc("shop", "users");
        let mut state = State::default();
        state.apply_service(
            users.clone(),
            vec![ServicePort {
                name: String::new(),
                port: 80,
            }],
        );
        state.apply_slice(
            "shop",
            "a",
            slice(
                &users,
                &[("", 8080)],
                vec![
                    ep("10.0.0.1", EndpointHealth::Draining),
                    ep("10.0.0.2", EndpointHealth::Healthy),
                ],
            ),
        );
        state.apply_slice(
            "shop",
            "b",
            slice(
                &users,
                &[("", 8080)],
                vec![
                    ep("10.0.0.1", EndpointHealth::Healthy),
                    ep("fd00::3", EndpointHealth::Unhealthy),
                ],
            ),
        );
        let got = resolved(&state, &users);
        assert_eq!(
            got["80"],
            [
                ("10.0.0.1".to_owned(), 8080, EndpointHealth::Healthy),
                ("10.0.0.2".to_owned(), 8080, EndpointHealth::Healthy),
                ("fd00::3".to_owned(), 8080, EndpointHealth::Unhealthy),
            ]
        );
        assert_eq!(state.delete_slice("shop", "b"), Some(users.clone()));
        assert_eq!(
            resolved(&state, &users)["80"],
            [
                ("10.0.0.1".to_owned(), 8080, EndpointHealth::Draining),
                ("10.0.0.2".to_owned(), 8080, EndpointHealth::Healthy),
            ]
        );
        state.delete_slice("shop", "a");
        assert!(state.resolve(&users).is_empty(), "no slice, no entry");
    }

    #[test]
    fn same_name_in_two_namespaces_stays_apart() {
        let (a, b) = (svc("a", "web"), svc("b", "web"));
        let mut state = State::default();
        state.apply_slice(
            "a",
            "web-1",
            slice(
                &a,
                &[("", 80)],
                vec![ep("10.0.0.1", EndpointHealth::Healthy)],
            ),
        );
        state.apply_slice(
            "b",
            "web-1",
            slice(
                &b,
                &[("", 80)],
                vec![ep("10.0.0.2", EndpointHealth::Healthy)],
            ),
        );
        assert_eq!(resolved(&state, &a)[""][0].0, "10.0.0.1");
        assert_eq!(resolved(&state, &b)[""][0].0, "10.0.0.2");
    }

    #[test]
    fn a_slice_that_changes_service_touches_both() {
        let (a, b) = (svc("ns", "a"), svc("ns", "b"));
        let mut state = State::default();
        assert_eq!(
            state.apply_slice("ns", "s", slice(&a, &[("", 80)], vec![])),
            vec![a.clone()]
        );
        assert_eq!(
            state.apply_slice("ns", "s", slice(&a, &[("", 80)], vec![])),
            vec![],
            "no change"
        );
        assert_eq!(
            state.apply_slice("ns", "s", slice(&b, &[("", 80)], vec![])),
            vec![a.clone(), b.clone()]
        );
        assert!(state.resolve(&a).is_empty());
        assert_eq!(state.resolve(&b).len(), 1);
    }

    #[test]
    fn without_a_service_object_slice_port_names_still_resolve() {
        let s = svc("ns", "s");
        let mut state = State::default();
        state.apply_slice(
            "ns",
            "s-1",
            slice(
                &s,
                &[("grpc", 9000)],
                vec![ep("10.0.0.1", EndpointHealth::Healthy)],
            ),
        );
        let got = resolved(&state, &s);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["", "grpc"]);
    }

    #[test]
    fn a_relist_replaces_only_its_scope() {
        let (a, b) = (svc("a", "web"), svc("b", "web"));
        let mut state = State::default();
        state.apply_slice("a", "web-1", slice(&a, &[("", 80)], vec![]));
        state.apply_slice("b", "web-1", slice(&b, &[("", 80)], vec![]));
        let touched = state.replace_slices(&Scope::Namespace("a".into()), vec![]);
        assert_eq!(
            touched.into_iter().collect::<Vec<_>>(),
            std::slice::from_ref(&a)
        );
        assert!(state.resolve(&a).is_empty());
        assert_eq!(
            state.resolve(&b).len(),
            1,
            "namespace b is not in the listing's scope"
        );
        // A listing equal to what is known touches nothing.
        let same = vec![(
            "b".to_owned(),
            "web-1".to_owned(),
            slice(&b, &[("", 80)], vec![]),
        )];
        assert!(state.replace_slices(&Scope::All, same).is_empty());
        assert_eq!(state.len(), (0, 1));
    }
}
