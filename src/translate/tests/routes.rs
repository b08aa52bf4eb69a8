//! Mapping fields -> Envoy routes, and the order routes are tried in.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route as EnvoyRoute, RouteAction, RouteMatch, header_matcher,
    query_parameter_matcher, redirect_action, route, route_action, route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

use super::run;
use crate::config::*;
use crate::translate::testing::*;

/// The routes of the catch-all virtual host (no Host in the config).
fn routes(mappings: Vec<Mapping>) -> Vec<EnvoyRoute> {
    let resources = run(&config(mappings, Vec::new()));
    default_vhost(&resources, "*").routes.clone()
}

/// The one route of a single Mapping.
fn one(mapping: Mapping) -> EnvoyRoute {
    let mut all = routes(vec![mapping]);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

fn matcher(route: &EnvoyRoute) -> &RouteMatch {
    route.r#match.as_ref().expect("a route match")
}

fn header<'a>(route: &'a EnvoyRoute, name: &str) -> &'a HeaderMatcher {
    matcher(route)
        .headers
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no header matcher {name}: {:#?}", matcher(route).headers))
}

fn string_match(specifier: &header_matcher::HeaderMatchSpecifier) -> &string_matcher::MatchPattern {
    match specifier {
        header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(p),
            ..
        }) => p,
        other => panic!("not a string match: {other:?}"),
    }
}

fn exact(text: &str) -> string_matcher::MatchPattern {
    string_matcher::MatchPattern::Exact(text.to_owned())
}

fn regex_of(pattern: &string_matcher::MatchPattern) -> &str {
    match pattern {
        string_matcher::MatchPattern::SafeRegex(r) => &r.regex,
        other => panic!("not a regex: {other:?}"),
    }
}

fn redirect(route: &EnvoyRoute) -> &envoy_types::pb::envoy::config::route::v3::RedirectAction {
    match &route.action {
        Some(route::Action::Redirect(r)) => r,
        other => panic!("not a redirect: {other:?}"),
    }
}

/// (cluster, weight) of a weighted route.
fn weights(action: &RouteAction) -> Vec<(String, u32)> {
    match &action.cluster_specifier {
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight.as_ref().map_or(0, |w| w.value)))
            .collect(),
        other => panic!("not weighted clusters: {other:?}"),
    }
}

fn redirect_mapping(name: &str, prefix: &str, redirect: Redirect) -> Mapping {
    Mapping {
        action: Action::Redirect(redirect),
        ..mapping(name, prefix, "unused")
    }
}

fn redirect_to(host: &str) -> Redirect {
    Redirect {
        host: Some(host.to_owned()),
        path: None,
        prefix: None,
        response_code: 301,
    }
}

// === match ===

#[test]
fn prefix_is_a_prefix_match() {
    let r = one(mapping("users", "/users/", "users"));
    assert_eq!(
        matcher(&r).path_specifier,
        Some(route_match::PathSpecifier::Prefix("/users/".into()))
    );
    assert_eq!(r.name, "default/users");
}

#[test]
fn prefix_exact_is_a_path_match() {
    let r = one(Mapping {
        path: PathMatch::Exact("/healthz".into()),
        ..mapping("health", "/", "health")
    });
    assert_eq!(
        matcher(&r).path_specifier,
        Some(route_match::PathSpecifier::Path("/healthz".into()))
    );
}

#[test]
fn prefix_regex_is_a_safe_regex_match() {
    let r = one(Mapping {
        path: PathMatch::Regex("^/orders/[0-9]+$".into()),
        ..mapping("orders", "/", "orders")
    });
    match &matcher(&r).path_specifier {
        Some(route_match::PathSpecifier::SafeRegex(re)) => {
            assert_eq!(re.regex, "^/orders/[0-9]+$");
        }
        other => panic!("not a regex: {other:?}"),
    }
}

#[test]
fn case_sensitive_false_is_passed_to_envoy_and_true_left_default() {
    let r = one(Mapping {
        case_sensitive: false,
        ..mapping("users", "/Users/", "users")
    });
    assert_eq!(
        matcher(&r).case_sensitive.as_ref().map(|b| b.value),
        Some(false)
    );
    let r = one(mapping("users", "/Users/", "users"));
    assert_eq!(matcher(&r).case_sensitive, None);
}

