//! AuthService, RateLimitService and gRPC-Web through a real Envoy (issue 7, "Tests that
//! must exist"): an HTTP auth server that denies requests without a header, a gRPC one
//! (envoy-types' Authorization service on tonic), `bypass_auth`, `failure_mode_allow`
//! with the auth server down, a gRPC rate limit service (envoy-types' RateLimitService)
//! answering OVER_LIMIT for one label, `failure_mode_deny` with it down, and a gRPC-Web
//! call to that service.
mod policy_util;
mod util;

use std::sync::{Arc, Mutex};

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt, CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    RateLimitDescriptor, rate_limit_descriptor,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use policy_util::{Gateway, GrpcServer, Reply, Scripted, http_with_body, mapping, resource};
use prost::Message;
use util::Backend;

/// An HTTP auth server: `x-allow: yes` gets 200 and `x-auth-user: alice` for the
/// upstream, anything else 403 with a body of its own.
fn http_auth_server() -> Scripted {
    Scripted::start(|_, request| {
        if request.headers.get("x-allow").map(String::as_str) == Some("yes") {
            Reply {
                headers: vec![("x-auth-user".into(), "alice".into())],
                ..Reply::new(200, "")
            }
        } else {
            Reply::new(403, "denied by the auth server")
        }
    })
}

/// What the rate limit service was asked: (domain, descriptors as key=value lists).
type Asked = Arc<Mutex<Vec<(String, Vec<Vec<(String, String)>>)>>>;

/// Over the limit when any descriptor has the value `over`.
#[derive(Default)]
struct RateLimits {
    asked: Asked,
}

#[tonic::async_trait]
impl RateLimitService for RateLimits {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let request = request.into_inner();
        let descriptors: Vec<Vec<(String, String)>> = request
            .descriptors
            .iter()
            .map(|d| {
                d.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect()
            })
            .collect();
        let over = descriptors.iter().flatten().any(|(_, v)| v == "over");
        self.asked
            .lock()
            .expect("not poisoned")
            .push((request.domain.clone(), descriptors));
        Ok(tonic::Response::new(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            ..Default::default()
        }))
    }
}

/// A gRPC auth server with the HTTP one's rule.
struct Authorize;

#[tonic::async_trait]
impl Authorization for Authorize {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let request = request.into_inner();
        let allowed = request
            .get_client_headers()
            .and_then(|h| h.get("x-allow"))
            .is_some_and(|v| v == "yes");
        let response = if allowed {
            let mut ok = OkHttpResponseBuilder::new();
            ok.add_header("x-auth-user", "grpc-alice", None, false);
            let mut r = CheckResponse::with_status(tonic::Status::ok(""));
            r.set_http_response(ok);
            r
        } else {
            let mut denied = DeniedHttpResponseBuilder::new();
            denied
                .set_http_status(HttpStatusCode::Forbidden)
                .set_body("denied by the gRPC auth server");
            let mut r = CheckResponse::with_status(tonic::Status::permission_denied("no"));
            r.set_http_response(denied);
            r
        };
        Ok(tonic::Response::new(response))
    }
}

