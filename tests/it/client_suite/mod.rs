//! The async client, the same suite on every runtime (tokio, smol, async-std), against our
//! broker (in-process, on the test's runtime) and a real mosquitto, for MQTT 3.1.1 and 5.0.
//!
//! `runtime_suite!` instantiates every case of [`cases`] for one runtime as
//! `client_suite::RUNTIME::{ours,mosquitto}::{v3_1_1,v5}::CASE`, and some over the other
//! transports (`client_suite::RUNTIME::{ws,wss,unix}::{v3_1_1,v5}::CASE`), each run with that runtime's
//! `block_on` under an overall deadline. The cases of [`timeouts`] need no broker and run once
//! per runtime, as `client_suite::RUNTIME::timeouts::CASE`.

mod cases;
pub(crate) mod support;
mod timeouts;

use std::future::Future;
use std::time::{Duration, Instant};

use futures_lite::future;
use mqtt_async::runtime::{BoxFuture, Runtime};

/// How long one test may take in all.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a case with a runtime's `block_on`, failing it if it does not finish in time.
fn run<R: Runtime + Default>(
    block_on: fn(BoxFuture<'static, ()>),
    case: impl Future<Output = ()> + Send + 'static,
) {
    block_on(Box::pin(async move {
        let deadline = Instant::now() + TEST_TIMEOUT;
        let timeout = async move {
            R::default().sleep_until(deadline).await;
            panic!("the test did not finish within {TEST_TIMEOUT:?}");
        };
        future::or(case, timeout).await;
    }));
}

/// Every case, for one runtime, target and version.
macro_rules! cases {
    ($runtime:ty, $block_on:expr, $target:expr, $version:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                crate::client_suite::run::<$runtime>(
                    $block_on,
                    crate::client_suite::cases::$case::<$runtime>($target, $version),
                );
            }
        )*
    };
}

/// Cases that need no broker (their own test servers), once per runtime.
macro_rules! runtime_cases {
    ($runtime:ty, $block_on:expr, $module:ident; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                crate::client_suite::run::<$runtime>(
                    $block_on,
                    crate::client_suite::$module::$case::<$runtime>(),
                );
            }
        )*
    };
}

/// The suite for one runtime: every case against both brokers, in both versions, and the
/// cases without a broker.
macro_rules! runtime_suite {
    ($name:ident, $runtime:ty, $block_on:expr) => {
        mod $name {
            runtime_suite!(@target ours, $runtime, $block_on, crate::client_suite::support::Target::Ours);
            runtime_suite!(@target mosquitto, $runtime, $block_on, crate::client_suite::support::Target::Mosquitto);
            // Our client and broker over the other transports: the cases that cover each kind
            // of traffic (both directions at every QoS, retained, a will after a cut through a
            // proxy, a resumed session).
            runtime_suite!(@transport ws, $runtime, $block_on, crate::client_suite::support::Target::OursWs;
                qos_both_ways, retained, will, session_resume);
            runtime_suite!(@transport wss, $runtime, $block_on, crate::client_suite::support::Target::OursWss;
                qos_both_ways, will, session_resume);
            runtime_suite!(@transport unix, $runtime, $block_on, crate::client_suite::support::Target::OursUnix;
                qos_both_ways, session_resume);
            mod timeouts {
                runtime_cases!($runtime, $block_on, timeouts;
                    connect_to_a_silent_server_times_out_waiting_for_connack,
                    connect_to_a_silent_server_times_out_in_the_tls_handshake,
                    a_silent_server_on_reconnect_times_out_and_the_client_tries_again,
                    qos0_publish_to_a_server_that_stops_reading_fails_with_the_write_timeout,
                    qos1_publish_to_a_server_that_stops_reading_fails_with_the_write_timeout,
                    a_slow_reader_does_not_trip_the_write_timeout,
                );
            }
        }
    };
    (@target $name:ident, $runtime:ty, $block_on:expr, $target:expr) => {
        mod $name {
            runtime_suite!(@version v3_1_1, $runtime, $block_on, $target, mqtt_async::Version::V3_1_1);
            runtime_suite!(@version v5, $runtime, $block_on, $target, mqtt_async::Version::V5);
        }
    };
    (@transport $name:ident, $runtime:ty, $block_on:expr, $target:expr; $($case:ident),*) => {
        mod $name {
            mod v3_1_1 {
                cases!($runtime, $block_on, $target, mqtt_async::Version::V3_1_1; $($case),*);
            }
            mod v5 {
                cases!($runtime, $block_on, $target, mqtt_async::Version::V5; $($case),*);
            }
        }
    };
    (@version $name:ident, $runtime:ty, $block_on:expr, $target:expr, $version:expr) => {
        mod $name {
            cases!($runtime, $block_on, $target, $version;
                qos_both_ways,
                retained,
                will,
                session_resume,
                manual_ack_order,
                slow_consumer_loses_no_qos1,
                restart,
                manual_ack_dropped_message_does_not_stall,
                manual_ack_dropped_message_is_redelivered,
                busy_consumer_keeps_its_connection,
            );
        }
    };
}

runtime_suite!(
    tokio,
    mqtt_tokio::TokioRuntime,
    crate::client_suite::tokio_block_on
);
runtime_suite!(
    smol,
    mqtt_smol::SmolRuntime,
    crate::client_suite::smol_block_on
);
runtime_suite!(
    async_std,
    mqtt_async_std::AsyncStdRuntime,
    crate::client_suite::async_std_block_on
);

/// A multi-threaded tokio runtime of its own per test, as `#[tokio::test(flavor =
/// "multi_thread")]` would make.
fn tokio_block_on(test: BoxFuture<'static, ()>) {
    ::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test);
}

/// smol's `block_on` on the test's thread; background tasks run on smol's global executor.
fn smol_block_on(test: BoxFuture<'static, ()>) {
    ::smol::block_on(test);
}

/// async-std's `block_on` on the test's thread; background tasks run on its global executor.
fn async_std_block_on(test: BoxFuture<'static, ()>) {
    ::async_std::task::block_on(test);
}