/// Envoy ignores `case_sensitive` for regex path matches, so a case-insensitive regex
/// Mapping must say so in the regex itself.
#[test]
fn case_insensitive_regex_path_is_flagged_in_the_regex() {
    let r = one(Mapping {
        case_sensitive: false,
        path: PathMatch::Regex("^/v1/ORDER/[0-9]+$".into()),
        ..mapping("orders", "/", "orders")
    });
    match &matcher(&r).path_specifier {
        Some(route_match::PathSpecifier::SafeRegex(re)) => {
            assert_eq!(re.regex, "(?i)^/v1/ORDER/[0-9]+$");
        }
        other => panic!("not a regex: {other:?}"),
    }
    // The default rewrite of a regex route replaces what the path regex matched, and must
    // match as case-insensitively as the route did.
    let rewrite = action(&r).regex_rewrite.as_ref().expect("a regex rewrite");
    assert_eq!(
        rewrite.pattern.as_ref().map(|p| p.regex.as_str()),
        Some("(?i)^/v1/ORDER/[0-9]+$")
    );
}

#[test]
fn headers_match_exactly_by_regex_or_by_presence() {
    let r = one(Mapping {
        headers: vec![
            KeyValueMatch {
                name: "x-canary".into(),
                value: ValueMatch::Present,
            },
            KeyValueMatch {
                name: "x-role".into(),
                value: ValueMatch::Regex("^(admin|ops)$".into()),
            },
            KeyValueMatch {
                name: "x-tenant".into(),
                value: ValueMatch::Exact("acme".into()),
            },
        ],
        ..mapping("users", "/", "users")
    });
    let spec = |name| {
        header(&r, name)
            .header_match_specifier
            .clone()
            .expect("a specifier")
    };
    assert_eq!(
        spec("x-canary"),
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    );
    assert_eq!(regex_of(string_match(&spec("x-role"))), "^(admin|ops)$");
    assert_eq!(string_match(&spec("x-tenant")), &exact("acme"));
    assert_eq!(matcher(&r).headers.len(), 3);
}