#[test]
fn http_auth_bypass_global_rate_limit_and_grpc_web() {
    let auth = http_auth_server();
    let app = Backend::start("app");
    let public = Backend::start("public");
    let limits = RateLimits::default();
    let asked = limits.asked.clone();
    let rls = GrpcServer::start(move || {
        tonic::transport::Server::builder().add_service(RateLimitServiceServer::new(limits))
    });
    let config = [
        resource(
            "getambassador.io/v3alpha1",
            "AuthService",
            "auth",
            &format!(
                "auth_service: {}
proto: http
path_prefix: /extauth
allowed_request_headers: [x-allow]
allowed_authorization_headers: [x-auth-user]",
                auth.addr
            ),
        ),
        resource(
            "getambassador.io/v3alpha1",
            "RateLimitService",
            "rls",
            // Envoy's default timeout is 20 ms, short for a first HTTP/2 connection on a
            // busy test machine (a timed-out call lets the request through).
            &format!(
                "service: {}\nprotocol_version: v3\ntimeout_ms: 5000",
                rls.addr
            ),
        ),
        resource(
            "getambassador.io/v3alpha1",
            "Module",
            "ambassador",
            "config:\n  enable_grpc_web: true",
        ),
        mapping(
            "app",
            &format!(
                "prefix: /app/
service: {}
labels:
  ambassador:
    - app:
        - generic_key:
            value: fine",
                app.addr
            ),
        ),
        mapping(
            "limited",
            &format!(
                "prefix: /limited/
service: {}
labels:
  ambassador:
    - limited:
        - generic_key:
            value: over
        - request_headers:
            header_name: x-user
            key: user",
                app.addr
            ),
        ),
        mapping(
            "public",
            &format!(
                "prefix: /public/\nservice: {}\nbypass_auth: true",
                public.addr
            ),
        ),
        // bypass_auth and CORS on one route: CORS goes on the weighted cluster level.
        mapping(
            "login",
            &format!(
                "prefix: /login/
service: {}
bypass_auth: true
cors:
  origins: https://app.example.com
  methods: POST",
                public.addr
            ),
        ),
        mapping(
            "grpc-web",
            &format!(
                "prefix: /envoy.service.ratelimit.v3.RateLimitService/
rewrite: \"\"
service: {}
grpc: true
bypass_auth: true",
                rls.addr
            ),
        ),
    ]
    .concat();
    let Some(gateway) = Gateway::start(&config, &[]) else {
        return;
    };

    // Denied without the header: the auth server's 403 and body reach the client.
    let denied = gateway.get("/app/orders", &[]);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.body_text(), "denied by the auth server");
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
    // The auth server saw the request under its path prefix.
    let first = auth.seen()[0].clone();
    assert_eq!(first.path, "/extauth/app/orders");

    // Allowed with it, and the auth server's header reaches the upstream.
    let allowed = gateway.get("/app/orders", &[("x-allow", "yes")]);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert!(
        allowed.body_text().contains("x-auth-user: alice"),
        "{}",
        allowed.body_text()
    );

    // bypass_auth: served without asking the auth server.
    let auth_calls = auth.hits();
    let open = gateway.get("/public/page", &[]);
    assert_eq!(open.status, 200, "{open:?}");
    assert_eq!(open.header("x-backend"), Some("public"));
    assert_eq!(auth.hits(), auth_calls, "the auth server was asked");

    // Global rate limit: the label the service refuses gets 429, the others pass, and
    // the service saw the domain and descriptors the labels make.
    let limited = gateway.get("/limited/x", &[("x-allow", "yes"), ("x-user", "bob")]);
    assert_eq!(limited.status, 429, "{limited:?}");
    let fine = gateway.get("/app/x", &[("x-allow", "yes")]);
    assert_eq!(fine.status, 200, "{fine:?}");
    let asked = asked.lock().expect("not poisoned").clone();
    let expect = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    };
    assert!(
        asked.contains(&(
            "ambassador".to_owned(),
            vec![expect(&[("generic_key", "over"), ("user", "bob")])]
        )),
        "{asked:?}"
    );
    assert!(
        asked.contains(&(
            "ambassador".to_owned(),
            vec![expect(&[("generic_key", "fine")])]
        )),
        "{asked:?}"
    );

    // A preflight carries no credentials: CORS answers it before authorization.
    let auth_calls = auth.hits();
    let preflight = gateway.request(
        "OPTIONS",
        "/login/",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
    );
    assert_eq!(preflight.status, 200, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("POST")
    );
    let login = gateway.get("/login/", &[("origin", "https://app.example.com")]);
    assert_eq!(login.status, 200, "{login:?}");
    assert_eq!(
        login.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(auth.hits(), auth_calls, "bypass_auth routes never ask");

    grpc_web_call_through_envoy(&gateway);
}

