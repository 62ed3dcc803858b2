//! An AWS SDK client built at its first use, not when the adapter is: a function builds only the
//! clients its requests reach (no KMS client in `fetch` unless it signs, no S3 client in `token`), and
//! none before its first poll. Each build is recorded in the App's `SdkClients` (tests read it).

use std::sync::{Arc, Mutex, OnceLock};

/// The SDK clients an App has built so far, by service name, in build order.
#[derive(Clone, Debug, Default)]
pub struct SdkClients(Arc<Mutex<Vec<&'static str>>>);

impl SdkClients {
    pub fn built(&self) -> Vec<&'static str> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, service: &'static str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(service);
    }
}

/// A client built once, on first dereference.
pub struct LazyClient<T> {
    client: OnceLock<T>,
    build: Box<dyn Fn() -> T + Send + Sync>,
}

impl<T> LazyClient<T> {
    /// `build` runs at the first use, once; it is recorded in `log` as `service`.
    pub fn new(service: &'static str, log: SdkClients, build: impl Fn() -> T + Send + Sync + 'static) -> Self {
        LazyClient {
            client: OnceLock::new(),
            build: Box::new(move || {
                log.record(service);
                build()
            }),
        }
    }
}

/// A client already built (tests, operator commands).
impl<T: Send + Sync + 'static> From<T> for LazyClient<T> {
    fn from(client: T) -> Self {
        LazyClient { client: OnceLock::from(client), build: Box::new(|| unreachable!("built already")) }
    }
}

impl<T> std::ops::Deref for LazyClient<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.client.get_or_init(|| (self.build)())
    }
}