#[test]
fn query_parameters_match_exactly_by_regex_or_by_presence() {
    let r = one(Mapping {
        query_parameters: vec![
            KeyValueMatch {
                name: "debug".into(),
                value: ValueMatch::Present,
            },
            KeyValueMatch {
                name: "id".into(),
                value: ValueMatch::Regex("[0-9]+".into()),
            },
            KeyValueMatch {
                name: "view".into(),
                value: ValueMatch::Exact("summary".into()),
            },
        ],
        ..mapping("users", "/", "users")
    });
    use query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    let q: Vec<(&str, &Q)> = matcher(&r)
        .query_parameters
        .iter()
        .map(|q| {
            (
                q.name.as_str(),
                q.query_parameter_match_specifier
                    .as_ref()
                    .expect("a specifier"),
            )
        })
        .collect();
    assert_eq!(q.len(), 3);
    assert_eq!(q[0], ("debug", &Q::PresentMatch(true)));
    match q[1] {
        ("id", Q::StringMatch(m)) => {
            assert_eq!(
                regex_of(m.match_pattern.as_ref().expect("pattern")),
                "[0-9]+"
            )
        }
        other => panic!("{other:?}"),
    }
    match q[2] {
        ("view", Q::StringMatch(m)) => assert_eq!(m.match_pattern, Some(exact("summary"))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn method_is_a_method_header_match() {
    let r = one(Mapping {
        method: Some("POST".into()),
        ..mapping("orders", "/orders", "orders")
    });
    let spec = header(&r, ":method")
        .header_match_specifier
        .clone()
        .expect("a specifier");
    assert_eq!(string_match(&spec), &exact("POST"));
}

// === forwarding ===

#[test]
fn rewrite_defaults_to_slash_and_can_be_changed_or_kept() {
    let r = one(mapping("users", "/users/", "users"));
    assert_eq!(action(&r).prefix_rewrite, "/");
    let mut m = mapping("users", "/users/", "users");
    settings(&mut m).rewrite = Rewrite::Prefix("/v2/users/".into());
    assert_eq!(action(&one(m)).prefix_rewrite, "/v2/users/");
    let mut m = mapping("users", "/users/", "users");
    settings(&mut m).rewrite = Rewrite::Keep;
    let r = one(m);
    assert_eq!(action(&r).prefix_rewrite, "");
    assert_eq!(action(&r).regex_rewrite, None);
}

#[test]
fn regex_rewrite_is_passed_through() {
    let mut m = mapping("legacy", "/v1/order/", "legacy");
    settings(&mut m).rewrite = Rewrite::Regex {
        pattern: "^/v1/order/([0-9]+)$".into(),
        substitution: "/legacy?id=\\1".into(),
    };
    let r = one(m);
    let rewrite = action(&r).regex_rewrite.clone().expect("a regex rewrite");
    assert_eq!(
        rewrite.pattern.map(|p| p.regex),
        Some("^/v1/order/([0-9]+)$".to_owned())
    );
    assert_eq!(rewrite.substitution, "/legacy?id=\\1");
    assert_eq!(action(&r).prefix_rewrite, "");
}

#[test]
fn timeouts_are_milliseconds() {
    let mut m = mapping("users", "/", "users");
    settings(&mut m).timeout_ms = 2500;
    settings(&mut m).idle_timeout_ms = Some(600_000);
    let r = one(m);
    let a = action(&r);
    let timeout = a.timeout.expect("a timeout");
    assert_eq!((timeout.seconds, timeout.nanos), (2, 500_000_000));
    let idle = a.idle_timeout.expect("an idle timeout");
    assert_eq!((idle.seconds, idle.nanos), (600, 0));

    // The default timeout is Emissary's 3 s, 0 disables it, and no idle timeout is set.
    let r = one(mapping("users", "/", "users"));
    assert_eq!(action(&r).timeout.map(|t| t.seconds), Some(3));
    assert_eq!(action(&r).idle_timeout, None);
    let mut m = mapping("users", "/", "users");
    settings(&mut m).timeout_ms = 0;
    let t = action(&one(m)).timeout.expect("a timeout");
    assert_eq!((t.seconds, t.nanos), (0, 0));
}

#[test]
fn allow_upgrade_enables_websocket_upgrades_on_the_route() {
    let mut m = mapping("events", "/events", "events");
    settings(&mut m).upgrades = vec!["websocket".into()];
    let r = one(m);
    let upgrades = &action(&r).upgrade_configs;
    assert_eq!(upgrades.len(), 1);
    assert_eq!(upgrades[0].upgrade_type, "websocket");
    assert_eq!(upgrades[0].enabled.as_ref().map(|b| b.value), Some(true));
    assert!(
        action(&one(mapping("users", "/", "users")))
            .upgrade_configs
            .is_empty()
    );
}

#[test]
fn host_rewrite_sets_the_upstream_host_header() {
    let mut m = mapping("users", "/", "users");
    settings(&mut m).host_rewrite = Some("users.internal".into());
    assert_eq!(
        action(&one(m)).host_rewrite_specifier,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            "users.internal".into()
        ))
    );
}

#[test]
fn headers_are_added_and_removed_on_requests_and_responses() {
    let r = one(Mapping {
        add_request_headers: vec![
            HeaderToAdd {
                name: "x-gateway".into(),
                value: "attache".into(),
                append: true,
            },
            HeaderToAdd {
                name: "x-api-version".into(),
                value: "v1".into(),
                append: false,
            },
        ],
        remove_request_headers: vec!["cookie".into()],
        add_response_headers: vec![HeaderToAdd {
            name: "x-served-by".into(),
            value: "attache".into(),
            append: true,
        }],
        remove_response_headers: vec!["server".into()],
        ..mapping("users", "/", "users")
    });
    let added: Vec<(&str, &str, i32)> = r
        .request_headers_to_add
        .iter()
        .map(|h| {
            let hv = h.header.as_ref().expect("a header");
            (hv.key.as_str(), hv.value.as_str(), h.append_action)
        })
        .collect();
    assert_eq!(
        added,
        [
            (
                "x-gateway",
                "attache",
                HeaderAppendAction::AppendIfExistsOrAdd as i32
            ),
            (
                "x-api-version",
                "v1",
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32
            ),
        ]
    );
    assert_eq!(r.request_headers_to_remove, ["cookie"]);
    assert_eq!(r.response_headers_to_add.len(), 1);
    assert_eq!(
        r.response_headers_to_add[0]
            .header
            .as_ref()
            .map(|h| h.key.as_str()),
        Some("x-served-by")
    );
    assert_eq!(r.response_headers_to_remove, ["server"]);
}

// === weights ===

fn weighted(name: &str, service: &str, weight: Option<u32>) -> Mapping {
    Mapping {
        weight,
        ..mapping(name, "/shop/", service)
    }
}

#[test]
fn mappings_with_the_same_match_and_weights_share_one_weighted_route() {
    let all = routes(vec![
        weighted("shop", "shop", Some(90)),
        weighted("shop-canary", "shop-next", Some(10)),
    ]);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(
        weights(action(&all[0])),
        [
            ("cluster_shop_default_80".to_owned(), 90),
            ("cluster_shop_next_default_80".to_owned(), 10)
        ]
    );
}

#[test]
fn unweighted_mappings_share_what_weighted_ones_leave() {
    let all = routes(vec![
        weighted("a", "a", Some(50)),
        weighted("b", "b", None),
        weighted("c", "c", None),
        weighted("d", "d", Some(19)),
    ]);
    let w: Vec<u32> = weights(action(&all[0]))
        .into_iter()
        .map(|(_, w)| w)
        .collect();
    // 31 left for two: 16 + 15, the first unweighted one gets the remainder.
    assert_eq!(w, [50, 16, 15, 19]);
}

/// Emissary splits traffic evenly between Mappings with the same match and no weights
/// (validation warns about it); they must not become two routes, one never reached.
#[test]
fn same_match_without_weights_splits_evenly() {
    let all = routes(vec![weighted("a", "a", None), weighted("b", "b", None)]);
    assert_eq!(all.len(), 1, "{all:#?}");
    let w: Vec<u32> = weights(action(&all[0]))
        .into_iter()
        .map(|(_, w)| w)
        .collect();
    assert_eq!(w, [50, 50]);
}

#[test]
fn weighted_members_keep_their_own_headers_and_host_rewrite() {
    let mut canary = Mapping {
        add_request_headers: vec![HeaderToAdd {
            name: "x-canary".into(),
            value: "1".into(),
            append: true,
        }],
        remove_response_headers: vec!["server".into()],
        ..weighted("shop-canary", "shop-next", Some(10))
    };
    settings(&mut canary).host_rewrite = Some("next.internal".into());
    let all = routes(vec![weighted("shop", "shop", Some(90)), canary]);
    let a = action(&all[0]);
    let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else {
        panic!("not weighted: {a:?}");
    };
    let next = &w.clusters[1];
    assert_eq!(next.name, "cluster_shop_next_default_80");
    assert_eq!(next.request_headers_to_add.len(), 1);
    assert_eq!(next.response_headers_to_remove, ["server"]);
    assert!(next.host_rewrite_specifier.is_some());
    assert!(w.clusters[0].request_headers_to_add.is_empty());
    assert!(w.clusters[0].host_rewrite_specifier.is_none());
}

/// Precedence is part of the match in Emissary: same prefix, different precedence are two
/// routes, the higher one first, not one weighted split.
#[test]
fn different_precedence_is_a_different_match() {
    let high = Mapping {
        precedence: 5,
        ..weighted("high", "high", Some(50))
    };
    let all = routes(vec![weighted("low", "low", Some(50)), high]);
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["default/high", "default/low"]);
}