/// A gRPC-Web call (HTTP/1.1, base64-free `application/grpc-web+proto`) to the rate limit
/// service behind the gateway: Envoy turns it into gRPC over HTTP/2 and back.
fn grpc_web_call_through_envoy(gateway: &Gateway) {
    let request = RateLimitRequest {
        domain: "web".to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![rate_limit_descriptor::Entry {
                key: "generic_key".to_owned(),
                value: "over".to_owned(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let message = request.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&message);
    let response = http_with_body(
        gateway.addr,
        "POST",
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        &body,
    )
    .expect("a gRPC-Web response");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/grpc-web+proto")
    );
    // Frames: the message (flag 0), then the trailers (flag 0x80).
    let mut frames = Vec::new();
    let mut rest = response.body.as_slice();
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = rest.get(5..5 + len).expect("a whole frame");
        frames.push((flag, payload.to_vec()));
        rest = &rest[5 + len..];
    }
    assert_eq!(frames.len(), 2, "{response:?}");
    let answer = RateLimitResponse::decode(frames[0].1.as_slice()).expect("a response");
    assert_eq!(answer.overall_code, Code::OverLimit as i32);
    assert_eq!(frames[1].0, 0x80);
    let trailers = String::from_utf8_lossy(&frames[1].1).to_ascii_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[test]
fn grpc_auth_service_allows_and_denies() {
    let app = Backend::start("app");
    let server = GrpcServer::start(|| {
        tonic::transport::Server::builder().add_service(AuthorizationServer::new(Authorize))
    });
    let config = [
        resource(
            "getambassador.io/v3alpha1",
            "AuthService",
            "auth",
            &format!(
                "auth_service: {}
proto: grpc
protocol_version: v3
allowed_request_headers: [x-allow]",
                server.addr
            ),
        ),
        mapping("app", &format!("prefix: /app/\nservice: {}", app.addr)),
        mapping(
            "open",
            &format!("prefix: /open/\nservice: {}\nbypass_auth: true", app.addr),
        ),
    ]
    .concat();
    let Some(gateway) = Gateway::start(&config, &[]) else {
        return;
    };
    let denied = gateway.get("/app/x", &[]);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.body_text(), "denied by the gRPC auth server");
    let allowed = gateway.get("/app/x", &[("x-allow", "yes")]);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert!(
        allowed.body_text().contains("x-auth-user: grpc-alice"),
        "{}",
        allowed.body_text()
    );
    assert_eq!(gateway.get("/open/x", &[]).status, 200);
}

/// The auth server is down: `failure_mode_allow: true` serves, the default refuses.
#[test]
fn auth_server_down_failure_mode_allow_and_deny() {
    let app = Backend::start("app");
    let refusing = util::RefusingPort::bind();
    let dead = refusing.port();
    let gateway_with = |allow: bool| {
        let config = [
            resource(
                "getambassador.io/v3alpha1",
                "AuthService",
                "auth",
                &format!(
                    "auth_service: 127.0.0.1:{dead}\nproto: http\ntimeout_ms: 500\nfailure_mode_allow: {allow}"
                ),
            ),
            mapping("app", &format!("prefix: /app/\nservice: {}", app.addr)),
        ]
        .concat();
        Gateway::start(&config, &[])
    };
    let Some(allowing) = gateway_with(true) else {
        return;
    };
    let served = allowing.get("/app/x", &[]);
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(served.header("x-backend"), Some("app"));
    drop(allowing);
    let Some(denying) = gateway_with(false) else {
        return;
    };
    let refused = denying.get("/app/x", &[]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// The rate limit service is down: labelled routes are served by default, and refused
/// with 500 under `failure_mode_deny: true`.
#[test]
fn rate_limit_service_down_failure_mode_deny() {
    let app = Backend::start("app");
    let refusing = util::RefusingPort::bind();
    let dead = refusing.port();
    let gateway_with = |deny: bool| {
        let config = [
            resource(
                "getambassador.io/v3alpha1",
                "RateLimitService",
                "rls",
                &format!("service: 127.0.0.1:{dead}\ntimeout_ms: 500\nfailure_mode_deny: {deny}"),
            ),
            mapping(
                "app",
                &format!(
                    "prefix: /app/
service: {}
labels:
  ambassador:
    - app:
        - generic_key:
            value: app",
                    app.addr
                ),
            ),
        ]
        .concat();
        Gateway::start(&config, &[])
    };
    let Some(open) = gateway_with(false) else {
        return;
    };
    let served = open.get("/app/x", &[]);
    assert_eq!(served.status, 200, "{served:?}");
    drop(open);
    let Some(closed) = gateway_with(true) else {
        return;
    };
    let refused = closed.get("/app/x", &[]);
    assert_eq!(refused.status, 500, "{refused:?}");
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
}
