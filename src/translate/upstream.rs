//! A target's [`UpstreamPolicy`] on its Envoy cluster: circuit breakers, outlier detection,
//! the load balancer, TCP keepalive and the upstream protocol options (HTTP/2, idle
//! timeout). Kept apart from `cluster`, which decides discovery and endpoints.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlierDetection, UpstreamConnectionOptions,
    circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpProtocolOptions,
    RoutingPriority, TcpKeepalive,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use prost::Name;

use super::route::duration_ms;
use crate::config::{CircuitBreaker, LbPolicy, OutlierDetection, Priority, Target, UpstreamPolicy};

/// Sets everything `target` asks of its cluster beyond discovery and TLS.
pub(super) fn apply(cluster: &mut Cluster, target: &Target, buffer_limit_bytes: Option<u32>) {
    let policy = &target.policy;
    if !policy.circuit_breakers.is_empty() {
        cluster.circuit_breakers = Some(CircuitBreakers {
            thresholds: policy.circuit_breakers.iter().map(thresholds).collect(),
            ..Default::default()
        });
    }
    cluster.outlier_detection = policy.outlier_detection.as_ref().map(outlier_detection);
    cluster.lb_policy = match policy.lb_policy {
        LbPolicy::RoundRobin => cluster::LbPolicy::RoundRobin,
        LbPolicy::LeastRequest => cluster::LbPolicy::LeastRequest,
        LbPolicy::RingHash => cluster::LbPolicy::RingHash,
        LbPolicy::Maglev => cluster::LbPolicy::Maglev,
    } as i32;
    if let Some(k) = &policy.keepalive {
        cluster.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(TcpKeepalive {
                keepalive_probes: k.probes.map(|value| UInt32Value { value }),
                keepalive_time: k.time_s.map(|value| UInt32Value { value }),
                keepalive_interval: k.interval_s.map(|value| UInt32Value { value }),
            }),
            ..Default::default()
        });
    }
    cluster.per_connection_buffer_limit_bytes =
        buffer_limit_bytes.map(|value| UInt32Value { value });
    if let Some(options) = protocol_options(target.http2, policy) {
        cluster.typed_extension_protocol_options =
            HashMap::from([(HttpProtocolOptions::full_name(), pack_any(options))]);
    }
}

/// HTTP/2 (`grpc: true`) and the idle timeout live in one extension message; Envoy
/// requires it to name the protocol, so an idle timeout alone pins HTTP/1.1, which is what
/// the cluster speaks without it.
fn protocol_options(http2: bool, policy: &UpstreamPolicy) -> Option<HttpProtocolOptions> {
    if !http2 && policy.idle_timeout_ms.is_none() {
        return None;
    }
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    let protocol = if http2 {
        ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())
    } else {
        ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())
    };
    Some(HttpProtocolOptions {
        common_http_protocol_options: policy.idle_timeout_ms.map(|ms| CommonHttpProtocolOptions {
            idle_timeout: Some(duration_ms(ms)),
            ..Default::default()
        }),
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(protocol),
                },
            ),
        ),
        ..Default::default()
    })
}

fn thresholds(b: &CircuitBreaker) -> circuit_breakers::Thresholds {
    let n = |v: Option<u32>| v.map(|value| UInt32Value { value });
    circuit_breakers::Thresholds {
        priority: match b.priority {
            Priority::Default => RoutingPriority::Default,
            Priority::High => RoutingPriority::High,
        } as i32,
        max_connections: n(b.max_connections),
        max_pending_requests: n(b.max_pending_requests),
        max_requests: n(b.max_requests),
        max_retries: n(b.max_retries),
        ..Default::default()
    }
}

fn outlier_detection(o: &OutlierDetection) -> EnvoyOutlierDetection {
    let n = |v: Option<u32>| v.map(|value| UInt32Value { value });
    EnvoyOutlierDetection {
        consecutive_5xx: n(o.consecutive_5xx),
        consecutive_gateway_failure: n(o.consecutive_gateway_failure),
        // Envoy counts gateway failures but ejects on them only at this percentage, whose
        // default is 0: without it the setting a user asked for never ejects a host.
        enforcing_consecutive_gateway_failure: o
            .consecutive_gateway_failure
            .map(|_| UInt32Value { value: 100 }),
        interval: o.interval_ms.map(duration_ms),
        base_ejection_time: o.base_ejection_time_ms.map(duration_ms),
        max_ejection_percent: n(o.max_ejection_percent),
        ..Default::default()
    }
}