// === redirects ===

#[test]
fn host_redirect_answers_with_a_301_to_the_service_host() {
    let r = one(redirect_mapping(
        "moved",
        "/old/",
        redirect_to("new.example.com"),
    ));
    let re = redirect(&r);
    assert_eq!(re.host_redirect, "new.example.com");
    assert_eq!(
        re.response_code,
        redirect_action::RedirectResponseCode::MovedPermanently as i32
    );
    assert_eq!(re.path_rewrite_specifier, None);
}

#[test]
fn path_and_prefix_redirects_and_response_codes() {
    let r = one(redirect_mapping(
        "moved",
        "/old/",
        Redirect {
            path: Some("/new".into()),
            response_code: 302,
            ..redirect_to("new.example.com")
        },
    ));
    let re = redirect(&r);
    assert_eq!(
        re.path_rewrite_specifier,
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            "/new".into()
        ))
    );
    assert_eq!(
        re.response_code,
        redirect_action::RedirectResponseCode::Found as i32
    );

    let r = one(redirect_mapping(
        "moved",
        "/old/",
        Redirect {
            prefix: Some("/new/".into()),
            response_code: 308,
            ..redirect_to("new.example.com")
        },
    ));
    let re = redirect(&r);
    assert_eq!(
        re.path_rewrite_specifier,
        Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
            "/new/".into()
        ))
    );
    assert_eq!(
        re.response_code,
        redirect_action::RedirectResponseCode::PermanentRedirect as i32
    );
    for (code, expected) in [
        (303, redirect_action::RedirectResponseCode::SeeOther),
        (
            307,
            redirect_action::RedirectResponseCode::TemporaryRedirect,
        ),
    ] {
        let r = one(redirect_mapping(
            "moved",
            "/old/",
            Redirect {
                response_code: code,
                ..redirect_to("x.example.com")
            },
        ));
        assert_eq!(redirect(&r).response_code, expected as i32, "{code}");
    }
}

