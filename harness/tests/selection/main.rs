//! `Cluster::from_env()`'s selection rules and the errors a user sees when a backend cannot
//! work. These tests change process environment variables, so they run one at a time.

use std::sync::Mutex;
use std::time::Duration;

use kafka_harness::cluster::ClusterError;
use kafka_harness::{BackendKind, Cluster, ClusterConfig};

static ENV: Mutex<()> = Mutex::new(());

fn no_docker() {
    std::env::set_var("DOCKER_HOST", "unix:///nonexistent/docker.sock");
}

#[test]
fn a_forced_backend_wins_over_bootstrap_servers_and_docker() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = ClusterConfig::default().backend(BackendKind::Local);
    c.bootstrap = Some("127.0.0.1:9092".into());
    assert_eq!(c.choose().unwrap().0, BackendKind::Local);
}

#[test]
fn bootstrap_servers_mean_the_external_backend() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let c = ClusterConfig {
        bootstrap: Some("127.0.0.1:9092".into()),
        ..ClusterConfig::default()
    };
    let (kind, why) = c.choose().unwrap();
    assert_eq!(kind, BackendKind::External);
    assert!(why.contains("KAFKA_HARNESS_BOOTSTRAP"), "{why}");
}

#[test]
fn an_unknown_backend_name_is_one_clear_error() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    std::env::set_var("KAFKA_HARNESS_BACKEND", "kafka-in-the-cloud");
    let err = ClusterConfig::from_env().unwrap_err();
    std::env::remove_var("KAFKA_HARNESS_BACKEND");
    assert!(matches!(err, ClusterError::UnknownBackend { .. }));
    assert!(
        err.to_string()
            .contains("containers, local, external, embedded"),
        "{err}"
    );
}

#[test]
fn without_docker_the_jars_choose_local_and_without_either_the_embedded_default() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let saved = std::env::var_os("DOCKER_HOST");
    no_docker();
    let empty = tempfile::tempdir().unwrap();
    let bare = ClusterConfig {
        kafka_libs: empty.path().to_path_buf(),
        ..ClusterConfig::default()
    };
    let (kind, why) = bare.choose().unwrap();
    assert_eq!(kind, BackendKind::Embedded);
    assert!(
        why.contains("no Docker") && why.contains("no local Kafka jars"),
        "{why}"
    );
    // With the jars ci/setup fetched (when this machine has them), local is chosen.
    let jars = ClusterConfig::default();
    if kafka_harness::cluster::local_available(&jars.kafka_libs).is_ok() {
        assert_eq!(jars.choose().unwrap().0, BackendKind::Local);
    } else {
        eprintln!(
            "no Kafka jars at {}: the local half of this rule was not exercised",
            jars.kafka_libs.display()
        );
    }
    match saved {
        Some(v) => std::env::set_var("DOCKER_HOST", v),
        None => std::env::remove_var("DOCKER_HOST"),
    }
    // And where a Docker engine answers, containers are chosen.
    if kafka_harness::cluster::docker_available().is_ok() {
        assert_eq!(
            ClusterConfig::default().choose().unwrap().0,
            BackendKind::Containers
        );
    }
}

#[test]
fn a_forced_containers_backend_without_docker_is_a_clear_error_not_a_panic() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let saved = std::env::var_os("DOCKER_HOST");
    no_docker();
    let err =
        Cluster::start(ClusterConfig::default().backend(BackendKind::Containers)).unwrap_err();
    match saved {
        Some(v) => std::env::set_var("DOCKER_HOST", v),
        None => std::env::remove_var("DOCKER_HOST"),
    }
    assert!(matches!(err, ClusterError::NoDocker { .. }), "{err:?}");
    assert!(err.to_string().contains("needs a Docker engine"), "{err}");
}

#[test]
fn unreachable_bootstrap_servers_are_a_clear_error_within_the_timeout() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let c = ClusterConfig {
        bootstrap: Some("127.0.0.1:1".into()),
        ready_timeout: Duration::from_secs(3),
        ..ClusterConfig::default()
    };
    let started = std::time::Instant::now();
    let err = Cluster::start(c).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(matches!(err, ClusterError::NotReady { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    let bad = ClusterConfig {
        bootstrap: Some("not-a-host-port".into()),
        ..ClusterConfig::default()
    };
    assert!(matches!(
        Cluster::start(bad).unwrap_err(),
        ClusterError::NoBootstrap
    ));
}

#[test]
fn the_harness_refuses_to_touch_topics_and_groups_outside_its_prefix() {
    let c = Cluster::start(ClusterConfig::default().backend(BackendKind::Embedded)).unwrap();
    let err = c.delete_topics(&["orders"]).unwrap_err();
    assert!(matches!(err, ClusterError::OutsidePrefix { .. }), "{err:?}");
    assert!(c.delete_groups(&["payments-service"]).is_err());
    assert!(c.create_topic("orders", 1).is_err());
    assert!(c.create_topic(&c.topic_name("orders"), 1).is_ok());
}