#[test]
fn redirects_make_no_cluster() {
    let resources = run(&config(
        vec![redirect_mapping(
            "moved",
            "/old/",
            redirect_to("new.example.com"),
        )],
        Vec::new(),
    ));
    assert!(resources.clusters.is_empty(), "{:#?}", resources.clusters);
}

// === order ===

fn order(mappings: Vec<Mapping>) -> Vec<String> {
    routes(mappings).into_iter().map(|r| r.name).collect()
}

#[test]
fn higher_precedence_comes_first_whatever_the_prefix() {
    let names = order(vec![
        mapping("long", "/a/very/long/prefix/", "a"),
        Mapping {
            precedence: 10,
            ..mapping("short", "/", "b")
        },
        Mapping {
            precedence: -1,
            ..mapping("negative", "/a/very/long/prefix/and/more/", "c")
        },
    ]);
    assert_eq!(names, ["default/short", "default/long", "default/negative"]);
}

#[test]
fn longer_prefixes_come_first() {
    let names = order(vec![
        mapping("root", "/", "a"),
        mapping("users", "/users/", "b"),
        mapping("admin", "/users/admin/", "c"),
    ]);
    assert_eq!(names, ["default/admin", "default/users", "default/root"]);
}

/// Emissary weighs a regex by its length like a prefix; a regex is not tried before
/// every prefix just for being a regex.
#[test]
fn regexes_are_ordered_by_length_like_prefixes() {
    let names = order(vec![
        Mapping {
            path: PathMatch::Regex("^/u/.*$".into()),
            ..mapping("regex", "/", "a")
        },
        mapping("users", "/u/admins/only/", "b"),
    ]);
    assert_eq!(names, ["default/users", "default/regex"]);
}

#[test]
fn exact_comes_before_prefix_of_the_same_path() {
    let names = order(vec![
        mapping("prefix", "/healthz", "a"),
        Mapping {
            path: PathMatch::Exact("/healthz".into()),
            ..mapping("exact", "/", "b")
        },
    ]);
    assert_eq!(names, ["default/exact", "default/prefix"]);
}

#[test]
fn with_equal_prefixes_more_header_constraints_come_first() {
    let h = |name: &str| KeyValueMatch {
        name: name.into(),
        value: ValueMatch::Exact("yes".into()),
    };
    let names = order(vec![
        mapping("plain", "/api/", "a"),
        Mapping {
            headers: vec![h("x-a")],
            ..mapping("one-header", "/api/", "b")
        },
        Mapping {
            headers: vec![h("x-a"), h("x-b")],
            ..mapping("two-headers", "/api/", "c")
        },
        Mapping {
            method: Some("GET".into()),
            ..mapping("method", "/api/", "d")
        },
        Mapping {
            query_parameters: vec![h("q")],
            ..mapping("query", "/api/", "e")
        },
    ]);
    // Emissary weighs header matches by the length of name and value (the method is a
    // `:method` header): two headers (3+3 each) > `:method GET` (7+3) > one header > a
    // query match (which only counts after headers) > nothing.
    assert_eq!(
        names,
        [
            "default/two-headers",
            "default/method",
            "default/one-header",
            "default/query",
            "default/plain"
        ]
    );
}

#[test]
fn order_does_not_depend_on_input_order() {
    let make = || {
        vec![
            mapping("b", "/same/", "b"),
            mapping("a", "/same/", "a"),
            mapping("c", "/other/", "c"),
        ]
    };
    let forward = order(make());
    let mut reversed = make();
    reversed.reverse();
    // `config()` sorts like the loader; build the Config by hand to skip that.
    let resources = run(&Config {
        mappings: reversed,
        ..Config::default()
    });
    let backward: Vec<String> = default_vhost(&resources, "*")
        .routes
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(forward, backward);
}
